"""The defense interface: how a client shapes what it shares, and what an attacker who knows
the defense can simulate of it.

Data path: the threat model computes the client's true update, `Defense.share` turns it into
what is sent (and the public metadata the server needs, e.g. a sketch seed), and an adaptive
attack passes each trial update through `Defense.simulate` before comparing it with what was
observed. Defenses that act inside local training (per-example DP-SGD) return a `gradient_fn`;
defenses that change the model (dropout) override `prepare_model`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import torch

from fedleak.core.components import GRADIENT, KINDS, UPDATE, Component, NoOptions
from fedleak.core.errors import ConfigError

if TYPE_CHECKING:  # a runtime import would be circular when `defenses` is imported first
    from fedleak.models.functional import GradientFn


@dataclass(frozen=True)
class ShareContext:
    param_names: list[str]
    num_examples: int
    client_id: int
    round: int
    seed: int  # per-round seed shared by client and server (sketch matrices, quantiser levels)


@dataclass
class ReceivedModel:
    """What a client holds before it trains: the model the server sent this round, the model its
    own code prescribes, the global model it kept from the round before, and its own batch."""
    model: torch.nn.Module                    # the architecture it was sent
    params: dict[str, torch.Tensor]
    buffers: dict[str, torch.Tensor]
    prescribed: torch.nn.Module               # the architecture the client's code defines
    # last round's (params, buffers); None in round 0
    previous: Callable[[], tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]] | None]
    images: torch.Tensor | None = None        # the client's batch, normalised


@dataclass(frozen=True)
class ModelVerdict:
    """A client-side model check's finding. A model the client refuses is not trained on: the
    client sends a zero update (it drops out of the round)."""
    flagged: bool
    reasons: tuple[str, ...] = field(default_factory=tuple)
    refuse: bool = False

    def as_public(self) -> dict[str, Any]:
        """The record the server sees: a client that refuses a round is visible to it."""
        return {"flagged": self.flagged, "refused": self.refuse, "reasons": list(self.reasons)}


class Defense(Component):
    """Options: a frozen dataclass `options_class` (or, for a plugin written the plain way, the
    keyword arguments of `__init__`), parsed and checked before the defense exists
    (core.components). `applies_to`: the observation kinds the defense shapes; under a threat
    model that shares any other kind it is refused (runner) or skipped and listed (matrix)."""
    name = "none"
    section = "defense"
    applies_to: tuple[str, ...] = (GRADIENT, UPDATE)
    # True for a defense that sends the update as it is (none; hyperfl, where the protocol is the
    # protection): an adaptive attacker has nothing more to know, so a matrix attacks it in one mode
    passthrough: bool = False
    # What a DP guarantee protects, for the accountant (`privacy`): "user" (one mechanism per round on
    # the whole update), "example" (one per local step, as DP-SGD); None: the defense claims no DP.
    privacy_unit: str | None = None

    def share(self, update: list[torch.Tensor], context: ShareContext) -> tuple[list[torch.Tensor], dict[str, Any]]:
        """The tensors the client sends and the metadata the server legitimately receives."""
        return [u.detach().clone() for u in update], {}

    def simulate(self, trial: list[torch.Tensor], observation: Any) -> list[torch.Tensor]:
        """Differentiable stand-in for `share` used inside the adaptive attack's objective:
        maps a trial update into the space of `observation.shared`."""
        return trial

    def decode(self, shared: list[torch.Tensor], public: dict[str, Any]) -> list[torch.Tensor]:
        """The server's estimate of the update from what was sent (e.g. de-sketching with Rᵀ)."""
        return shared

    def gradient_fn(self) -> GradientFn | None:
        """Replacement for the plain mini-batch gradient inside local training, or None."""
        return None

    def replay_gradient_fn(self) -> GradientFn | None:
        """The attacker's noiseless, differentiable (in x) model of `gradient_fn`, used by the
        threat model's replay when the attacker knows the defense (e.g. per-example clipping of
        a trial batch under DP-SGD); None when the plain gradient is the right model."""
        return None

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """Model as the client trains it (e.g. with dropout switched on)."""
        return model

    def check_model(self, received: ReceivedModel) -> ModelVerdict | None:
        """The client's inspection of the model it received, before it trains; None: no check."""
        return None

    def bytes_sent(self, update: list[torch.Tensor]) -> int:
        """Upload size of one client per round, assuming float32 dense tensors unless overridden."""
        return 4 * sum(t.numel() for t in update)

    def privacy(self, steps: int, sampling_rate: float) -> dict[str, Any] | None:
        """{"epsilon": ..., "delta": ...} from a standard accountant, where the defense is DP."""
        return None

    # --- vertical FL (threat_models/vfl.py): what a defense may change about the parties' messages ---
    def embedding_width(self, width: int) -> int:
        """The width of each party's message, given the protocol's `embedding_width`."""
        return width

    def codec(self, width: int) -> torch.nn.Module | None:
        """A module on each party's bottom output (a hash code, e.g.), trained with the victim; None:
        the message is the embedding itself."""
        return None

    def training_loss(self, sent: list[torch.Tensor], labels: torch.Tensor, num_classes: int) -> torch.Tensor | None:
        """A term added to the VFL victim's training loss (e.g. hashing's code consistency); None: none."""
        return None


def share_update(defense: Defense, update: list[torch.Tensor], context: ShareContext) -> tuple[list[torch.Tensor], dict[str, Any]]:
    """`defense.share`, checked: a plugin that returns anything but (shared tensors, public dict)
    is named in one line here, not found later as a bare unpacking error in a threat model."""
    result = defense.share(update, context)
    where = f"defense '{defense.name}' ({type(defense).__module__}.{type(defense).__qualname__})"
    if (isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], (list, tuple))
            and all(isinstance(t, torch.Tensor) for t in result[0]) and isinstance(result[1], dict)):
        _check_shapes(where, update, *result, defense)
        return result
    got = type(result).__name__ if not isinstance(result, tuple) else f"a tuple of {len(result)}: " + ", ".join(
        type(v).__name__ for v in result)
    raise ConfigError(f"{where}: share() must return (shared, public), the list of tensors the client sends and a dict "
                      f"of public metadata; it returned {got}")


def _check_shapes(where: str, update: list[torch.Tensor], sent: list[torch.Tensor], public: dict[str, Any],
                  defense: Defense) -> None:
    """One tensor per parameter, each of its shape: as sent, or as the server decodes it (a sketch
    sends other shapes, and its decode() gives them back). Otherwise the attack would pair the wrong
    tensors, or silently fewer of them (zip), deep inside the objective. One exception: a different
    number of tensors holding exactly the update's number of entries is a repacking (one rotated or
    permuted vector, say), a representation only an attack that replays `share` can read, not a slip."""
    expected = [tuple(u.shape) for u in update]
    if [tuple(t.shape) for t in sent] == expected:
        return
    decoded = defense.decode(list(sent), public)
    got = [tuple(t.shape) for t in decoded]
    repacked = len(decoded) != len(update) and sum(t.numel() for t in decoded) == sum(u.numel() for u in update)
    if got != expected and not repacked:
        def shown(shapes: list[tuple[int, ...]]) -> str:
            return ", ".join(map(str, shapes[:4])) + (f" ... ({len(shapes)} tensors)" if len(shapes) > 4 else "")
        raise ConfigError(f"{where}: share() must send one tensor per parameter, of the update's shapes (or ones its "
                          f"decode() maps back to them): expected {len(expected)} tensors {shown(expected)}, "
                          f"got {len(got)} {shown(got)}")


class NoDefense(Defense):
    name = "none"
    options_class = NoOptions
    applies_to = KINDS
    passthrough = True
