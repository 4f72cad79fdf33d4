"""fedleak's hot paths under pytest-benchmark, compared against benchmarks/baseline.json in CI:

    python -m pytest benchmarks --benchmark-enable --benchmark-compare=benchmarks/baseline.json \
        --benchmark-compare-fail=median:50%
    python -m pytest benchmarks --benchmark-enable --benchmark-json=benchmarks/baseline.json  # new baseline

Rounds are few (an IG round is seconds on a loaded 2-core runner); the generous median threshold
is for a shared machine, where only large regressions are signal."""
import pytest
import torch

IG_ITERATIONS = 8


def _ig(benchmark, case, restarts=1, precision="fp32"):
    case.attack(2, restarts, precision=precision)  # warm-up: fx trace, oneDNN primitives
    rec = benchmark.pedantic(case.attack, args=(IG_ITERATIONS, restarts), kwargs={"precision": precision},
                             rounds=3, iterations=1)
    benchmark.extra_info["s_per_iteration"] = benchmark.stats.stats.median / IG_ITERATIONS
    return rec


def test_ig_convnet(benchmark, convnet_case):
    rec = _ig(benchmark, convnet_case)
    assert rec.loss_trace[-1] < rec.loss_trace[0]


def test_ig_resnet18(benchmark, resnet18_case):
    rec = _ig(benchmark, resnet18_case)
    assert rec.loss_trace[-1] < rec.loss_trace[0]


def test_ig_convnet_bf16(benchmark, convnet_case):
    rec = _ig(benchmark, convnet_case, precision="bf16")
    assert rec.extras["precision"] == "bf16" and rec.loss_trace[-1] < rec.loss_trace[0]


def test_ig_resnet18_bf16(benchmark, resnet18_case):
    rec = _ig(benchmark, resnet18_case, precision="bf16")
    assert rec.extras["precision"] == "bf16" and rec.loss_trace[-1] < rec.loss_trace[0]


def test_ig_convnet_8_restarts(benchmark, convnet_case):
    rec = _ig(benchmark, convnet_case, restarts=8)
    assert len(rec.restart_losses) == 8


def test_ig_resnet18_8_restarts(benchmark, resnet18_case):
    rec = _ig(benchmark, resnet18_case, restarts=8)
    assert len(rec.restart_losses) == 8


@pytest.fixture(scope="module")
def image_pairs():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(256, 3, 32, 32, generator=g)
    return x, (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1)


def test_ssim_256(benchmark, image_pairs):
    from fedleak.metrics.image import ssim
    assert benchmark(ssim, *image_pairs).shape == (256,)


def test_psnr_256(benchmark, image_pairs):
    from fedleak.metrics.image import psnr
    assert benchmark(psnr, *image_pairs).shape == (256,)


def test_lpips_256(benchmark, image_pairs):
    from fedleak.metrics.image import lpips_distance
    with torch.no_grad():
        lpips_distance(*image_pairs)
        assert benchmark(lpips_distance, *image_pairs).shape == (256,)


def test_ssim_256_skimage_reference(benchmark, image_pairs):
    """The reference loop, kept in the suite so a saved run shows both sides."""
    from skimage.metrics import structural_similarity
    x, y = (t.double().numpy() for t in image_pairs)

    def loop():
        return [structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                      data_range=1.0, channel_axis=0) for a, b in zip(x, y)]
    assert len(benchmark.pedantic(loop, rounds=3, iterations=1)) == 256
