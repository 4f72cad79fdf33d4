"""Federated fine-tuning of the text victim (models.text): what one client shares.

* `text-fedsgd`: the gradient of the mean next-token loss of its batch of B sequences, every
  parameter (full fine-tuning).
* `text-lora`: LoRA adapters (peft) on the attention projections (`c_attn`; BERT's query, key, value),
  the base model frozen;
  the client shares the adapters' gradient only (kind "gradient"), as DP-LoRA-style systems do.
  Round 0 of standard LoRA has B = 0 (peft's init), so the A gradient is zero and only the B
  gradient carries the batch; `adapter_scale` > 0 draws B ~ N(0, scale^2) to stand for a later round.
* `text-fedavg`: `steps` local SGD steps (lr `lr`) on the whole batch, every parameter; shares
  θ_K − θ_0 (kind "update").

`observe` runs the client's round and the defense's `share` (defenses.base.share_update, so the
update-level defenses dp, prune, quantize, sketch apply unchanged) and returns an Observation whose
`global_params` are the client model's parameters as the server sent them (the attacker's white box).
"""
from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass

import torch

from fedleak.core.components import GRADIENT, UPDATE, Component, NoOptions
from fedleak.core.errors import ConfigError
from fedleak.core.options import check_integer, check_number
from fedleak.core.registry import Registry
from fedleak.defenses.base import Defense, ShareContext, share_update
from fedleak.models.text import is_encoder, text_loss
from fedleak.threat_models.observation import Observation

TEXT_THREAT_MODELS: Registry[type] = Registry("text threat model")


class TextThreatModel(Component):
    section = "threat_model"
    kind = GRADIENT

    def client_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model the client trains (a copy; LoRA wraps it with adapters)."""
        return copy.deepcopy(model)

    def trainable(self, model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
        return [(n, p) for n, p in model.named_parameters() if p.requires_grad]

    def client_update(self, model: torch.nn.Module, ids: torch.Tensor, labels: torch.Tensor | None = None) -> list[torch.Tensor]:
        params = [p for _, p in self.trainable(model)]
        return [g.detach() for g in torch.autograd.grad(text_loss(model, ids, labels), params)]

    def observe(self, model: torch.nn.Module, ids: torch.Tensor, defense: Defense, seed: int = 0,
                client_id: int = 0, round: int = 0, labels: torch.Tensor | None = None) -> tuple[Observation, torch.nn.Module]:
        """(what the server holds, the client model it sent: the attacker's white box). `labels`: the
        classifier's (B,) labels (models.text.text_loss), None for the LM."""
        if ids.dim() != 2:
            raise ConfigError(f"text batch: expected (B, L) token ids, got shape {tuple(ids.shape)}")
        client = self.client_model(model)
        names = [n for n, _ in self.trainable(client)]
        sent = {n: p.detach().clone() for n, p in client.named_parameters()}
        update = self.client_update(client, ids, labels)
        context = ShareContext(names, ids.shape[0], client_id, round, seed)
        shared, public = share_update(defense, update, context)
        public = {**public, "bytes_sent": defense.bytes_sent(shared)}
        obs = Observation(self.name, self.kind, shared, names, sent, {}, ids.shape[0], client_id, round, public,
                          defense.decode(shared, public), seed)
        obs.public["seq_len"] = ids.shape[1]
        return obs, client


@TEXT_THREAT_MODELS.register
class TextFedSGD(TextThreatModel):
    name = "text-fedsgd"
    options_class = NoOptions


@dataclass(frozen=True)
class LoRAOptions:
    rank: int = 64
    alpha: float = 64.0
    adapter_scale: float = 0.0   # std of B's entries; 0: peft's round-0 init (B = 0)
    seed: int = 0

    def __post_init__(self):
        check_integer("rank", self.rank, low=1)
        check_number("adapter_scale", self.adapter_scale, low=0)


@TEXT_THREAT_MODELS.register
class TextLoRA(TextThreatModel):
    name = "text-lora"
    options_class = LoRAOptions

    def client_model(self, model):
        from peft import LoraConfig, get_peft_model
        o = self.options
        torch.manual_seed(o.seed)  # A's init: the server's (public) adapter initialisation
        # BERT's attention projections are three nn.Linear (query, key, value), GPT-2's one Conv1D
        targets = dict(target_modules=["query", "key", "value"]) if is_encoder(model) else \
            dict(target_modules=["c_attn"], fan_in_fan_out=True)
        config = LoraConfig(r=o.rank, lora_alpha=o.alpha, lora_dropout=0.0, bias="none", **targets)
        with warnings.catch_warnings():
            # peft asks transformers' deprecated is_gradient_checkpointing; one FutureWarning per cell of a
            # matrix buried its progress lines, and the call's behaviour is not in question
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            peft_model = get_peft_model(copy.deepcopy(model), config)
        if o.adapter_scale > 0:
            g = torch.Generator().manual_seed(o.seed + 1)
            with torch.no_grad():
                for n, p in peft_model.named_parameters():
                    if "lora_B" in n:
                        p.copy_(torch.randn(p.shape, generator=g) * o.adapter_scale)
        return peft_model.eval()


@dataclass(frozen=True)
class FedAvgTextOptions:
    steps: int = 3
    lr: float = 1e-3

    def __post_init__(self):
        check_integer("steps", self.steps, low=1)
        check_number("lr", self.lr, low=0, low_open=True)


@TEXT_THREAT_MODELS.register
class TextFedAvg(TextThreatModel):
    name = "text-fedavg"
    kind = UPDATE
    options_class = FedAvgTextOptions

    def client_update(self, model, ids, labels=None):
        params = [p for _, p in self.trainable(model)]
        start = [p.detach().clone() for p in params]
        for _ in range(self.options.steps):
            grads = torch.autograd.grad(text_loss(model, ids, labels), params)
            with torch.no_grad():
                for p, g in zip(params, grads):
                    p -= self.options.lr * g
        with torch.no_grad():
            delta = [p.detach() - s for p, s in zip(params, start)]
            for p, s in zip(params, start):  # the client model is the attacker's white box: as sent
                p.copy_(s)
        return delta


def build_text_threat_model(name: str, **options) -> TextThreatModel:
    cls = TEXT_THREAT_MODELS.get(name)
    return cls.from_options(options, "threat_model.options")
