import copy

import pytest
import torch

from fedleak.attacks.objective import GradientMatcher
from fedleak.defenses import NoDefense
from fedleak.core.errors import ConfigError, NumericalError
from fedleak.threat_models import THREAT_MODELS
from fedleak.threat_models.knowledge import knowledge_flags
from fedleak.models.functional import LocalTraining
from fedleak.threat_models.observation import Observation


def batch(victim, n=2):
    x, y = victim.data.victims(list(range(n)))
    return x, y


def test_fedsgd_shares_the_mean_gradient(lenet_victim):
    x, y = batch(lenet_victim)
    obs, _ = THREAT_MODELS.create("fedsgd").observe(lenet_victim, x, y, NoDefense(), knowledge_flags("informed"))
    model = lenet_victim.model
    model.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(lenet_victim.normalise(x)), y)
    expected = torch.autograd.grad(loss, list(model.parameters()))
    assert obs.kind == "gradient" and obs.num_examples == 2
    for got, want in zip(obs.shared, expected):
        torch.testing.assert_close(got, want)


def sgd_by_hand(model, x, y):
    """torch.optim.SGD over 2 epochs of the batches (0, 1) and (2, 3): the FedAvg client as users write it."""
    start = [p.detach().clone() for p in model.parameters()]
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):
        for i in (0, 2):
            optimiser.zero_grad()
            torch.nn.functional.cross_entropy(model(x[i:i + 2]), y[i:i + 2]).backward()
            optimiser.step()
    return [p.detach() - p0 for p, p0 in zip(model.parameters(), start)]


def test_fedavg_shares_the_sgd_difference(lenet_victim):
    x, y = batch(lenet_victim, 4)
    training = LocalTraining(lr=0.1, epochs=2, batch_size=2)
    threat = THREAT_MODELS.create("fedavg", training)
    obs, _ = threat.observe(lenet_victim, x, y, NoDefense(), knowledge_flags("informed"))
    assert training.steps(4) == 4
    # the observation is the client's update: float32, a loose smoke check (summation order differs)
    for got, want in zip(obs.shared, sgd_by_hand(copy.deepcopy(lenet_victim.model), lenet_victim.normalise(x), y)):
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-5)
    # exactness in float64, where the two agree to rounding whatever the thread count or library version
    model = copy.deepcopy(lenet_victim.model).double()
    x64 = lenet_victim.normalise(x).double()
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    got = threat.client_update(model, params, {}, x64, y, NoDefense())
    for g, w in zip(got, sgd_by_hand(model, x64, y)):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("name", ["fedsgd", "fedavg"])
def test_informed_replay_of_the_true_batch_matches_exactly(lenet_victim, name):
    x, y = batch(lenet_victim)
    threat = THREAT_MODELS.get(name)(LocalTraining(lr=0.05, epochs=2))
    obs, knowledge = threat.observe(lenet_victim, x, y, NoDefense(), knowledge_flags("informed"))
    matcher = GradientMatcher(obs, lenet_victim.model, knowledge, "cosine")
    assert matcher(lenet_victim.normalise(x), y).item() < 1e-5
    assert matcher(torch.randn_like(x), y).item() > 1e-2


def test_knowledge_flags_gate_what_the_attacker_gets(lenet_victim):
    x, y = batch(lenet_victim)
    _, eaves = THREAT_MODELS.create("fedavg").observe(lenet_victim, x, y, NoDefense(), knowledge_flags("eavesdropper"))
    assert eaves.labels is None and eaves.local_training is None and eaves.auxiliary_images is None
    _, rich = THREAT_MODELS.create("fedavg").observe(lenet_victim, x, y, NoDefense(), knowledge_flags("data_enhanced"))
    assert torch.equal(rich.labels, y) and rich.local_training is not None and rich.auxiliary_images is not None
    custom = knowledge_flags({"preset": "eavesdropper", "labels": True})
    assert custom.labels and not custom.hyperparameters
    with pytest.raises(ConfigError, match="unknown flag 'colour'"):
        knowledge_flags({"colour": True})
    with pytest.raises(ConfigError, match="unknown preset"):
        knowledge_flags("omniscient")


def test_statistics_informed_gets_batch_norm_statistics(convnet_victim):
    x, y = batch(convnet_victim)
    _, k = THREAT_MODELS.create("fedsgd").observe(convnet_victim, x, y, NoDefense(), knowledge_flags("statistics_informed"))
    assert len(k.bn_statistics) == 8 and k.bn_statistics[0][0].shape == (8,)


def test_nan_in_an_update_is_refused(lenet_victim):
    x, y = batch(lenet_victim)
    obs, _ = THREAT_MODELS.create("fedsgd").observe(lenet_victim, x, y, NoDefense(), knowledge_flags("informed"))
    broken = [t.clone() for t in obs.shared]
    broken[2][0, 0, 0, 0] = float("nan")
    with pytest.raises(NumericalError, match="NaN in 'body.2.weight'"):
        Observation(obs.threat_model, obs.kind, broken, obs.param_names, obs.global_params, obs.buffers, 2)


def test_trained_victim_is_cached_and_better_than_chance(digits, tmp_path, monkeypatch):
    from fedleak.threat_models.victim import VictimSpec, build_victim
    monkeypatch.setenv("FEDLEAK_CACHE", str(tmp_path))
    spec = VictimSpec(model="mlp", options={"width": 32, "depth": 1}, rounds=2, clients=4, local_lr=0.1)
    trained = build_victim(spec, digits)
    assert trained.accuracy > 0.5
    cached = list((tmp_path / "victims").glob("*.pt"))
    assert len(cached) == 1
    again = build_victim(spec, digits)
    assert again.accuracy == trained.accuracy
    for k in trained.params:
        assert torch.equal(again.params[k], trained.params[k])
