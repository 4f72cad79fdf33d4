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
    # LAMP's discrete steps (Balunović et al. 2022, Sec. 4.2): every `lamp_every` iterations (0: never) each
    # sequence's projection tries `lamp_candidates` token swaps and moves, keeping the one with the smallest
    # gradient distance + `lm_weight` x the shipped LM's own next-token loss (its perplexity prior)
    lamp_every: int = 0
    lamp_candidates: int = 24
    lm_weight: float = 0.2

    def __post_init__(self):
        check_integer("iterations", self.iterations, low=1)
        check_integer("lamp_every", self.lamp_every, low=0)
        check_integer("lamp_candidates", self.lamp_candidates, low=1)
        check_number("lm_weight", self.lm_weight, low=0)
        for key in ("lr", "init_scale"):
            check_number(key, getattr(self, key), low=0, low_open=True)
        check_number("l2_weight", self.l2_weight, low=0)


@dataclass(frozen=True)
class LampOptions(TagOptions):
    lamp_every: int = 50


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

    adaptive = True

    def reconstruct(self, observation, model, seq_len, seed=0, defense=None):
        """`defense`: the client's defense (adaptive mode): the trial gradient goes through its own `share`
        (attacks/defense_replay.py: a deep copy with the client's pipeline, BPDA where `share` is not
        differentiable, the attacker's own private draws) and is compared with what the client sent, as the
        image defense-loop attack does; without it, with the server's decoding of what was sent."""
        self.check_observation(observation)
        from fedleak.models.text import is_encoder
        if is_encoder(model):  # its relaxation is the causal LM's (soft inputs are their own shifted targets)
            raise ConfigError(f"attack '{self.name}': runs on the causal LM (model = \"gpt2\") only, not on the BERT classifier")
        o = self.options
        named = dict(model.named_parameters())
        missing = [n for n in observation.param_names if n not in named]
        if missing:
            raise ConfigError(f"attack 'tag': the shared parameter '{missing[0]}' is not in the model it was given")
        params = [named[n] for n in observation.param_names]
        vocab = transformer_of(model).wte.weight.shape[0]
        replay, extras = None, {}
        if defense is not None and defense.name != "none":
            replay = _replay(defense, observation, model, params, seq_len, vocab, seed)
            extras = {"defense_replay": replay.path, "defense_replay_note": str(replay.notes.get("fallback", ""))}
        target = [t.detach().to(params[0].dtype) for t in (replay.target if replay is not None else observation.update)]
        target_norm2 = sum((t * t).sum() for t in target)
        g = torch.Generator().manual_seed(seed)
        z = (torch.randn(observation.num_examples, seq_len, vocab, generator=g) * o.init_scale).requires_grad_(True)
        opt = torch.optim.Adam([z], lr=o.lr)
        trace = []

        def distance(grads):
            if replay is not None:
                grads = [s.to(params[0].dtype) for s in replay(list(grads))]
            dot = sum((a * b).sum() for a, b in zip(grads, target))
            norm2 = sum((a * a).sum() for a in grads)
            cos = 1 - dot / (norm2.sqrt() * target_norm2.sqrt()).clamp_min(1e-30)
            l2 = (norm2 - 2 * dot + target_norm2) / target_norm2.clamp_min(1e-30)
            return cos + o.l2_weight * l2

        swaps = 0
        for step in range(o.iterations):
            loss = distance(torch.autograd.grad(soft_lm_loss(model, torch.softmax(z, -1)), params, create_graph=True))
            opt.zero_grad()
            loss.backward()
            opt.step()
            trace.append(float(loss.detach()))
            if o.lamp_every and (step + 1) % o.lamp_every == 0 and step + 1 < o.iterations:
                swaps += self._discrete_step(model, params, z, distance, g)
        extras = {**extras, "discrete_changes": swaps} if o.lamp_every else extras
        return TextReconstruction(z.detach().argmax(-1), {"loss_trace": trace, "final_loss": trace[-1], **extras})

    def _discrete_step(self, model, params, z, distance, g) -> int:
        """LAMP's discrete step on the projection of z: per sequence, random swaps of two tokens and moves of one
        token to another position, scored by the gradient distance of the hard batch + lm_weight x the LM's loss
        on that sequence; the best reorders the sequence's relaxed rows of z the same way. Returns how many changed."""
        from fedleak.models.text import lm_loss
        o = self.options
        ids = z.detach().argmax(-1)
        B, L = ids.shape

        def score(batch, b):
            with torch.enable_grad():
                grads = torch.autograd.grad(lm_loss(model, batch), params)
            with torch.no_grad():
                prior = lm_loss(model, batch[b:b + 1])
            return float(distance([t.detach() for t in grads]).detach()) + o.lm_weight * float(prior)

        changed = 0
        for b in range(B):
            best, best_score = torch.arange(L), score(ids, b)
            for _ in range(o.lamp_candidates):
                i, j = torch.randint(0, L, (2,), generator=g).tolist()
                if i == j:
                    continue
                order = torch.arange(L)
                if torch.rand(1, generator=g).item() < 0.5:
                    order[i], order[j] = j, i                            # swap two tokens
                else:
                    rest = torch.cat([order[:i], order[i + 1:]])          # move the token at i to j
                    order = torch.cat([rest[:j], torch.tensor([i]), rest[j:]])
                trial = ids.clone()
                trial[b] = ids[b, order]
                value = score(trial, b)
                if value < best_score:
                    best, best_score = order, value
            if not torch.equal(best, torch.arange(L)):
                changed += 1
                with torch.no_grad():  # the relaxed rows move with their tokens (LAMP moves the embeddings)
                    z[b] = z[b, best].clone()
        return changed


@TEXT_ATTACKS.register("lamp")
class Lamp(Tag):
    """TAG's continuous steps with LAMP's discrete, LM-ranked steps (Balunović et al., NeurIPS 2022): the
    shipped LM, which the server holds, is the language prior."""
    name = "lamp"
    options_class = LampOptions


def _replay(defense, observation, model, params, seq_len: int, vocab: int, seed: int):
    """The defense's `share` in the attacker's loop, its path chosen on two probes: the gradients of two random
    token batches of the client's shape."""
    from fedleak.attacks.defense_replay import DefenseReplay
    from fedleak.models.text import lm_loss
    g = torch.Generator().manual_seed(seed + 7919)
    probes = []
    for _ in range(2):
        ids = torch.randint(0, vocab, (observation.num_examples, seq_len), generator=g)
        probes.append([t.detach() for t in torch.autograd.grad(lm_loss(model, ids), params)])
    return DefenseReplay(defense, observation, probes, seed=seed, model=model)
