"""Local training as real clients run it (models.functional.local_update): torch.optim's SGD with
momentum/Nesterov/weight decay/dampening, Adam and AdamW, several epochs, a last partial or dropped
batch, a shuffled order, train-mode BatchNorm — each checked against torch.optim itself; what the
attacker is told of it (knowledge), and whether its replay is exact (ThreatModel.replay_error)."""
import copy

import pytest
import torch

from fedleak.core.errors import ConfigError
from fedleak.defenses import NoDefense
from fedleak.harness.run.config import config_from_dict
from fedleak.models.architectures import build_model
from fedleak.models.functional import LocalTraining, local_update, loss_gradient, shuffled_orders
from fedleak.threat_models import THREAT_MODELS, build_threat_model
from fedleak.threat_models.base import REPLAY_EXACT_BELOW
from fedleak.threat_models.knowledge import knowledge_flags

TRAININGS = {
    "sgd-momentum": LocalTraining(0.1, 2, 2, momentum=0.9),
    "sgd-nesterov-decay": LocalTraining(0.1, 2, 2, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "sgd-dampening-drop-last": LocalTraining(0.1, 3, 2, momentum=0.5, dampening=0.1, drop_last=True),
    "adam": LocalTraining(0.01, 2, 2, optimizer="adam", weight_decay=1e-4),
    "adamw": LocalTraining(0.01, 2, 2, optimizer="adamw", weight_decay=0.1),
    "shuffled-train-mode-bn": LocalTraining(0.1, 2, 2, momentum=0.9, shuffle=True, train_mode=True),
}


def torch_client(model, x, y, t: LocalTraining, orders):
    """The client as a PyTorch user writes it: model.train()/eval(), an optimiser, a batch loop."""
    model = copy.deepcopy(model).train(t.train_mode)
    make = {"sgd": lambda p: torch.optim.SGD(p, lr=t.lr, momentum=t.momentum, dampening=t.dampening, nesterov=t.nesterov,
                                             weight_decay=t.weight_decay),
            "adam": lambda p: torch.optim.Adam(p, lr=t.lr, betas=(t.beta1, t.beta2), eps=t.eps, weight_decay=t.weight_decay),
            "adamw": lambda p: torch.optim.AdamW(p, lr=t.lr, betas=(t.beta1, t.beta2), eps=t.eps, weight_decay=t.weight_decay)}
    optimiser = make[t.optimizer](model.parameters())
    start = [p.detach().clone() for p in model.parameters()]
    for epoch in range(t.epochs):
        order = orders[epoch] if orders is not None else torch.arange(len(x))
        for i in range(0, len(order), t.batch_size):
            index = order[i:i + t.batch_size]
            if t.drop_last and len(index) < t.batch_size:
                continue
            optimiser.zero_grad()
            torch.nn.functional.cross_entropy(model(x[index]), y[index]).backward()
            optimiser.step()
    return [p.detach() - p0 for p, p0 in zip(model.parameters(), start)]


def relative(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    difference = sum(((u.detach() - v) ** 2).sum() for u, v in zip(a, b)).sqrt()
    return float(difference / sum((v ** 2).sum() for v in b).sqrt())


# Exactness is checked in float64, where the replay and torch.optim agree to rounding (~1e-15): in float32
# the two sum in different orders and the gap moves with thread scheduling and library version (6e-5 and
# 2e-4 on one clean clone, 2e-6 on another), so a float32 tolerance tight enough to catch a wrong replay
# flakes, and one loose enough not to flake catches little. float32 keeps a loose smoke check.
EXACT, FLOAT32_SMOKE = 1e-10, 1e-3


def client_and_replay(digits, training, dtype):
    """torch.optim's client, fedleak's update and fedleak's differentiable replay, for 5 images in
    batches of 2 (a last partial batch every epoch), all in `dtype`."""
    model = build_model("convnet", 10, digits.shape, width=8, seed=0).to(dtype).eval()  # BatchNorm: train mode matters
    x, y = digits.victims(list(range(5)))
    x = ((x - 0.13) / 0.31).to(dtype)
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    orders = shuffled_orders(5, training, seed=3)
    assert (orders is not None) == training.shuffle
    expected = torch_client(model, x, y, training, orders)
    update = local_update(model, params, buffers, x, y, training, orders=orders)
    replayed = local_update(model, params, buffers, x, y, training, create_graph=True, orders=orders)
    assert all(torch.equal(buffers[k], v) for k, v in model.named_buffers())  # running stats updated on copies only
    assert not model.training and all(not m.training for m in model.modules())
    return expected, update, replayed


@pytest.mark.parametrize("name", TRAININGS)
def test_local_update_is_torch_optim_step_for_step(digits, name):
    expected, update, replayed = client_and_replay(digits, TRAININGS[name], torch.float64)
    assert relative(update, expected) < EXACT
    assert relative(replayed, expected) < EXACT
    expected, update, replayed = client_and_replay(digits, TRAININGS[name], torch.float32)
    assert relative(update, expected) < FLOAT32_SMOKE and relative(replayed, expected) < FLOAT32_SMOKE


def test_plain_sgd_is_fedleaks_original_loop_bit_for_bit(digits):
    """The options default to fedleak's original client: the same arithmetic, so every stored result holds."""
    model = build_model("lenet", 10, digits.shape, seed=0).eval()
    x, y = digits.victims(list(range(5)))
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    training = LocalTraining(lr=0.1, epochs=2, batch_size=2)
    current = dict(params)
    for _ in range(2):
        for start in range(0, 5, 2):
            grads = loss_gradient(model, current, {}, x[start:start + 2], y[start:start + 2])
            current = {k: (current[k] - 0.1 * g).detach() for k, g in zip(params, grads)}
    for got, want in zip(local_update(model, params, {}, x, y, training), [current[k] - params[k] for k in params]):
        assert torch.equal(got, want)


def test_adam_replay_stays_differentiable_through_dead_units(digits):
    """A parameter whose gradient is exactly 0 at every step has Adam's second moment 0: sqrt's derivative
    there must not turn the trial image's gradient into NaN."""
    # its own seed: drawn from the global RNG, the four live units were sometimes all off too (grad 0), by test order
    generator = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 8), torch.nn.ReLU(), torch.nn.Linear(8, 10))
    with torch.no_grad():
        for p in model.parameters():
            p.uniform_(-0.1, 0.1, generator=generator)
        model[1].bias[:4] = -1e4  # four hidden units never fire
        model[1].bias[4:] = 1.0   # and four always do: the image's gradient is not 0
    params = {k: v.detach() for k, v in model.named_parameters()}
    x = torch.rand(2, 1, 28, 28, generator=generator).requires_grad_(True)
    update = local_update(model, params, {}, x, torch.tensor([1, 2]), LocalTraining(0.01, 2, 1, optimizer="adam"),
                          create_graph=True)
    (grad,) = torch.autograd.grad(sum(u.pow(2).sum() for u in update), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_options_are_checked_on_load_with_the_key_named():
    base = {"threat_model": {"name": "fedavg", "lr": 0.1}}
    for key, value, message in [("momentum", 1.5, "threat_model.momentum: must be in"),
                                ("optimizer", "rmsprop", "threat_model.optimizer: expected one of"),
                                ("nesterov", True, "threat_model.nesterov: needs momentum"),
                                ("shuffle", "yes", "threat_model.shuffle: expected bool")]:
        with pytest.raises(ConfigError, match=message):
            config_from_dict({"threat_model": {**base["threat_model"], key: value}})
    with pytest.raises(ConfigError, match="threat_model.momentum: an option of optimizer 'sgd'"):
        LocalTraining(optimizer="adam", momentum=0.9)
    config = config_from_dict({"threat_model": {**base["threat_model"], "momentum": 0.9, "shuffle": True}})
    assert config.threat_model.local_training() == LocalTraining(lr=0.1, momentum=0.9, shuffle=True)
    # a client that shares one gradient (or runs its own protocol) has no such loop to configure
    with pytest.raises(ConfigError, match="threat_model.momentum: the 'fedsgd' client does not run"):
        build_threat_model("fedsgd", LocalTraining(momentum=0.9))


def test_the_attacker_is_told_the_loop_and_the_optimiser_separately(lenet_victim):
    training = LocalTraining(0.1, 1, 2, momentum=0.9, shuffle=True)
    threat = THREAT_MODELS.get("fedavg")(training)
    x, y = lenet_victim.data.victims(list(range(4)))
    told = lambda spec: threat.observe(lenet_victim, x, y, NoDefense(), knowledge_flags(spec))[1].local_training
    assert told("informed") == training
    assert told({"preset": "informed", "optimizer": False}) == LocalTraining(0.1, 1, 2, shuffle=True)
    assert told("eavesdropper") is None
    with pytest.raises(ConfigError, match="knowledge.optimizer: needs hyperparameters"):
        knowledge_flags({"preset": "eavesdropper", "optimizer": True})


def test_replay_error_says_whether_the_replay_is_exact_for_this_client(lenet_victim):
    x, y = lenet_victim.data.victims(list(range(4)))
    x_norm = lenet_victim.normalise(x)
    v = lenet_victim

    def error(training, knowledge, seed=0):
        threat = THREAT_MODELS.get("fedavg")(training)
        _, told = threat.observe(v, x, y, NoDefense(), knowledge_flags(knowledge), seed=seed)
        return threat.replay_error(v.model, v.params, v.buffers, x_norm, y, told, seed=seed)

    momentum = LocalTraining(0.1, 1, 2, momentum=0.9)
    assert error(momentum, "informed") < REPLAY_EXACT_BELOW
    assert error(momentum, {"preset": "informed", "optimizer": False}) > 1e-4  # momentum ignored
    assert error(LocalTraining(0.1, 1, 4), "eavesdropper") < REPLAY_EXACT_BELOW  # one full-batch step: −Δθ ∝ g
    shuffled = LocalTraining(0.1, 1, 2, momentum=0.9, shuffle=True)
    kept = [s for s in range(12) if torch.equal(shuffled_orders(4, shuffled, s)[0][:2].sort().values, torch.tensor([0, 1]))]
    moved = [s for s in range(12) if s not in kept]
    assert kept and moved  # some seeds keep the stored mini-batches, others do not
    assert error(shuffled, "informed", seed=moved[0]) > 1e-4   # the stored order is not the client's
    assert error(shuffled, "informed", seed=kept[0]) < REPLAY_EXACT_BELOW
    assert THREAT_MODELS.create("hyperfl").replay_error(None, {}, {}, x_norm, y, None) is None
