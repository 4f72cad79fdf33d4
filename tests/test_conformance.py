"""Conformance of every registered defense, attack and threat model, in the style of torchmetrics'
MetricTester and Opacus's grad-sampler tests: parametrised over the registries, so a newly
registered component is covered without writing a test for it.

Defenses, under one threat model per kind of observation they declare (`applies_to`): what the
server decodes and what `simulate` returns have the shapes of what was shared; a trial update
requiring grad gets a finite, non-zero gradient through `simulate`; the same options, seed and
context give the same observation twice. Attacks, under the same: images of the private input's
shape in [0, 1], one label per image, the same reconstruction twice under one seed. All three:
`describe()` rebuilds an equal component, and every bad option is a ConfigError naming its key.
Tiny victims and budgets (2 images, 2 iterations) keep it to seconds per component."""
from __future__ import annotations

import dataclasses
import json
import math
import typing

import pytest
import torch

from fedleak.attacks import ATTACKS
from fedleak.attacks.base import Attack, Budget, Reconstruction
from fedleak.core.components import KINDS
from fedleak.core.errors import ConfigError
from fedleak.defenses import DEFENSES, NoDefense
from fedleak.harness.matrix.config import PRESETS
from fedleak.harness.run.plugins import load_plugin
from fedleak.models.functional import LocalTraining
from fedleak.threat_models import THREAT_MODELS, not_applicable
from fedleak.threat_models.knowledge import knowledge_flags
from fedleak.threat_models.victim import VictimSpec

# A plugin written the documented way (keyword __init__, no options class) is covered like a built-in.
load_plugin("fedleak.examples.my_defense:RandomKNoise")

IMAGES = [0, 1]
BUDGET = Budget(iterations=2, restarts=1)
# The tiny protocol each registered threat model runs with here (defaults for one not listed).
PROTOCOLS = {
    "fedavg": {"training": LocalTraining(lr=0.1, epochs=1, batch_size=1)},
    "hyperfl": {"options": {"embedding_dim": 8, "hidden_dim": 16}, "spec": VictimSpec(clients=2)},
    "vfl": {"options": {"train_epochs": 0, "embedding_width": 16}},
}
VICTIM = VictimSpec(model="mlp", options={"width": 8, "depth": 1})  # has dropout layers: the dropout defense runs
# What an attack needs beyond the default setting (no defense, data_enhanced knowledge) to run at all.
ATTACK_SETTINGS = {"dia-oracle": {"defense": "dropout", "knowledge": {"preset": "data_enhanced", "dropout_masks": True}}}


def threat_model_for(kind: str, component=None) -> str | None:
    """The first registered threat model that shares `kind` (and that `component` runs under)."""
    return next((n for n in THREAT_MODELS.names() if THREAT_MODELS.get(n).kind == kind
                 and (component is None or not_applicable(n, component) is None)), None)


def pairs(registry) -> list:
    return [pytest.param(name, threat, id=f"{name}-{threat}") for name in registry.names()
            for threat in dict.fromkeys(threat_model_for(k, registry.get(name)) for k in registry.get(name).applies_to)
            if threat]


def build_threat(name: str):
    setting = PROTOCOLS.get(name, {})
    return THREAT_MODELS.get(name).from_options(setting.get("options", {}), "threat_model.options",
                                                setting.get("training"))


_victims: dict = {}


def victim_for(threat_name: str, defense, digits):
    """One tiny untrained victim per threat model and defense (a defense may reshape it: hashing)."""
    threat = build_threat(threat_name)
    key = (threat_name, defense.name, json.dumps(defense.describe(), sort_keys=True))
    if key not in _victims:
        spec = PROTOCOLS.get(threat_name, {}).get("spec", VICTIM)
        _victims[key] = threat.build_victim(spec, digits, defense)
    return threat, _victims[key]


def observe(threat, victim, defense, flags="data_enhanced", images=IMAGES):
    x, y = victim.data.victims(images)
    return threat.observe(victim, x, y, defense, knowledge_flags(flags), seed=3, client_id=1, round=0)


# ------------------------------------------------------------------------------------------ defenses
@pytest.mark.parametrize("name, threat_name", pairs(DEFENSES))
def test_defense_shapes_gradient_flow_and_determinism(name, threat_name, digits):
    cls = DEFENSES.get(name)
    defense = cls.from_options({}, "defense.options")
    threat, victim = victim_for(threat_name, defense, digits)
    plain, _ = observe(threat, victim, NoDefense())
    observation, _ = observe(threat, victim, defense)
    shapes = [t.shape for t in plain.shared]
    assert [t.shape for t in observation.decoded] == shapes, "decode must return one tensor per shared parameter"
    assert all(torch.isfinite(t).all() for t in observation.shared)
    assert observation.public["bytes_sent"] > 0

    # gradient flow: a trial update (another batch's true update) through the attacker's simulation
    other, _ = observe(threat, victim, NoDefense(), images=[2, 3])
    trial = [t.detach().clone().requires_grad_(True) for t in other.shared]
    simulated = defense.simulate(trial, observation)
    assert [t.shape for t in simulated] == [t.shape for t in observation.shared]
    weights = [torch.randn(t.shape, generator=torch.Generator().manual_seed(i)) for i, t in enumerate(simulated)]
    grads = torch.autograd.grad(sum((s * w).sum() for s, w in zip(simulated, weights)), trial, allow_unused=True)
    grads = [torch.zeros_like(t) if g is None else g for g, t in zip(grads, trial)]
    assert all(torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0, "simulate cuts the gradient: the adaptive attack cannot use it"

    # determinism: the same options, seed and context give the same observation
    again, _ = observe(threat, victim, cls.from_options({}, "defense.options"))
    assert all(torch.equal(a, b) for a, b in zip(observation.shared, again.shared))
    assert json.dumps(observation.public, sort_keys=True, default=str) == json.dumps(again.public, sort_keys=True, default=str)


@pytest.mark.parametrize("name", DEFENSES.names())
def test_defense_declarations(name):
    cls = DEFENSES.get(name)
    assert cls.applies_to and set(cls.applies_to) <= set(KINDS)
    assert any(threat_model_for(kind) for kind in cls.applies_to), "no registered threat model shares what it applies to"


# ------------------------------------------------------------------------------------------- attacks
@pytest.mark.parametrize("name, threat_name", pairs(ATTACKS))
def test_attack_shapes_and_determinism(name, threat_name, digits):
    setting = ATTACK_SETTINGS.get(name, {})
    defense = DEFENSES.get(setting.get("defense", "none")).from_options({}, "defense.options")
    threat, victim = victim_for(threat_name, defense, digits)
    images = IMAGES[:ATTACKS.get(name).max_images]  # an attack on one example at a time gets one
    attack = ATTACKS.get(name).from_options({}, "attack.options")
    flags = knowledge_flags(setting.get("knowledge", "data_enhanced"))
    sent = threat.sent_model(victim, attack, len(images), flags, seed=3)
    x, y = victim.data.victims(images)
    observation, knowledge = threat.observe(sent, x, y, defense, flags, seed=3, client_id=1, round=0)
    runs = [attack.reconstruct(observation, sent.model, knowledge, BUDGET, seed=5) for _ in range(2)]
    again = threat.sent_model(victim, attack, len(images), flags, seed=3)
    assert again.params.keys() == sent.params.keys() and all(torch.equal(again.params[k], v) for k, v in sent.params.items()), \
        "the same seed must give the same crafted model"
    first = runs[0]
    private = threat.private_input(victim.data.victims(images)[0])
    # the batch, or (an analytic attack's whole haul) more candidates than that, one label each
    assert first.images.shape[1:] == private.shape[1:] == knowledge.image_shape
    assert len(first.images) == len(images) or (attack.crafts_model and len(first.images) > len(images))
    assert torch.isfinite(first.images).all() and first.images.min() >= 0 and first.images.max() <= 1
    assert first.labels.shape == (len(first.images),)
    assert math.isfinite(first.gradient_loss)
    assert torch.equal(runs[0].images, runs[1].images), "the same seed must give the same reconstruction"


@pytest.mark.parametrize("name", ATTACKS.names())
def test_attack_declarations(name):
    cls = ATTACKS.get(name)
    assert cls.applies_to and set(cls.applies_to) <= set(KINDS)
    assert any(threat_model_for(kind, cls) for kind in cls.applies_to), "no registered threat model runs it"
    assert set(cls.budgets) <= set(PRESETS)
    assert cls.max_images is None or (isinstance(cls.max_images, int) and cls.max_images >= 1)
    for budget in cls.budgets.values():
        assert all(v is None or (isinstance(v, int) and v >= 1) for v in (budget.iterations, budget.restarts))


# ----------------------------------------------------------------------------------- options, all three
COMPONENTS = [pytest.param(registry, name, section, id=f"{section}-{name}")
              for registry, section in ((DEFENSES, "defense"), (ATTACKS, "attack"), (THREAT_MODELS, "threat_model"))
              for name in registry.names()]


def _build(registry, name, section, table):
    args = (PROTOCOLS.get(name, {}).get("training"),) if section == "threat_model" else ()
    return registry.get(name).from_options(table, f"{section}.options", *args)


@pytest.mark.parametrize("registry, name, section", COMPONENTS)
def test_describe_round_trips(registry, name, section):
    component = _build(registry, name, section, PROTOCOLS.get(name, {}).get("options", {}) if section == "threat_model" else {})
    described = component.describe()
    json.dumps(described)  # a config table: plain values only
    table = described["options"] if section == "threat_model" else described
    rebuilt = _build(registry, name, section, table)
    assert rebuilt.options == component.options
    assert rebuilt.describe() == described


@pytest.mark.parametrize("registry, name, section", COMPONENTS)
def test_every_bad_option_names_its_key(registry, name, section):
    cls = registry.get(name)
    fields = {f.name: f for f in dataclasses.fields(cls.options_type())}
    with pytest.raises(ConfigError, match=rf"^{section}\.options\.no_such_option: unknown key; allowed: "):
        _build(registry, name, section, {"no_such_option": 1})
    hints = typing.get_type_hints(cls.options_type())
    for key in fields:
        accepts = (hints[key], *typing.get_args(hints[key]))
        if not {dict, object, typing.Any} & set(accepts) and typing.get_origin(hints[key]) is not dict:
            with pytest.raises(ConfigError, match=rf"^{section}\.options\.{key}: "):
                _build(registry, name, section, {key: {"not": "a value"}})
        if fields[key].metadata.get("infinite"):
            continue
        sequence = typing.get_origin(hints[key]) in (list, tuple)
        if float in accepts:
            for bad in (math.inf, math.nan):
                with pytest.raises(ConfigError, match=rf"^{section}\.options\.{key}(\[0\])?: must be "):
                    _build(registry, name, section, {key: [bad] if sequence else bad})


def test_the_attacker_gets_the_protocol_without_the_hyperparameters_it_is_not_told(digits):
    threat, victim = victim_for("fedavg", NoDefense(), digits)
    _, told = observe(threat, victim, NoDefense(), "informed")
    _, untold = observe(threat, victim, NoDefense(), "eavesdropper")
    assert told.threat_model.training == threat.training and told.threat_model.name == "fedavg"
    assert untold.threat_model.training is None and untold.local_training is None
    assert threat.training is not None  # the attacker's view is a copy


class PlainAttack(Attack):
    """An attack plugin written the plain way: keyword options, one unannotated."""
    name = "plain-attack"

    def __init__(self, scale: float = 1.0, mode: str = "a", steps=3):
        super().__init__()
        self.scale, self.mode, self.steps = scale, mode, steps

    def reconstruct(self, observation, model, knowledge, budget, seed=0, progress=False):
        images = torch.full((knowledge.num_images, *knowledge.image_shape), 0.5 * self.scale)
        return Reconstruction(images, torch.zeros(knowledge.num_images, dtype=torch.long), [], 0.0)


def test_plain_keyword_components_get_options_from_their_signature():
    attack = PlainAttack.from_options({"scale": 2, "steps": "many"}, "attacks[0].options")
    assert (attack.scale, attack.mode, attack.steps) == (2.0, "a", "many")  # unannotated: the class checks it
    assert attack.describe() == {"scale": 2.0, "mode": "a", "steps": "many"}
    assert PlainAttack.from_options(attack.describe(), "attack.options").options == attack.options
    for table, message in [({"scale": "big"}, r"attacks\[0\]\.options\.scale: expected float, got 'big'"),
                           ({"mode": 1}, r"attacks\[0\]\.options\.mode: expected str"),
                           ({"scale": math.inf}, r"attacks\[0\]\.options\.scale: must be finite"),
                           ({"speed": 1}, r"attacks\[0\]\.options\.speed: unknown key; allowed: mode, scale, steps$")]:
        with pytest.raises(ConfigError, match=message):
            PlainAttack.from_options(table, "attacks[0].options")
