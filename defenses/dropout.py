"""Dropout as a defense: the client computes its update with dropout active, so what it shares
comes from a randomly thinned copy of the global model that the server never sees.

This is the setting examined by Scheliga, Mäder and Seeland, "Dropout is NOT all you need to
prevent gradient leakage" (AAAI 2023), §3: the client trains in train mode with dropout rate p;
an attacker who inverts the update with the plain (eval-mode) model mismatches the client's
network, which is why Inverting Gradients fails against it (the paper's motivation, §1) and why
its Dropout Inversion Attack (`attacks/dia.py`) optimises the unknown masks as well.

The dropout rate is part of the training recipe the server hands out, so it is published in
`Observation.public["dropout"]`; the masks are not. They are kept on the defense only as the
ground truth of an oracle attacker (knowledge flag `dropout_masks`, the paper's WIIG).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from fedleak.core.errors import ConfigError
from fedleak.core.options import check_integer, check_number
from fedleak.defenses import seeding
from fedleak.defenses.base import Defense, ShareContext
from fedleak.models.architectures import dropout_layers


@dataclass(frozen=True)
class DropoutOptions:
    p: float = 0.5
    noise_seed: int = 0

    def __post_init__(self):
        check_number("p", self.p, low=0.0, high=1.0, high_open=True)
        check_integer("noise_seed", self.noise_seed, low=0)


class DropoutDefense(Defense):
    """Client-side dropout at rate `p` on every `MaskDropout` of the model (mlp, vit).

    Masks are the client's PRIVATE randomness (`defenses/seeding.py`): a CPU stream mixed from
    the secret `noise_seed` and a count of prepared client models, never published, so runs are
    reproducible, identical on any device, and leave the global RNG alone.

    `client_masks` holds the masks of the update most recently passed to `share`: one list per
    forward pass of the client (one for FedSGD, one per local step for FedAvg), each with one
    0/1 tensor per dropout layer in module order, shaped like that layer's activation."""
    name = "dropout"
    options_class = DropoutOptions

    def __init__(self, options: DropoutOptions | None = None, **values):
        super().__init__(options, **values)
        self._prepared = 0
        self._pending: list[list[torch.Tensor | None]] = []
        self.client_masks: list[list[torch.Tensor]] | None = None

    @property
    def p(self) -> float:
        return self.options.p

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        if not dropout_layers(model):
            name = getattr(model, "fedleak_name", type(model).__name__)
            raise ConfigError(f"defense 'dropout': model '{name}' has no dropout layers; use a model with dropout (mlp, vit)")
        # A copy, so that the attacker (who receives the global model) never runs the client's hooks.
        client = copy.deepcopy(model)
        layers = dropout_layers(client)
        for layer in layers:
            layer.p = self.p
            layer.clear_mask()
        stream = seeding.generator("dropout", self.options.noise_seed, self._prepared)
        self._prepared += 1
        self._pending = []

        def new_pass(module, args):
            self._pending.append([None] * len(layers))

        def draw(index, layer, args):
            x = args[0]
            if not self._pending or self._pending[-1][index] is not None:
                raise ConfigError("defense 'dropout': a dropout layer ran twice in one forward pass; masks cannot be recorded")
            mask = torch.bernoulli(torch.full(x.shape, 1.0 - layer.p), generator=stream).to(x)
            # Applying the drawn mask through "given" mode makes the record exactly what was used.
            layer.set_mask(mask)
            self._pending[-1][index] = mask

        client.register_forward_pre_hook(new_pass)
        for i, layer in enumerate(layers):
            layer.register_forward_pre_hook(lambda module, args, i=i: draw(i, module, args))
        return client.train()

    def share(self, update: list[torch.Tensor], context: ShareContext) -> tuple[list[torch.Tensor], dict]:
        # Masks are handed over per shared update, so a long federated training keeps only one client's.
        self.client_masks = [list(masks) for masks in self._pending]
        self._pending = []
        sent, _ = super().share(update, context)
        return sent, {"dropout": self.p}


def recorded_masks(defense) -> list[list[torch.Tensor]]:
    """The masks the client drew for the update it just shared (oracle knowledge)."""
    masks = getattr(defense, "client_masks", None)
    if masks is None:
        raise ConfigError("knowledge flag 'dropout_masks' needs the 'dropout' defense after a client update; no masks were recorded")
    return masks
