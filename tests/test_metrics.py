import pathlib

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from fedleak.metrics import image as metrics
from fedleak.core.errors import ConfigError, DataError

torch.set_num_threads(min(2, torch.get_num_threads()))

LPIPS_DATA = pathlib.Path(__file__).parent / "data" / "lpips"


def _random_pairs(channels, h, w, count, seed):
    """Independent pairs plus y = x + noise at several levels, so SSIM spans (0, 1)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(count, channels, h, w, generator=g)
    noise = torch.randn(count, channels, h, w, generator=g)
    level = torch.linspace(0.01, 0.5, count).view(-1, 1, 1, 1)
    y = (x + level * noise).clamp(0, 1)
    y[-3:] = torch.rand(3, channels, h, w, generator=g)
    return x, y


@pytest.mark.parametrize(
    "channels,h,w", [(1, 28, 28), (3, 32, 32), (1, 32, 32), (3, 28, 28), (3, 24, 40), (1, 17, 11)]
)
def test_psnr_ssim_match_skimage(channels, h, w):
    x, y = _random_pairs(channels, h, w, count=50, seed=h * w + channels)
    ours_psnr, ours_ssim = metrics.psnr(x, y), metrics.ssim(x, y)
    ref_psnr, ref_ssim = [], []
    for a, b in zip(x.double().numpy(), y.double().numpy()):
        ref_psnr.append(peak_signal_noise_ratio(a, b, data_range=1.0))
        ref_ssim.append(
            structural_similarity(
                a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                data_range=1.0, channel_axis=0,
            )
        )
    ref_psnr, ref_ssim = torch.tensor(ref_psnr), torch.tensor(ref_ssim)
    assert ref_ssim.max() - ref_ssim.min() > 0.5  # the pairs exercise a real range
    torch.testing.assert_close(ours_psnr.double(), ref_psnr, rtol=0, atol=1e-4)
    torch.testing.assert_close(ours_ssim.double(), ref_ssim, rtol=0, atol=1e-4)


def test_psnr_of_identical_images_is_finite():
    x = torch.rand(2, 3, 16, 16)
    assert torch.allclose(metrics.psnr(x, x), torch.full((2,), 100.0))
    assert torch.allclose(metrics.ssim(x, x), torch.ones(2))


def _load(name):
    rgb = np.asarray(Image.open(LPIPS_DATA / f"{name}.png").convert("RGB"), dtype=np.float32) / 255
    return torch.from_numpy(rgb).permute(2, 0, 1)[None]


def test_lpips_reproduces_official_example_distances():
    ref, p0, p1 = _load("ex_ref"), _load("ex_p0"), _load("ex_p1")
    d = metrics.lpips_distance(torch.cat([ref, ref]), torch.cat([p0, p1]))
    assert round(d[0].item(), 3) == 0.722
    assert round(d[1].item(), 3) == 0.138


def test_lpips_identity_batch_and_grey():
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(4, 3, 32, 32, generator=g), torch.rand(4, 3, 32, 32, generator=g)
    assert torch.allclose(metrics.lpips_distance(x, x), torch.zeros(4), atol=1e-6)

    batched = metrics.lpips_distance(x, y)
    single = torch.cat([metrics.lpips_distance(x[i : i + 1], y[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-5)
    assert (batched > 0).all()

    gx, gy = x[:, :1], y[:, :1]
    as_rgb = metrics.lpips_distance(gx.expand(-1, 3, -1, -1), gy.expand(-1, 3, -1, -1))
    torch.testing.assert_close(metrics.lpips_distance(gx, gy), as_rgb)
    mnist_sized = metrics.lpips_distance(torch.rand(2, 1, 28, 28), torch.rand(2, 1, 28, 28))
    assert mnist_sized.shape == (2,) and torch.isfinite(mnist_sized).all()


def test_lpips_is_differentiable_in_the_inputs():
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    metrics.lpips_distance(x, torch.rand(1, 3, 32, 32)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_lpips_unknown_or_unshipped_net_is_a_config_error():
    with pytest.raises(ConfigError, match="alex"):
        metrics.lpips_distance(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32), net="squeeze")
    if not (metrics._WEIGHTS / metrics._TRUNK_FILES["vgg"]).exists():
        with pytest.raises(ConfigError, match="only AlexNet"):
            metrics.lpips_distance(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32), net="vgg")


def test_match_to_ground_truth_recovers_shuffle():
    g = torch.Generator().manual_seed(1)
    gt = torch.rand(8, 3, 32, 32, generator=g)
    perm = torch.randperm(8, generator=g)
    # gt[i] is hidden (with noise) at rec[perm[i]], which is what the function must return
    rec = torch.empty_like(gt)
    rec[perm] = gt
    rec = rec + 0.05 * torch.randn(rec.shape, generator=g)
    found = metrics.match_to_ground_truth(rec, gt)
    assert found.dtype == torch.long
    assert torch.equal(found, perm)
    assert torch.equal(metrics.match_to_ground_truth(gt[:1], gt[:1]), torch.tensor([0]))


def test_score_images_keys_clamping_and_shape_check():
    g = torch.Generator().manual_seed(2)
    gt = torch.rand(3, 1, 28, 28, generator=g)
    scores = metrics.score_images(gt + 2.0 * (gt > 0.5), gt)  # out-of-range values get clamped
    assert set(scores) == {"psnr", "ssim", "lpips", "mse"}
    assert all(v.shape == (3,) for v in scores.values())
    torch.testing.assert_close(scores["mse"], metrics.mse((gt + 2.0 * (gt > 0.5)).clamp(0, 1), gt))

    with pytest.raises(DataError, match=r"\(3, 1, 28, 28\).*\(3, 1, 32, 32\)"):
        metrics.score_images(gt, torch.rand(3, 1, 32, 32))
