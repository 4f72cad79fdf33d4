"""Learning to invert (Wu, Chen, Guo, Weinberger, "Learning to Invert: Simple Adaptive Attacks for Gradient
Inversion in Federated Learning", UAI 2023; arXiv 2210.10880): run the real defense on auxiliary data,
train a model from what is sent to the image, apply it to the observation (issue #12, item 1b).

No model of the defense is needed, only the defense itself: every auxiliary example goes through the
client's whole pipeline as the attacker can run it (attacks/defense_replay.py): `prepare_model` (dropout),
the threat model's client update with the defense's `gradient_fn` (DP-SGD), then `share` with the round's
public context, the defense's private randomness drawn by the attacker, fresh per example. What is sent is
flattened and projected to `features` coordinates by a fixed CountSketch (Charikar et al. 2002: one signed
bucket per coordinate, O(d)), standardised, joined to the rank-one direction of the image-facing linear
layer where there is one (`_Features`) and to the one-hot label where the attacker has it; an MLP (two
hidden ReLU layers of `hidden` units) is trained with MSE to the normalised image: Adam, `budget.iterations`
mini-batch steps. 10% of the examples are held out; their PSNR is recorded
(`extras["validation_psnr"]`) so that an inverter that learned nothing is visible as such. Deviation from
the paper (read: abstract only; architecture and sizes not checked): a fixed random projection and a small
MLP keep it a CPU-seconds attack.

Trained once per (defense class and source, its public configuration, victim weights, threat model,
attacker knowledge, options): kept in memory and under $FEDLEAK_CACHE/inverters (tensors only, loaded with
weights_only), so a matrix trains it once, not per image. The round's public context is part of that key
only when what is sent depends on it beyond the private randomness (a public-seed permutation or sketch:
`DefenseReplay.context_dependent`); then each round's context gets its own inverter.

Needs the knowledge flags `defense` and `auxiliary_data`, a FedSGD or FedAvg update, and B = 1."""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import inspect
import logging
import math
import sys
from dataclasses import dataclass

import torch

from fedleak.attacks.analytic_fc import leading_direction
from fedleak.attacks.base import Attack, Budget, PresetBudget, Reconstruction, require_knowledge
from fedleak.attacks.share_matching import ShareMatcher, build_replay, labels_for, provisional_labels
from fedleak.attacks.defense_replay import ShareFailed, _private_draw
from fedleak.core.errors import ConfigError, NotApplicableError, UnreadableFileError
from fedleak.core.io import digest, load_tensors, save_tensors
from fedleak.core.options import check_bool, check_integer, check_number
from fedleak.defenses.seeding import mix
from fedleak.metrics.image import psnr
from fedleak.models.functional import LocalTraining
from fedleak.threat_models.victim import cache_dir

log = logging.getLogger("fedleak")

VERSION = 1
MEMORY_ENTRIES = 8
_MEMORY: dict[str, dict] = {}  # the most recently used inverters of this process, oldest first


@dataclass(frozen=True)
class LearnToInvertConfig:
    samples: int = 1000      # auxiliary examples the defense is run on (at most the auxiliary split)
    features: int = 2048     # CountSketch width of what is sent
    hidden: int = 512
    lr: float = 1e-3
    batch: int = 64
    labels: bool = True      # condition on the (known or inferred) label
    rank_one: bool = True    # add the rank-one direction of the image-facing linear layer where there is one
    cache: bool = True

    def __post_init__(self):
        for key in ("samples", "features", "hidden", "batch"):
            check_integer(key, getattr(self, key), low=2)
        check_number("lr", self.lr, low=0, low_open=True)
        for key in ("labels", "rank_one", "cache"):
            check_bool(key, getattr(self, key))


class Inverter(torch.nn.Module):
    """MLP from features to the normalised image. Where the features include the rank-one direction v of the
    image-facing layer (columns `start`..`start + pixels`), the output is g(z)·v + r(z): a per-image gain and
    a residual, both from the MLP, since v is the image up to its scale (and noise): learnt in a few hundred
    steps where a plain MLP needs thousands of examples to find that near-identity map."""

    def __init__(self, inputs: int, hidden: int, pixels: int, start: int = -1):
        super().__init__()
        self.pixels, self.start = pixels, start
        self.net = torch.nn.Sequential(torch.nn.Linear(inputs, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, hidden),
                                       torch.nn.ReLU(), torch.nn.Linear(hidden, pixels + (start >= 0)))

    def forward(self, z):
        out = self.net(z)
        if self.start < 0:
            return out
        return out[:, :self.pixels] + out[:, self.pixels:] * z[:, self.start:self.start + self.pixels]


class LearnToInvert(Attack):
    name = "learn-to-invert"
    max_images = 1
    needs_defense = True
    options_class = LearnToInvertConfig
    budgets = {"ci": PresetBudget(iterations=300)}  # training steps of the inverter

    def reconstruct(self, observation, model, knowledge, budget: Budget, seed: int = 0, progress: bool = False):
        require_knowledge(self.name, knowledge, "defense", "auxiliary_data")
        if knowledge.num_images != 1:
            raise NotApplicableError(f"attack '{self.name}' inverts one example per update (max_images = 1); "
                              f"this batch has {knowledge.num_images}")
        if observation.threat_model not in ("fedsgd", "fedavg"):
            raise NotApplicableError(f"attack '{self.name}' runs the client's update on auxiliary data under fedsgd or fedavg, "
                              f"not '{observation.threat_model}'")
        c = self.options
        replay = build_replay(observation, model, knowledge, provisional_labels(observation, model, knowledge), seed)
        labels = labels_for(observation, model, knowledge, replay) if c.labels else None
        sketch = _Features(observation, model, knowledge, c.features, c.rank_one)
        dependent = replay.context_dependent([p.detach() for p in _probe(replay)])
        key = _key(replay, observation, knowledge, c, budget, dependent)
        trained = _MEMORY.get(key) or (_load(key) if c.cache else None)
        cached = trained is not None
        if trained is None:
            # seeded by what it is trained on, not the attack's seed: the inverter a cell reuses is the one it
            # would train; and not by the code (the key's source digest), so a comment edit changes no figure
            trained = _train(replay, observation, model, knowledge, sketch, c, budget,
                             mix("learn-to-invert", _key(replay, observation, knowledge, c, budget, dependent, code=False)) % 2 ** 31,
                             progress)
            if c.cache:
                _store(key, trained)
        _MEMORY.pop(key, None)
        _MEMORY[key] = trained
        while len(_MEMORY) > MEMORY_ENTRIES:  # per-context inverters (a sketch: one per round) must not pile up
            _MEMORY.pop(next(iter(_MEMORY)))
        inverter = Inverter(*trained["shape"])
        inverter.load_state_dict(trained["state"])
        device = observation.shared[0].device
        z = _inputs(sketch.apply(observation.shared, replay.offset).unsqueeze(0).cpu(), labels.cpu() if labels is not None else None,
                    trained, knowledge.num_classes)
        low, high = knowledge.box(device)
        with torch.no_grad():
            x = inverter(z).view(1, *knowledge.image_shape).to(device)
            x = torch.maximum(torch.minimum(x, high), low)
        matcher = ShareMatcher(observation, model, knowledge, replay)
        with torch.enable_grad():
            y = labels if labels is not None else provisional_labels(observation, model, knowledge)
            loss = float(matcher(x, y).detach())
        return Reconstruction(knowledge.to_unit(x), (labels if labels is not None else y).detach(), trained["trace"], loss, [loss],
                              {"validation_psnr": trained["validation_psnr"], "training_examples": trained["examples"],
                               "context_dependent": dependent, "cached": cached,
                               "defense_replay": replay.describe(), "strategy": f"{self.name}:{replay.path}"})


class _Features:
    """What the inverter reads of one sent update: a fixed CountSketch of all of it, and, where what is sent
    is shaped like the update and a linear layer sees the image, the rank-one direction of that layer's
    sent gradient (attacks/analytic_fc.py; unit norm, sign fixed by positive skew): the image up to scale
    and noise, which no random projection of a gradient keeps (a sketch of δ xᵀ mixes every xⱼ with δ)."""

    def __init__(self, observation, model, knowledge, k: int, rank_one: bool):
        d = sum(t.numel() for t in observation.shared)
        generator = torch.Generator().manual_seed(mix("learn-to-invert", d, k))
        self.buckets = torch.randint(0, k, (d,), generator=generator)
        self.signs = torch.randint(0, 2, (d,), generator=generator).float() * 2 - 1
        self.k = k
        self.layer = _image_layer(observation, model, knowledge) if rank_one else None

    @property
    def width(self) -> int:
        return self.k + (0 if self.layer is None else self.layer[2])

    def apply(self, sent: list[torch.Tensor], offset: list[torch.Tensor] | None = None) -> torch.Tensor:
        if offset is not None:  # a known offset (public-seed noise) would drown what the features read
            sent = [s - o for s, o in zip(sent, offset)]
        flat = torch.cat([s.detach().reshape(-1).float().cpu() for s in sent])
        if flat.numel() != self.buckets.numel():
            raise ShareFailed("the defense sent a different number of values for an auxiliary example")
        sketch = torch.zeros(self.k).index_add_(0, self.buckets, self.signs * flat)
        if self.layer is None:
            return sketch
        weight, bias, _ = self.layer
        direction = leading_direction(sent[weight].detach().float().cpu(), None if bias is None else sent[bias].detach().float().cpu())
        return torch.cat([sketch, direction * torch.sign(direction.pow(3).sum() + 1e-30)])


def _image_layer(observation, model, knowledge) -> tuple[int, int | None, int] | None:
    """(index of the weight, of its bias or None, its input width) of the first linear layer whose input is
    the image, where what is sent is shaped like the update; else None."""
    from fedleak.attacks.analytic_fc import _input_is_image
    shapes = [p.shape for p in observation.global_params.values()]
    if [t.shape for t in observation.shared] != shapes:
        return None
    names = list(observation.param_names)
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and f"{name}.weight" in names and \
                _input_is_image(model, observation, module, knowledge):
            bias = f"{name}.bias"
            return names.index(f"{name}.weight"), names.index(bias) if bias in names else None, module.in_features
    return None


def _probe(replay):
    """A parameter-shaped update of the observation's scale for the context test."""
    obs = replay.observation
    return [torch.randn(p.shape, generator=torch.Generator().manual_seed(3)).to(p) * (float(p.std()) or 1.0)
            for p in obs.global_params.values()]


def _inputs(features: torch.Tensor, labels: torch.Tensor | None, trained: dict, classes: int) -> torch.Tensor:
    z = (features - trained["mean"]) / trained["std"]
    if trained["labelled"]:
        if labels is None:
            raise ConfigError("attack 'learn-to-invert': the inverter was trained with labels; none are available")
        z = torch.cat([z, torch.nn.functional.one_hot(labels.long().view(-1), classes).float().view(len(z), -1)], 1)
    return z


def _train(replay, observation, model, knowledge, sketch, c, budget, seed, progress) -> dict:
    """Run the defense on auxiliary examples, fit the inverter."""
    from tqdm.auto import tqdm
    threat = knowledge.threat_model  # the configured protocol: the client's update as the attacker can run it
    if getattr(threat, "training", None) is None and observation.threat_model == "fedavg":
        threat = copy.copy(threat)  # local hyperparameters unknown: a guess (the features are standardised)
        threat.training = LocalTraining()
    device = observation.shared[0].device
    params = {k: v.detach() for k, v in observation.global_params.items()}
    count = min(c.samples, len(knowledge.auxiliary_images))
    order = torch.randperm(len(knowledge.auxiliary_images), generator=torch.Generator().manual_seed(seed))[:count]
    images = knowledge.auxiliary_images[order].float()
    classes = knowledge.auxiliary_labels[order].long()
    m = torch.tensor(knowledge.mean).view(-1, 1, 1)
    s = torch.tensor(knowledge.std).view(-1, 1, 1)
    features = torch.empty(count, sketch.width)
    for i in tqdm(range(count), desc=f"{LearnToInvert.name} data", disable=not progress, leave=False):
        x = ((images[i:i + 1] - m) / s).to(device)
        y = classes[i:i + 1].to(device)
        sent = _client_sample(replay, threat, model, observation, params, x, y, mix(seed, "aux", i))
        features[i] = sketch.apply(sent, replay.offset)
    mean, std = features.mean(0), features.std(0).clamp(min=1e-12)
    if sketch.layer is not None:  # the direction as it is (unit norm, entries ~1/sqrt(d)) scaled to O(1), not standardised
        mean[sketch.k:], std[sketch.k:] = 0.0, 1.0 / math.sqrt(sketch.layer[2])
    trained = {"mean": mean, "std": std, "labelled": bool(c.labels)}
    z = _inputs(features, classes if c.labels else None, trained, knowledge.num_classes)
    targets = ((images - m) / s).reshape(count, -1)  # normalised: where the rank-one direction is linear in the image
    held = max(1, count // 10)
    with torch.random.fork_rng(devices=[]):  # the inverter's initialisation, reproducibly, the global stream untouched
        torch.manual_seed(seed)
        start = sketch.k if sketch.layer is not None and sketch.layer[2] == targets.shape[1] else -1
        inverter = Inverter(z.shape[1], c.hidden, targets.shape[1], start)
    optimiser = torch.optim.Adam(inverter.parameters(), lr=c.lr, foreach=True)
    generator = torch.Generator().manual_seed(seed)
    train_z, train_t = z[held:], targets[held:]
    trace = []
    for _ in tqdm(range(budget.iterations), desc=LearnToInvert.name, disable=not progress, leave=False):
        batch = torch.randint(0, len(train_z), (min(c.batch, len(train_z)),), generator=generator)
        loss = torch.nn.functional.mse_loss(inverter(train_z[batch]), train_t[batch])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        trace.append(float(loss.detach()))
    with torch.no_grad():
        rebuilt = (inverter(z[:held]).view(held, *knowledge.image_shape) * s + m).clamp(0, 1)
        validation = psnr(rebuilt, images[:held]).median()
    return {**trained, "state": {k: v.detach().clone() for k, v in inverter.state_dict().items()},
            "shape": (z.shape[1], c.hidden, targets.shape[1], start), "trace": trace, "validation_psnr": float(validation),
            "examples": count}


def _client_sample(replay, threat, model, observation, params, x, y, draw: int) -> list[torch.Tensor]:
    """What the client would send for (x, y): the defense's whole pipeline, the attacker's private draw."""
    defense = replay.defense
    with _private_draw(defense, replay.private, draw):
        try:
            client_model = defense.prepare_model(model)
            update = threat.client_update(client_model, params, observation.buffers, x, y, defense)
            result = defense.share([u.detach() for u in update], replay.context)
        except ConfigError:
            raise
        except Exception as e:  # noqa: BLE001 - a plugin failing on auxiliary data: reported as not applicable
            raise ShareFailed(f"the defense failed on an auxiliary example: {type(e).__name__}: {e}") from e
    return result[0] if isinstance(result, tuple) else result


def _key(replay, observation, knowledge, c, budget, dependent: bool, code: bool = True) -> str:
    """The cache key of the inverter (`code`: the defense's module source and path in it, so an edited
    defense retrains) or, without the code, the seed of its training."""
    cls = type(replay.defense)
    try:
        source = inspect.getsource(sys.modules[cls.__module__]) if code else ""
    except (OSError, TypeError, KeyError):
        source = cls.__qualname__
    public = {k: v for k, v in _describe(replay.defense).items() if k not in replay.private}
    weights = hashlib.sha256()
    for name in observation.param_names:
        weights.update(observation.global_params[name].detach().cpu().numpy().tobytes())
    for name in sorted(observation.buffers):
        weights.update(observation.buffers[name].detach().cpu().numpy().tobytes())
    aux = knowledge.auxiliary_images
    blob = {"v": VERSION, "defense": f"{cls.__module__}.{cls.__qualname__}" if code else cls.__qualname__,
            "source": digest(source, 64),
            "public": public, "weights": weights.hexdigest(), "threat": observation.threat_model,
            "training": dataclasses.asdict(knowledge.local_training) if knowledge.local_training else None,
            "shape": knowledge.image_shape, "classes": knowledge.num_classes, "mean": knowledge.mean, "std": knowledge.std,
            "aux": [len(aux), float(aux[:64].double().sum())], "config": dataclasses.asdict(c), "steps": budget.iterations,
            "context": [replay.context.seed, replay.context.client_id, replay.context.round] if dependent else None}
    return digest(blob, 20)


def _describe(defense) -> dict:
    try:
        return dict(defense.describe())
    except Exception:  # noqa: BLE001 - a plugin's describe failing only weakens the cache key
        return {}


def _path(key: str):
    return cache_dir() / "inverters" / f"{key}.pt"


def _load(key: str) -> dict | None:
    path = _path(key)
    if not path.exists():
        return None
    try:
        return load_tensors(path, "a trained inverter")
    except UnreadableFileError as e:  # a damaged cache entry is retrained, not trusted
        log.warning(f"fedleak: {e}; retraining it")
        return None


def _store(key: str, trained: dict) -> None:
    save_tensors(_path(key), trained)  # atomic: two workers training one inverter never leave half a file
