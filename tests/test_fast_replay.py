"""The fast gradient-matching path (threat_models.functional.fast_replay_model,
attacks.objective.FastGradientMatcher, IG's vmapped restarts) must compute the same objective
and gradients as the plain path it replaces."""
import pytest
import torch
from torch.func import functional_call

from attacks.objective import FastGradientMatcher, GradientMatcher
from threat_models.functional import cross_entropy, fast_replay_model
from threat_models.models import build_model


def _trial_gradients(model, params, buffers, x, y):
    p = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    grads = torch.autograd.grad(cross_entropy(functional_call(model, (p, buffers), (x,)), y), list(p.values()),
                                create_graph=True)
    distance = sum((g * g.detach().roll(1)).sum() for g in grads)  # any smooth function of the gradient
    return [g.detach() for g in grads], torch.autograd.grad(distance, x)[0]


@pytest.mark.parametrize("name,options", [("convnet", {"width": 4}), ("resnet18", {"width": 4})])
def test_replay_module_matches_the_model_in_float64(name, options):
    model = build_model(name, 8, (3, 32, 32), seed=1, **options).double().eval()
    with torch.no_grad():  # non-trivial BN statistics, so folding has something to fold
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    fast = fast_replay_model(model)
    assert fast is not model
    params, buffers = dict(model.named_parameters()), dict(model.named_buffers())
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([1, 5])
    ref_grads, ref_x = _trial_gradients(model, params, buffers, x, y)
    grads, gx = _trial_gradients(fast, params, buffers, x, y)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(gx, ref_x, rtol=1e-9, atol=1e-12)


def test_replay_module_leaves_unsupported_models_alone():
    mlp = build_model("mlp", 4, (1, 8, 8), width=16, depth=1).eval()
    assert fast_replay_model(mlp) is mlp  # MaskDropout: masks are state the trace would freeze
    convnet = build_model("convnet", 4, (3, 16, 16), width=2)
    assert fast_replay_model(convnet.train()) is convnet  # train-mode BN uses batch statistics


def test_fast_matcher_value_and_gradient_match_the_plain_matcher(convnet_victim):
    from defenses import NoDefense
    from threat_models import THREAT_MODELS
    from threat_models.knowledge import knowledge_flags
    x, y = convnet_victim.data.victims([0, 1])
    obs, k = THREAT_MODELS.get("fedsgd")().observe(convnet_victim, x, y, NoDefense(), knowledge_flags("informed"))
    g = torch.Generator().manual_seed(0)
    trial = torch.randn(2, *x.shape[1:], generator=g).requires_grad_(True)
    plain = GradientMatcher(obs, convnet_victim.model, k)(trial, y)
    (plain_grad,) = torch.autograd.grad(plain, trial)
    fast = FastGradientMatcher(obs, convnet_victim.model, k)
    assert fast.fast
    value = fast(trial, y)
    (grad,) = torch.autograd.grad(value, trial)
    # 1 - cos near 0: float32 sums over all gradient entries in a different order differ by ~1e-6
    torch.testing.assert_close(value, plain, rtol=0, atol=1e-5)
    torch.testing.assert_close(grad, plain_grad, rtol=1e-4, atol=1e-5 * plain_grad.abs().max().item())

    restarts = torch.randn(3, 2, *x.shape[1:], generator=g)
    batched = fast.batched_value_and_grad(y, lambda xr: 0.0 * xr.sum())
    grads, values = batched(restarts)
    for r in range(3):
        xr = restarts[r].clone().requires_grad_(True)
        v = GradientMatcher(obs, convnet_victim.model, k)(xr, y)
        (g,) = torch.autograd.grad(v, xr)
        torch.testing.assert_close(values[r], v.detach(), rtol=0, atol=1e-5)
        torch.testing.assert_close(grads[r], g, rtol=1e-4, atol=1e-5 * g.abs().max().item())
