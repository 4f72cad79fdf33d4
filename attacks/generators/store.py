"""Saving and loading fedleak DCGAN priors.

A checkpoint holds only tensors and plain values, so it loads with
`torch.load(weights_only=True)` (no pickled code runs); a JSON sidecar next to it records
the command, seed, data split and quality figures that produced it. Priors that ship with the
package are addressed by dataset name ("digits")."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from fedleak.attacks.generators.dcgan import DCGANConfig, DCGANGenerator
from fedleak.core.errors import ConfigError, UnreadableFileError
from fedleak.core.io import load_tensors, read_json, save_tensors, write_json

FORMAT = "fedleak-dcgan-prior/1"
WEIGHTS = Path(__file__).resolve().parent / "weights"
SHIPPED = {"digits": WEIGHTS / "prior_digits.pt"}


def sidecar_path(path: Path) -> Path:
    return Path(path).with_suffix(".json")


def save_prior(generator: DCGANGenerator, path: str | Path, metadata: dict) -> Path:
    path = Path(path)
    state = {k: v.detach().cpu().clone() for k, v in generator.state_dict().items()}
    save_tensors(path, {"format": FORMAT, "config": generator.config.to_dict(), "state_dict": state})
    write_json(sidecar_path(path), {"format": FORMAT, **metadata}, indent=2)
    return path


def resolve_prior_path(spec: str | Path) -> Path:
    if str(spec) in SHIPPED:
        return SHIPPED[str(spec)]
    path = Path(spec).expanduser()
    if not path.is_file():
        raise ConfigError(f"prior '{spec}': no such file and not a shipped prior ({', '.join(SHIPPED)})")
    return path


def load_prior(spec: str | Path) -> DCGANGenerator:
    """A shipped prior by dataset name, or a checkpoint written by `fedleak prior train`.
    Frozen; shared between callers, so do not modify it."""
    return _load(resolve_prior_path(spec))


@lru_cache(maxsize=8)
def _load(path: Path) -> DCGANGenerator:
    try:
        blob = load_tensors(path, "checkpoint", map_location="cpu")
    except UnreadableFileError as e:  # a prior is named by an option: the config's error, as before
        raise ConfigError(f"prior {e}") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ConfigError(f"prior {path}: not a fedleak prior checkpoint (format {FORMAT})")
    try:
        generator = DCGANGenerator(DCGANConfig(**blob["config"]))
        generator.load_state_dict(blob["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:  # a foreign config or state: one line
        raise ConfigError(f"prior {path}: config or weights do not fit a DCGAN prior ({type(e).__name__}: "
                          f"{str(e).strip().splitlines()[0] if str(e).strip() else ''})") from None
    return generator.freeze()


def prior_metadata(spec: str | Path) -> dict:
    side = sidecar_path(resolve_prior_path(spec))
    return read_json(side, "prior sidecar") if side.is_file() else {}
