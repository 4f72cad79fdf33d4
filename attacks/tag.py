"""TAG-style optimisation attack on a causal LM's gradient (Deng et al., "TAG: Gradient Attack on
Transformer-based Language Models", Findings of EMNLP 2021; the continuous-relaxation view of LAMP,
Balunović et al., NeurIPS 2022, Sec. 4.1).

The attacker optimises a relaxed batch: per position a distribution softmax(Z) over the vocabulary,
whose expected embedding softmax(Z) @ wte is the model's input and whose next position's distribution
is the soft target of the next-token loss (in a causal LM the labels are the inputs shifted). The
objective matches the replayed gradient of the shared parameters to the observed one, cosine distance
plus `l2_weight` x the squared L2 distance relative to the observed norm (LAMP's and TAG's two
terms); Adam on Z, then every position is projected to its most likely token. The sequence length is
public (the protocol's padding), B is the observation's `num_examples`. Only FedSGD gradients: a
FedAvg update would need its local steps replayed.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from fedleak.attacks.text_base import TEXT_ATTACKS, TextAttack, TextReconstruction, transformer_of
from fedleak.core.components import GRADIENT
from fedleak.core.errors import ConfigError
from fedleak.core.options import check_integer, check_number


@dataclass(frozen=True)
class TagOptions:
    iterations: int = 300
    lr: float = 0.1
    l2_weight: float = 1.0
    init_scale: float = 0.1

    def __post_init__(self):
        check_integer("iterations", self.iterations, low=1)
        for key in ("lr", "init_scale"):
            check_number(key, getattr(self, key), low=0, low_open=True)
        check_number("l2_weight", self.l2_weight, low=0)


def soft_lm_loss(model, probs: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of a relaxed batch (B, L, V): inputs softmax(Z) @ wte, targets softmax(Z) shifted."""
    wte = transformer_of(model).wte.weight
    logits = model(inputs_embeds=probs @ wte).logits
    logp = torch.log_softmax(logits[:, :-1], dim=-1)
    return -(probs[:, 1:] * logp).sum(-1).mean()


@TEXT_ATTACKS.register
class Tag(TextAttack):
    name = "tag"
    options_class = TagOptions
    applies_to = (GRADIENT,)

    def reconstruct(self, observation, model, seq_len, seed=0):
        self.check_observation(observation)
        o = self.options
        named = dict(model.named_parameters())
        missing = [n for n in observation.param_names if n not in named]
        if missing:
            raise ConfigError(f"attack 'tag': the shared parameter '{missing[0]}' is not in the model it was given")
        params = [named[n] for n in observation.param_names]
        target = [t.detach().to(params[0].dtype) for t in observation.update]
        target_norm2 = sum((t * t).sum() for t in target)
        vocab = transformer_of(model).wte.weight.shape[0]
        g = torch.Generator().manual_seed(seed)
        z = (torch.randn(observation.num_examples, seq_len, vocab, generator=g) * o.init_scale).requires_grad_(True)
        opt = torch.optim.Adam([z], lr=o.lr)
        trace = []
        for _ in range(o.iterations):
            grads = torch.autograd.grad(soft_lm_loss(model, torch.softmax(z, -1)), params, create_graph=True)
            dot = sum((a * b).sum() for a, b in zip(grads, target))
            norm2 = sum((a * a).sum() for a in grads)
            cos = 1 - dot / (norm2.sqrt() * target_norm2.sqrt()).clamp_min(1e-30)
            l2 = (norm2 - 2 * dot + target_norm2) / target_norm2.clamp_min(1e-30)
            loss = cos + o.l2_weight * l2
            opt.zero_grad()
            loss.backward()
            opt.step()
            trace.append(float(loss.detach()))
        return TextReconstruction(z.detach().argmax(-1), {"loss_trace": trace, "final_loss": trace[-1]})
