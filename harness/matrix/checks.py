"""The checks a verdict needs besides the attacks (issue #12, items 2 and 3), as matrix tasks: each is
stored like a cell (harness.matrix.cell_store), so a resumed matrix never repeats one.

* `DataDependenceTask`, one per (dataset, victim, threat model, defense setting, seed): does what the
  client sends depend on its data at all? Every attacked victim (and one of another label), observed
  under the same defense setting, round seed, client id and round; bit-identical observations for all of
  them (relative difference below `TOLERANCE`) mean the observation is DEGENERATE: no attack can find anything, and a low
  leakage measures nothing about the defense (the HyperFL cell of issue #12: a client whose loss is 0
  after its head training sends the same Δφ whatever its image). A third observation of the first
  victim says whether `share` is reproducible for a fixed context; where it is not (noise a plugin
  draws from the global RNG), several draws per victim are compared instead, and only a difference of
  the means beyond the draws' own spread, for some victim against the first, counts (otherwise: cannot
  tell, reported as such). A fourth,
  under the next round seed, says whether the defense is randomised (what it sends for one update
  changes with the round's seed), and two more, from a second fresh instance and under another private
  draw (its private seeds redrawn as the attacker's replay redraws them, attacks/defense_replay.py),
  whether it is randomised by what only the client holds: such a defense needs an attack that averages
  over its randomness (EOT, Athalye et al., ICML 2018), which the verdict checks ran.
* `LabelBaselineTask`, one per (dataset, attacked part of the image, victims): what the label alone
  gives (attacks/label_only.py), scored against every victim for every class, so each result row is
  read against the baseline of the label its attack used (true or inferred)."""
from __future__ import annotations

import contextlib
import json
import math
import statistics
from dataclasses import asdict, dataclass, field, replace

import torch

from fedleak.attacks.defense_replay import _private_draw, private_attributes
from fedleak.core.io import digest, json_bytes
from fedleak.defenses.seeding import mix
from fedleak.harness.run.config import RunConfig
from fedleak.harness.matrix.cells import cell_key, code_of

CHECK_FILE = "check.json"
BASELINE_FILE = "baseline.json"
TOLERANCE = 1e-6   # relative difference below which two observations are the same
DRAWS = 8          # per victim, where share is not reproducible for a fixed context
METRICS = ("psnr", "ssim", "lpips")
LARGER_LEAKS = {"psnr": True, "ssim": True, "lpips": False}


@dataclass(frozen=True)
class CheckTask:
    """A check stored and resumed like a cell: `config` says what it observes, `images` which victims."""
    key: str
    config: RunConfig
    labels: dict
    images: tuple[int, ...]
    code: dict = field(default_factory=dict)

    kind = ""

    def record(self) -> dict:
        return {"kind": self.kind, "key": self.key, "labels": self.labels, "config": self.config.to_dict(),
                "config_hash": self.config_hash, "code": self.code}


@dataclass(frozen=True)
class DataDependenceTask(CheckTask):
    """`config`: dataset, victim, threat model (options included), defense, seed; `labels`: dataset,
    model, victim_state, threat_model, defense_label, defense."""

    kind = "data-dependence"
    files = (CHECK_FILE,)

    @property
    def config_hash(self) -> str:
        return _digest({"kind": self.kind, "config": {k: v for k, v in self.config.to_dict().items()
                                                      if k not in ("output", "device", "attack")},
                        "images": list(self.images)})

    def describe(self) -> str:
        return f"data-dependence check of {self.labels['defense_label']} ({self.labels['threat_model']})"

    def run(self, gpu: int | None):
        values = data_dependence(self.config, self.images)
        return {CHECK_FILE: json_bytes({"labels": self.labels, **values})}, {"degenerate": values["degenerate"]}, "cpu"


@dataclass(frozen=True)
class LabelBaselineTask(CheckTask):
    """`config`: dataset and threat model (what part of an image is attacked)."""

    kind = "label-baseline"
    files = (BASELINE_FILE,)

    @property
    def config_hash(self) -> str:
        return _digest({"kind": self.kind, "data": asdict(self.config.data), "part": _attacked_part(self.config),
                        "images": list(self.images)})

    def describe(self) -> str:
        return f"label baseline of {self.labels['dataset']} ({len(self.images)} images, {self.labels['part']})"

    def run(self, gpu: int | None):
        values = label_baseline(self.config, self.images)
        return ({BASELINE_FILE: json_bytes({"labels": self.labels, **values})},
                {"psnr": _median([r["psnr"] for r in values["true_label"]])}, "cpu")


# ------------------------------------------------------------------ building the tasks of a matrix

def check_tasks(cells) -> tuple[list[DataDependenceTask], list[LabelBaselineTask]]:
    """The data-dependence checks of every attacked (context, defense setting, seed) of `cells` and
    the label baselines of every (dataset, attacked part), over the victims the cells attack."""
    images: dict[str, set[int]] = {}
    first: dict[str, RunConfig] = {}
    for cell in cells:
        part = baseline_part(cell.config)
        images.setdefault(part, set()).update(cell.config.data.victim_indices())
        first.setdefault(part, cell.config)
    baselines = []
    for part, indices in images.items():
        c = first[part]
        config = RunConfig(data=replace(c.data, victims=None, num_victims=1, batch_size=1),
                           threat_model=replace(c.threat_model, knowledge="eavesdropper"), device=c.device)
        labels = {"dataset": c.data.name, "threat_model": c.threat_model.name,
                  "part": "whole image" if _attacked_part(c) == "whole image" else f"{c.threat_model.name}'s part"}
        task = LabelBaselineTask("", config, labels, tuple(sorted(indices)), code_of())
        key = cell_key(task.config_hash, task.code, prefix="b")
        baselines.append(replace(task, key=key, config=replace(config, output=f"cells/{key}")))
    dependence: dict[str, DataDependenceTask] = {}
    for cell in cells:
        c = cell.config
        config = RunConfig(data=replace(c.data, victims=None, num_victims=1, batch_size=1), victim=c.victim,
                           threat_model=replace(c.threat_model, knowledge="eavesdropper"), defense=c.defense,
                           seed=c.seed, device=c.device)
        labels = {"dataset": c.data.name, "model": c.victim.model, "victim_state": c.victim.state,
                  "threat_model": c.threat_model.name, "defense_label": cell.labels["defense_label"],
                  "defense": c.defense.name}
        task = DataDependenceTask("", config, labels, tuple(sorted(images[baseline_part(c)])),
                                  code_of(defense=c.defense.name))
        key = cell_key(task.config_hash, task.code, prefix="d")
        dependence.setdefault(key, replace(task, key=key, config=replace(config, output=f"cells/{key}")))
    return list(dependence.values()), baselines


def baseline_keys(cells, baselines: list[LabelBaselineTask]) -> dict[str, str]:
    """Cell key -> the key of the label baseline its rows are read against."""
    by_part = {baseline_part(t.config): t.key for t in baselines}
    return {cell.key: by_part[baseline_part(cell.config)] for cell in cells if baseline_part(cell.config) in by_part}


def baseline_part(config: RunConfig) -> str:
    """What a label baseline depends on: the dataset and the part of an image that is attacked."""
    data = asdict(config.data) | {"victims": None, "num_victims": 1, "batch_size": 1}
    return json.dumps({"data": data, "part": _attacked_part(config)}, sort_keys=True, default=str)


def _attacked_part(config: RunConfig) -> str | dict:
    """What of an image the attacked client holds: the whole image, or (vertical FL) the part its
    threat model says; two threat models that attack the whole image share one baseline."""
    from fedleak.threat_models import THREAT_MODELS
    from fedleak.threat_models.base import ThreatModel
    tm = config.threat_model
    if tm.name in THREAT_MODELS and THREAT_MODELS.get(tm.name).private_input is ThreatModel.private_input:
        return "whole image"
    return {"threat_model": tm.name, "options": tm.options}


# ------------------------------------------------------------------ the computations

def data_dependence(config: RunConfig, images: tuple[int, ...]) -> dict:
    """How much what the client sends changes between two victims (see the module docstring)."""
    from fedleak.data.datasets import load_dataset
    from fedleak.defenses import build_defense
    from fedleak.harness.run.runner import resolve_device
    from fedleak.threat_models import build_threat_model
    from fedleak.threat_models.knowledge import knowledge_flags
    device = resolve_device(config.device)
    tm = config.threat_model
    data = load_dataset(config.data.name, root=config.data.root, **config.data.options)
    fresh = lambda: build_defense(config.defense.name, **config.defense.options)  # noqa: E731 - no state carried over
    threat = build_threat_model(tm.name, tm.local_training(), fresh(), **tm.options)
    victim = threat.build_victim(config.victim, data, fresh()).to(device)
    flags = knowledge_flags("eavesdropper")
    first, second = _two_victims(data, images)
    # evidence from every attacked image (and one of another label): a defense that sends some images' updates
    # raw and zeros for the rest is not degenerate, whichever two victims a check of two would draw (issue #20)
    others = [i for i in dict.fromkeys([*images, second]) if i != first]

    def sent(index: int, seed: int, private: int | None = None) -> list[torch.Tensor]:
        x, y = data.victims([index])
        defense = fresh()
        draw = contextlib.nullcontext() if private is None else _private_draw(defense, private_attributes(defense), private)
        with draw:
            observation, _ = threat.observe(victim, x.to(device), y.to(device), defense, flags, seed=seed, client_id=0)
        return [t.detach().double().cpu() for t in observation.shared]

    a, again, reseeded = sent(first, config.seed), sent(first, config.seed), sent(first, config.seed + 1)
    redrawn = sent(first, config.seed, private=mix("data-dependence", config.seed))
    observed = {i: sent(i, config.seed) for i in others}
    described = victim.describe()
    # randomised: what is sent for one update changes with the public round seed, between two fresh instances
    # of the configured defense (noise from the global RNG), or with the client's private draw (noise keyed to
    # a private seed, defenses/seeding.py: the server cannot regenerate it, so it is randomness to it)
    sources = [name for name, other in (("round seed", reseeded), ("fresh instance", again), ("private draw", redrawn))
               if _relative(a, other) > TOLERANCE]
    out = {"victims": [first, *others], "within": _relative(a, again),
           # the largest difference from the first victim: degenerate only where every image sends the same
           "between": max((_relative(a, o) for o in observed.values()), default=0.0),
           "randomised": bool(sources), "randomised_by": sources,
           # as the result rows name it (HyperFL's victim is its own network, whatever the spec's model)
           "context": {"dataset": data.name, "model": described["model"], "victim_state": described["victim_state"],
                       "threat_model": threat.name, "threat_model_params": json.dumps(threat.describe()["options"], sort_keys=True)}}
    if out["within"] <= TOLERANCE:
        out.update(degenerate=out["between"] <= TOLERANCE, method="one observation per victim (reproducible share)")
        return out
    # not reproducible for a fixed context: compare the mean of several draws per victim with their spread
    draws_a = [a, again] + [sent(first, config.seed) for _ in range(DRAWS - 2)]
    ratio = max((_mean_difference_ratio(draws_a, [o] + [sent(i, config.seed) for _ in range(DRAWS - 1)])
                 for i, o in observed.items()), default=0.0)
    out.update(separation=ratio, degenerate=False if ratio > 2.0 else None,
               method=f"{DRAWS} draws per victim (share not reproducible for a fixed context)")
    return out


def _two_victims(data, images: tuple[int, ...]) -> tuple[int, int]:
    """The first matrix victim and the first other victim with a different label (from the matrix's
    victims where one exists, else from the held-out split)."""
    first = images[0]
    label = int(data.victim_labels[first])
    for index in [*images[1:], *range(len(data.victim_labels))]:
        if int(data.victim_labels[index]) != label:
            return first, int(index)
    return first, (first + 1) % len(data.victim_labels)


def _relative(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    if [t.shape for t in a] != [t.shape for t in b]:
        return math.inf  # what is sent has a data-dependent shape: it depends on the data
    difference = math.sqrt(sum(float((x - y).pow(2).sum()) for x, y in zip(a, b)))
    scale = max(math.sqrt(sum(float(x.pow(2).sum()) for x in a)), math.sqrt(sum(float(y.pow(2).sum()) for y in b)))
    return 0.0 if difference == 0 else difference / max(scale, 1e-300)


def _mean_difference_ratio(draws_a, draws_b) -> float:
    """‖mean_a − mean_b‖² over its expectation when both victims' draws have the same mean (the sum
    of the two means' variances): about 1 when the data changes nothing, larger when it does."""
    def moments(draws):
        stacked = [torch.stack(parts) for parts in zip(*draws)]
        return [s.mean(0) for s in stacked], sum(float(s.var(0).sum()) for s in stacked) / len(draws)
    (mean_a, var_a), (mean_b, var_b) = moments(draws_a), moments(draws_b)
    difference = sum(float((x - y).pow(2).sum()) for x, y in zip(mean_a, mean_b))
    return difference / max(var_a + var_b, 1e-300)


def label_baseline(config: RunConfig, images: tuple[int, ...]) -> dict:
    """Per victim and class, each metric of the label-only attacker's candidates; the baseline is
    the better of the class mean's and the median draw's score (attacks/label_only.py)."""
    from fedleak.attacks.label_only import label_only_candidates
    from fedleak.data.datasets import load_dataset
    from fedleak.defenses import NoDefense
    from fedleak.metrics.image import score_images
    from fedleak.threat_models import build_threat_model
    tm = config.threat_model
    data = load_dataset(config.data.name, root=config.data.root, **config.data.options)
    threat = build_threat_model(tm.name, tm.local_training(), NoDefense(), **tm.options)
    candidates = label_only_candidates(data)
    pool = candidates.means.unsqueeze(1) if candidates.draws is None else \
        torch.cat([candidates.means.unsqueeze(1), candidates.draws], 1)   # (classes, 1 + K, C, H, W)
    classes, per_class = pool.shape[:2]
    flat = threat.private_input(pool.reshape(classes * per_class, *pool.shape[2:]))
    x, y = data.victims(list(images))
    truth = threat.private_input(x)
    rows, true_rows = [], []
    for i, index in enumerate(images):
        scores = score_images(flat, truth[i:i + 1].expand(len(flat), *truth.shape[1:]))
        per_class_scores = []
        for c in range(classes):
            entry = {}
            for m in METRICS:
                values = scores[m].view(classes, per_class)[c]
                mean, draws = float(values[0]), values[1:]
                if len(draws):
                    median = float(draws.median())
                    entry[m] = max(mean, median) if LARGER_LEAKS[m] else min(mean, median)
                    entry[f"{m}_draw_q90"] = float(draws.quantile(0.9 if LARGER_LEAKS[m] else 0.1))
                else:
                    entry[m] = mean
                entry[f"{m}_class_mean"] = mean
            per_class_scores.append(entry)
        rows.append(per_class_scores)
        true_rows.append({"image_index": int(index), "label": int(y[i]), **per_class_scores[int(y[i])]})
    return {"images": [int(i) for i in images], "source": candidates.source, "classes": classes,
            "baseline": rows, "true_label": true_rows}


def _median(values) -> float:
    return float(statistics.median(values)) if values else math.nan


def _digest(blob: dict) -> str:
    return digest(blob, 12)
