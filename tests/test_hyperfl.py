"""HyperFL protocol (threat_models/hyperfl.py) and its adaptive attack (attacks/hyperfl_leak.py).

Small hypernetworks (embedding 8, hidden 16) keep every test a few seconds on CPU; the target CNN
is the real one. `head_epochs=0` where a gradient must be non-zero: on an untrained HyperFL net
one head step on a single image already drives its loss to exactly 0 in float32."""
import pytest
import torch
import torch.nn.functional as F

from fedleak.attacks.base import Budget
from fedleak.attacks.hyperfl_leak import HyperFLLeak, data_part, leak_target, leaked_trunk_features
from fedleak.attacks.hyperfl_replay import factored_cosine_distance, factored_phase
from fedleak.defenses import NoDefense, build_defense
from fedleak.harness.run.config import config_from_dict
from fedleak.core.errors import ConfigError
from fedleak.harness.run.runner import run_attack
from fedleak.threat_models import build_threat_model
from fedleak.threat_models.hyperfl import HyperFL
from fedleak.threat_models.hyperfl_protocol import (ClientState, HyperFLProtocol, client_round, hypernetwork_phase,
                                                    initial_client_state, train_head)
from fedleak.threat_models.hypernetwork import PHI_PREFIX, build_hyperfl_net
from fedleak.threat_models.knowledge import knowledge_flags
from fedleak.models.functional import LocalTraining
from fedleak.threat_models.observation import Observation
from fedleak.threat_models.victim import VictimSpec

SMALL = dict(embedding_dim=8, hidden_dim=16)


@pytest.mark.parametrize("shape, flat", [((1, 28, 28), 800), ((3, 32, 32), 576)])
def test_hypernetwork_generates_every_target_tensor(shape, flat):
    net = build_hyperfl_net(shape, 10, **SMALL)
    theta = net.generate(net.public_phi(), net.embedding)
    targets = dict(net.extractor.named_parameters())
    assert net.extractor.fc1.in_features == flat  # the paper's FC 800→128 / 576→128
    assert set(theta) == set(targets) == {f"{l}.{p}" for l in ["conv1", "conv2", "fc1"] + (["conv3"] if shape[0] == 3 else [])
                                          for p in ("weight", "bias")}
    for name, t in theta.items():
        assert t.shape == targets[name].shape
        head = net.hypernetwork.heads[name.replace(".", "_")]
        assert head.in_features == 16 and head.out_features == t.numel()  # one Linear per tensor
    assert all(n.startswith(PHI_PREFIX) for n in net.public_phi())
    assert net(torch.randn(2, *shape)).shape == (2, 10)


def _victim(digits, **protocol):
    threat = HyperFL(LocalTraining(lr=0.02, epochs=1), **{**SMALL, **protocol})
    return threat, threat.build_victim(VictimSpec(clients=2), digits, NoDefense())


def test_only_the_hypernetwork_update_is_shared(digits):
    threat, victim = _victim(digits, head_epochs=0)
    x, y = digits.victims([0])
    observation, knowledge = threat.observe(victim, x, y, NoDefense(), knowledge_flags("data_enhanced"), client_id=1)
    phi_names = [n for n, _ in victim.model.named_parameters() if n.startswith(PHI_PREFIX)]
    assert observation.param_names == phi_names == list(observation.global_params)
    assert [t.shape for t in observation.shared] == [victim.params[n].shape for n in phi_names]
    assert observation.kind == "hypernetwork-update" and observation.buffers == {}
    private = victim.client(1)
    sent = [*observation.shared, *observation.global_params.values(), *observation.decoded]
    for secret in (private.embedding, *private.head.values()):
        assert not any(t.shape == secret.shape and torch.allclose(t, secret) for t in sent)
    # the architecture object the attacker holds carries only the public initialisation
    assert not torch.allclose(victim.model.embedding, private.embedding)
    assert not torch.allclose(victim.model.head.weight, private.head["weight"])
    assert any(u.abs().max() > 0 for u in observation.shared)


def _one_step(dtype, clip_norm):
    from fedleak.data.datasets import load_dataset
    data = load_dataset("digits")
    protocol = HyperFLProtocol(**SMALL, head_epochs=0, clip_norm=clip_norm)
    net = build_hyperfl_net(data.shape, 10, **SMALL).to(dtype)
    net.protocol = protocol
    phi = net.public_phi()
    state = initial_client_state(net, seed=5)
    state = ClientState(state.embedding.to(dtype), {k: v.to(dtype) for k, v in state.head.items()})
    m, s = torch.tensor(data.mean).view(-1, 1, 1), torch.tensor(data.std).view(-1, 1, 1)
    x, y = ((data.victim_images[:1] - m) / s).to(dtype), data.victim_labels[:1]
    training = LocalTraining(lr=0.02, epochs=1)
    update, _ = client_round(net, phi, state, x, y, protocol, training)
    observation = Observation("hyperfl", "update", update, list(phi), phi, {}, 1)
    leak = leak_target(net, phi, data_part(observation, net, training))
    theta = {k: t.detach().requires_grad_(True) for k, t in net.generate(phi, state.embedding).items()}
    loss = F.cross_entropy(net.logits(theta, state.head, x), y)
    true_gradient = dict(zip(theta, torch.autograd.grad(loss, list(theta.values()))))
    return net, phi, state, x, leak, theta, true_gradient


@pytest.mark.parametrize("dtype, tolerance, gradient_tolerance", [(torch.float64, 1e-9, 1e-9), (torch.float32, 1e-4, 1e-2)])
def test_one_step_leak_recovers_theta_and_its_gradient_exactly(dtype, tolerance, gradient_tolerance):
    net, phi, state, x, leak, theta, true_gradient = _one_step(dtype, clip_norm=1e9)
    torch.testing.assert_close(leak.hidden, net.hidden_code(phi, state.embedding), rtol=tolerance, atol=tolerance * 1e-2)
    relative = lambda got, want: float((got - want).norm() / want.norm())
    for name in theta:
        assert relative(leak.theta[name], theta[name].detach()) < tolerance, name
    flat = lambda d: torch.cat([d[k].flatten() for k in theta])
    # float32: the client's own φ₁ = φ₀ − lr·(g + wd·φ₀) rounds away digits of the small g against
    # φ₀ (measured 2e-3 relative), while θ = W a + b stays at 3e-5
    assert relative(flat(leak.gradient), flat(true_gradient)) < gradient_tolerance
    assert leak.residual < gradient_tolerance
    # B=1: the conv features entering fc1 follow exactly from the fc1 update
    features = net.trunk_features({k: t.detach() for k, t in theta.items()}, x)
    assert relative(leaked_trunk_features(leak, 1), features) < gradient_tolerance


def test_clipped_one_step_leak_is_exact_up_to_the_clip_factor():
    net, phi, state, x, leak, theta, true_gradient = _one_step(torch.float64, clip_norm=1e-3)
    flat = lambda d: torch.cat([d[k].flatten() for k in theta])
    got, want = flat(leak.gradient), flat(true_gradient)
    assert got.norm() < want.norm() * 0.1  # clipping was active
    assert F.cosine_similarity(got, want, dim=0) > 1 - 1e-9
    for name in theta:
        torch.testing.assert_close(leak.theta[name], theta[name].detach(), rtol=0, atol=1e-9)


def test_unrolled_replay_with_the_true_private_state_reproduces_the_update(digits):
    """The multi-step attack's model of the client is the client: same Δφ from the same state."""
    threat, victim = _victim(digits)
    victim.to(torch.float64)  # exact means exact: in float32 the two paths differ by their summation order
    training = LocalTraining(lr=0.02, epochs=3)
    x, y = digits.victims([3])
    x = victim.normalise(x).double()
    state = victim.client(0)
    update, _ = client_round(victim.model, victim.params, state, x, y, threat.protocol, training)
    head = train_head(victim.model, victim.params, state, x, y, threat.protocol, training)
    replayed, _ = hypernetwork_phase(victim.model, victim.params, state.embedding.clone().requires_grad_(True), head, x, y,
                                     threat.protocol, training, create_graph=True)
    for (k, p), u in zip(victim.params.items(), update):
        torch.testing.assert_close(replayed[k].detach() - p, u, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("clip_norm", [1e9, 1e-3])
def test_factored_replay_equals_the_dense_one(clip_norm):
    """attacks/hyperfl_replay.py keeps the head weights as rank-1 factors; its data part of Δφ
    (and the cosine computed from the factors) must equal the client's, clipping included."""
    from fedleak.data.datasets import load_dataset
    data = load_dataset("digits")
    protocol = HyperFLProtocol(**SMALL, head_epochs=0, clip_norm=clip_norm)
    net = build_hyperfl_net(data.shape, 10, **SMALL).double()
    net.protocol = protocol
    phi = net.public_phi()
    state = initial_client_state(net, seed=5)
    state = ClientState(state.embedding.double(), {k: v.double() for k, v in state.head.items()})
    x, y = data.victim_images[:2].double(), data.victim_labels[:2]
    training = LocalTraining(lr=0.02, epochs=2, batch_size=1)
    update, _ = client_round(net, phi, state, x, y, protocol, training)
    observed = data_part(Observation("hyperfl", "update", update, list(phi), phi, {}, 2), net, training)
    trial = factored_phase(net, phi, state.embedding, state.head, x, y, protocol, training)
    dense = trial.densify()
    for k in observed:
        torch.testing.assert_close(dense[k].detach(), observed[k], rtol=1e-6, atol=1e-12)
    assert factored_cosine_distance(trial, observed).item() < 1e-6
    other = factored_phase(net, phi, state.embedding + 0.5, state.head, x, y, protocol, training)
    flat = lambda d: torch.cat([d[k].flatten() for k in observed])
    expected = 1 - F.cosine_similarity(flat(other.densify()), flat(observed), dim=0)
    torch.testing.assert_close(factored_cosine_distance(other, observed), expected)


def test_hyperfl_defense_needs_the_hyperfl_protocol():
    with pytest.raises(ConfigError, match="hyperfl"):
        build_threat_model("fedsgd", LocalTraining(), build_defense("hyperfl"))
    assert build_threat_model("hyperfl", LocalTraining(), build_defense("hyperfl"), head_epochs=0).protocol.head_epochs == 0
    with pytest.raises(ConfigError, match="embedding_dim"):
        HyperFLProtocol(embedding_dim=0)


def test_leak_attack_runs_through_the_runner(tmp_path):
    config = config_from_dict({
        "data": {"num_victims": 1}, "victim": {"clients": 2},
        "threat_model": {"name": "hyperfl", "knowledge": "informed", "lr": 0.02, "options": {**SMALL, "head_epochs": 0}},
        "defense": {"name": "hyperfl"}, "attack": {"name": "hyperfl-leak", "iterations": 5},
        "output": str(tmp_path)})
    rows = run_attack(config).rows
    assert len(rows) == 1 and rows["threat_model"][0] == "hyperfl" and rows["model"][0] == "hyperfl-cnn"
    assert rows["psnr"][0] > 0


def test_leak_attack_picks_one_step_mode_and_descends(digits):
    """A one-step update is recognised as such (rank-1 heads) and the joint image+head fit descends."""
    threat, victim = _victim(digits, head_epochs=0)
    x, y = digits.victims([0])
    observation, knowledge = threat.observe(victim, x, y, NoDefense(), knowledge_flags("informed"))
    attack = HyperFLLeak(prior="none")
    result = attack.reconstruct(observation, victim.model, knowledge, Budget(25, 1), seed=0)
    assert result.extras["mode"] == "one-step" and result.extras["rank1_residual"] < 1e-3
    assert result.images.shape == x.shape and result.loss_trace[-1] < result.loss_trace[0]
