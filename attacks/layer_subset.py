"""Layer-subset matching (issue #12, item 1d): match only the layers the defense leaves least distorted.

Many defenses treat layers unequally: Soteria prunes only the classifier's input, per-layer top-k keeps
different fractions of each layer's mass, isotropic noise swamps a large layer's small entries before a
small layer's large ones. Matching every layer lets the distorted ones pull the image off. The attacker
measures each layer's fidelity itself, with the defense's own `share` (attacks/defense_replay.py) on probe
updates (auxiliary images where it has them, else random images): fidelity_l = median over probes of
cos(sent_l − E share(0)_l, g_l), the cosine between what the defense sends of layer l (one private draw:
the noise counts) and the true layer gradient, in the space of what is sent when that is shaped like the
update, else through the attacker's decoding (`DefenseReplay.invert`). Layers whose fidelity falls below
`keep` × the median layer's are left out; the others are matched with IG's cosine and optimiser, the trial
gradient as it is (no defense applied). Measured on the ci MLP: a threshold relative to the BEST layer
(keep only the cleanest) leaves a single small classifier layer under noise (its few large entries have
the highest fidelity) and reconstructs nothing; relative to the median it drops exactly the layers a
defense destroys (Soteria-style pruning: fidelity 0.02 against 1.0 for the others).

Needs the knowledge flag `defense` (adaptive mode)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from fedleak.attacks.base import Attack, Budget, PresetBudget, require_knowledge
from fedleak.attacks.share_matching import build_replay, check_search, decoded_update, labels_for, provisional_labels
from fedleak.attacks.inverting_gradients import search_images
from fedleak.attacks.objective import GradientMatcher
from fedleak.core.options import check_integer, check_number


@dataclass(frozen=True)
class LayerSubsetConfig:
    keep: float = 0.5      # a layer is matched if its fidelity >= keep × the median layer's
    probes: int = 4
    lr: float = 0.1        # the rest: IG's optimiser (attacks/inverting_gradients.py)
    tv: float = 1e-4
    signed: bool = True
    boxed: bool = True
    lr_decay: bool = True

    def __post_init__(self):
        check_number("keep", self.keep, low=0, high=1, low_open=True)
        check_integer("probes", self.probes, low=1)
        check_search(self)


class SubsetMatcher(GradientMatcher):
    """IG's cosine between the plain trial gradient and a parameter-shaped target, on chosen layers."""

    def __init__(self, observation, model, knowledge, target: list[torch.Tensor], layers: list[int]):
        super().__init__(observation, model, dataclasses.replace(knowledge, defense=None), "cosine")
        self.layers = layers
        self.target = [target[i].detach() for i in layers]

    def trial_update(self, x, y):
        update = super().trial_update(x, y)
        return [update[i] for i in self.layers]


def layer_fidelity(replay, observation, probes: list[list[torch.Tensor]], param_shaped: bool) -> list[float]:
    """Median over probes of the per-layer cosine between what the defense makes of a probe gradient and the
    probe gradient itself."""
    per_probe = []
    for n, probe in enumerate(probes):
        sent = replay.sample(probe, 500 + n)
        if param_shaped:
            seen = [s - o for s, o in zip(sent, replay.offset)] if replay.offset else sent
        else:
            seen = replay.invert(sent, [torch.zeros_like(p) for p in probe])
        per_probe.append([float(torch.nn.functional.cosine_similarity(s.reshape(1, -1).double(), p.reshape(1, -1).double()))
                          if float(p.abs().sum()) > 0 else 0.0 for s, p in zip(seen, probe)])
    return torch.tensor(per_probe).median(0).values.tolist()


def auxiliary_probes(observation, model, knowledge, labels: torch.Tensor, count: int, seed: int) -> list[list[torch.Tensor]]:
    """Probe updates at auxiliary images (with their labels) when the attacker has them, else at random images."""
    from fedleak.attacks.share_matching import probe_updates
    if knowledge.auxiliary_images is None:
        return probe_updates(observation, model, knowledge, labels, seed, count)
    matcher = GradientMatcher(observation, model, dataclasses.replace(knowledge, defense=None))
    device = labels.device
    m = torch.tensor(knowledge.mean).view(-1, 1, 1)
    s = torch.tensor(knowledge.std).view(-1, 1, 1)
    order = torch.randperm(len(knowledge.auxiliary_images), generator=torch.Generator().manual_seed(seed))
    b = knowledge.num_images
    probes = []
    for k in range(count):
        index = order[k * b:(k + 1) * b]
        x = ((knowledge.auxiliary_images[index] - m) / s).to(device)
        y = knowledge.auxiliary_labels[index].to(device)
        with torch.enable_grad():
            probes.append([g.detach() for g in matcher.trial_update(x, y)])
    return probes


class LayerSubset(Attack):
    name = "layer-subset"
    needs_defense = True
    options_class = LayerSubsetConfig
    budgets = {"ci": PresetBudget(iterations=200)}

    def reconstruct(self, observation, model, knowledge, budget: Budget, seed: int = 0, progress: bool = False):
        require_knowledge(self.name, knowledge, "defense")
        c = self.options
        replay = build_replay(observation, model, knowledge, provisional_labels(observation, model, knowledge), seed)
        labels = labels_for(observation, model, knowledge, replay)
        shapes = [p.shape for p in observation.global_params.values()]
        in_loop = replay.path in ("autograd", "straight-through")
        param_shaped = [t.shape for t in observation.shared] == shapes
        if in_loop:
            probes = auxiliary_probes(observation, model, knowledge, labels, c.probes, seed)
            fidelity = layer_fidelity(replay, observation, probes, param_shaped)
        else:
            fidelity = [1.0] * len(shapes)  # no model of the defense to measure with: every layer
        if in_loop and param_shaped:
            target = [t - o for t, o in zip(observation.shared, replay.offset)] if replay.offset else observation.shared
        else:
            target = decoded_update(replay, observation)
        median = float(torch.tensor(fidelity).median())
        layers = [i for i, f in enumerate(fidelity) if f >= c.keep * median and f > 0] or [int(torch.tensor(fidelity).argmax())]
        matcher = SubsetMatcher(observation, model, knowledge, target, layers)
        result = search_images(matcher, labels, knowledge, budget, c, seed, progress, self.name)
        names = observation.param_names
        result.extras.update(defense_replay=replay.describe(), fidelity={names[i]: round(f, 4) for i, f in enumerate(fidelity)},
                             layers=[names[i] for i in layers],
                             strategy=f"{self.name}:{'shared' if in_loop and param_shaped else 'decoded'}:{len(layers)}/{len(shapes)}")
        return result
