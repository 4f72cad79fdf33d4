"""The fast gradient-matching path (threat_models.fast_replay.fast_replay_model,
attacks.objective.FastGradientMatcher, the gradient tape and IG's restarts as one batch) must compute
the same objective and gradients as the plain path it replaces."""
import os
import subprocess
import sys

import pytest
import torch
from torch.func import functional_call

from fedleak.attacks.objective import FastGradientMatcher, GradientMatcher
from fedleak.threat_models.fast_replay import fast_replay_model
from fedleak.models.functional import cross_entropy
from fedleak.models.architectures import build_model


def _trial_gradients(model, params, buffers, x, y):
    p = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    grads = torch.autograd.grad(cross_entropy(functional_call(model, (p, buffers), (x,)), y), list(p.values()),
                                create_graph=True)
    distance = sum((g * g.detach().roll(1)).sum() for g in grads)  # any smooth function of the gradient
    return [g.detach() for g in grads], torch.autograd.grad(distance, x)[0]


def _float64_model(name, seed, **options):
    model = build_model(name, 10, (3, 32, 32), seed=seed, **options).double().eval()
    with torch.no_grad():  # non-trivial BN statistics, so folding has something to fold
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model


@pytest.mark.parametrize("name,options", [("convnet", {"width": 4}), ("resnet18", {"width": 4})])
def test_replay_module_matches_the_model_in_float64(name, options):
    model = _float64_model(name, seed=1, **options)
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
    from fedleak.defenses import NoDefense
    from fedleak.threat_models import THREAT_MODELS
    from fedleak.threat_models.knowledge import knowledge_flags
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


@pytest.mark.parametrize("name", ["resnet18", "convnet"])
def test_gradient_tape_matches_the_plain_matcher_in_float64(name):
    """The tape's records (implicit convolution weights at one restart; every parameter split per
    restart for restarts as one batch) give the plain matcher's cosine and image gradient exactly."""
    from fedleak.models.functional import loss_gradient
    from fedleak.threat_models.knowledge import AttackerKnowledge, knowledge_flags
    from fedleak.threat_models.base import FedSGD
    from fedleak.threat_models.observation import Observation

    model = _float64_model(name, seed=2, width=16)
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    g = torch.Generator().manual_seed(3)
    truth, y = torch.randn(2, 3, 32, 32, generator=g, dtype=torch.float64), torch.tensor([3, 7])
    shared = loss_gradient(model, params, buffers, truth, y)
    obs = Observation("fedsgd", "gradient", shared, list(params), params, buffers, 2)
    knowledge = AttackerKnowledge(knowledge_flags("informed"), 2, (3, 32, 32), 10, (0.0,) * 3, (1.0,) * 3, labels=y,
                                  threat_model=FedSGD())

    def plain(xr):
        xr = xr.clone().requires_grad_(True)
        value = GradientMatcher(obs, model, knowledge)(xr, y)
        return value.detach(), torch.autograd.grad(value, xr)[0]

    fast = FastGradientMatcher(obs, model, knowledge, implicit_weights=True)
    x = torch.randn(3, 2, 3, 32, 32, generator=g, dtype=torch.float64)
    one = x[0].clone().requires_grad_(True)
    value = fast(one, y)
    (grad,) = torch.autograd.grad(value, one)
    ref_value, ref_grad = plain(x[0])
    torch.testing.assert_close(value.detach(), ref_value, rtol=0, atol=1e-12)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-8, atol=1e-12)
    if name == "resnet18":  # its last stage has 4x4 maps: those weights were left implicit
        assert fast._layout[0] and all(n.startswith("layer4") for n in fast._layout[0])

    step = fast.batched_value_and_grad(y, lambda xr: 0.0 * xr.sum())
    grads, values = step(x)
    assert fast._taped  # every parameter was recorded per restart: no fallback to the loop
    torch.testing.assert_close(fast.batched_distance(y)(x), values, rtol=0, atol=1e-12)
    for r in range(3):
        ref_value, ref_grad = plain(x[r])
        torch.testing.assert_close(values[r], ref_value, rtol=0, atol=1e-12)
        torch.testing.assert_close(grads[r], ref_grad, rtol=1e-8, atol=1e-12)


def test_gradient_tape_falls_back_to_the_loop_for_layers_it_does_not_know(convnet_victim):
    from fedleak.defenses import NoDefense
    from fedleak.threat_models import THREAT_MODELS
    from fedleak.threat_models.knowledge import knowledge_flags
    x, y = convnet_victim.data.victims([0])
    obs, k = THREAT_MODELS.get("fedsgd")().observe(convnet_victim, x, y, NoDefense(), knowledge_flags("informed"))
    fast = FastGradientMatcher(obs, convnet_victim.model, k)
    import fedleak.threat_models.fast_replay as fr
    original = fr._Linear.apply
    fr._Linear.apply = lambda x, w, b: torch.nn.functional.linear(x, w, b)  # a layer that records nothing
    try:
        assert fast.batched_value_and_grad(y, lambda xr: 0.0)(torch.randn(2, 1, *x.shape[1:])) is None
        assert not fast._taped and fast.batched_value_and_grad(y, lambda xr: 0.0) is None
    finally:
        fr._Linear.apply = original


def test_bf16_replay_is_opt_in_close_to_float32_and_reported(convnet_victim):
    from fedleak.attacks import Budget, build_attack
    from fedleak.defenses import NoDefense
    from fedleak.core.errors import ConfigError
    from fedleak.threat_models import THREAT_MODELS
    from fedleak.threat_models.knowledge import knowledge_flags
    x, y = convnet_victim.data.victims([0])
    obs, k = THREAT_MODELS.get("fedsgd")().observe(convnet_victim, x, y, NoDefense(), knowledge_flags("informed"))
    trial = torch.randn(1, *x.shape[1:], generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    values, grads = [], []
    for precision in ("fp32", "bf16"):
        matcher = FastGradientMatcher(obs, convnet_victim.model, k, precision=precision)
        assert matcher.precision == precision
        value = matcher(trial, y)
        assert value.dtype == torch.float32
        values.append(value.detach())
        grads.append(torch.autograd.grad(value, trial)[0])
    # bfloat16 keeps 8 bits of mantissa: the distance agrees to ~1e-2. Its image gradient only roughly
    # (cosine 0.89 here): near 1 - cos = 2e-3 the gradient is what is left of g after its component along
    # the target, and g's rounding is a sizeable part of that. IG's PSNR cost: docs/performance.md.
    torch.testing.assert_close(values[1], values[0], rtol=2e-2, atol=1e-3)
    assert torch.nn.functional.cosine_similarity(grads[0].flatten(), grads[1].flatten(), dim=0) > 0.8

    for restarts in (1, 2):  # one restart, and restarts as one batch
        rec = build_attack("ig", precision="bf16").reconstruct(obs, convnet_victim.model, k,
                                                               Budget(iterations=2, restarts=restarts))
        assert rec.extras["precision"] == "bf16" and rec.images.dtype == torch.float32
        assert len(rec.restart_losses) == restarts and all(0 <= v <= 2 for v in rec.restart_losses)
    with pytest.raises(ConfigError, match="precision"):
        build_attack("ig", precision="fp8")


def test_bf16_falls_back_to_float32_where_the_fast_replay_cannot_run(digits):
    from fedleak.defenses import NoDefense
    from fedleak.threat_models import THREAT_MODELS
    from fedleak.threat_models.knowledge import knowledge_flags
    from fedleak.threat_models.victim import VictimSpec, build_victim
    victim = build_victim(VictimSpec(model="mlp", options={"width": 16, "depth": 1}), digits)
    x, y = digits.victims([0])
    obs, k = THREAT_MODELS.get("fedsgd")().observe(victim, x, y, NoDefense(), knowledge_flags("informed"))
    with pytest.warns(UserWarning, match="float32"):
        matcher = FastGradientMatcher(obs, victim.model, k, precision="bf16")
    assert matcher.precision == "fp32" and not matcher.fast


def test_precision_auto_takes_bf16_only_where_the_cpu_has_it(monkeypatch, caplog):
    """An AVX2-only CPU emulates bfloat16 (measured 10-30x slower than float32): `auto` runs float32
    there with a note, and an explicit bf16 is kept with one warning per process."""
    import warnings

    from fedleak.attacks import precision as p
    amd_avx512 = frozenset({"avx2", "avx512f", "avx512_bf16"})
    assert p.cpu_bf16_native("AVX512", amd_avx512)
    assert p.cpu_bf16_native("AMX", frozenset({"amx_bf16", "amx_tile"}))
    assert not p.cpu_bf16_native("AVX512", frozenset({"avx2", "avx512f"}))  # AVX-512 without its bf16 extension
    assert not p.cpu_bf16_native("AVX2", amd_avx512)  # ATEN_CPU_CAPABILITY=avx2: the AVX-512 kernels are not used
    assert not p.cpu_bf16_native("DEFAULT", None, probe_ratio=0.5)
    assert p.cpu_bf16_native("AVX512", None, probe_ratio=0.8) and not p.cpu_bf16_native("AVX512", None, 3.0)
    assert p.choose_precision("auto", "cpu", True) == ("bf16", None)
    chosen, note = p.choose_precision("auto", "cpu", False)
    assert chosen == "fp32" and "float32" in note and "\n" not in note
    assert p.choose_precision("fp32", "cpu", True) == ("fp32", None)
    chosen, warning = p.choose_precision("bf16", "cpu", False)
    assert chosen == "bf16" and "slower" in warning

    monkeypatch.setattr(p, "native_bf16", lambda device_type: False)
    monkeypatch.setattr(p, "_said", set())
    with caplog.at_level("INFO", logger="fedleak"):
        assert p.resolve_precision("auto") == "fp32" and p.resolve_precision("auto") == "fp32"
    assert [r.getMessage() for r in caplog.records].count(note) == 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert p.resolve_precision("bf16") == "bf16" and p.resolve_precision("bf16") == "bf16"
    assert len(caught) == 1 and "slower" in str(caught[0].message)
    from fedleak.attacks import build_attack
    build_attack("ig", precision="auto")  # a valid option


def test_precision_auto_reads_an_avx2_capped_cpu_as_without_bf16():
    """The machine itself, capped to AVX2 as ATen and oneDNN allow: `auto` picks float32."""
    code = ("import torch; from fedleak.attacks.precision import native_bf16, resolve_precision; "
            "print(torch.backends.cpu.get_cpu_capability(), native_bf16('cpu'), resolve_precision('auto'))")
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "DNNL_MAX_CPU_ISA": "AVX2"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["AVX2", "False", "fp32"]
