"""Image-quality metrics for scoring reconstructions against ground truth.

Conventions, shared by every function here:

* Tensors are batch-first ``(N, C, H, W)`` with values in [0, 1]; every metric
  returns one value per image, shape ``(N,)``, on the inputs' device.
* ``score_images`` clamps reconstructions to [0, 1] first: attacks optimise
  unconstrained pixels, and a metric must not reward or punish out-of-range values.
* PSNR and MSE average over all channels and pixels. PSNR clamps the MSE at 1e-10,
  so identical images score a finite 100 dB (at data_range 1) instead of inf.
* SSIM is skimage's ``structural_similarity(gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, channel_axis=0)``: 11-tap Gaussian window, K1=0.01,
  K2=0.03, mean over the region the window fits in (skimage's border crop), and
  for colour the per-channel SSIMs averaged. Images must be at least 11x11.
* LPIPS is the genuine v0.1 metric with the AlexNet trunk: the linear heads ship in
  the ``lpips`` package, the ImageNet trunk in ``metrics/weights`` (see
  tools/convert_lpips_weights.py), so nothing is downloaded. Inputs are mapped to
  [-1, 1]; grey images are replicated to 3 channels. AlexNet's pooling needs a
  side of at least 31 pixels, so smaller images (e.g. 28x28 MNIST) are first
  upsampled bilinearly until the shorter side is 32, the size of CIFAR images.
"""

from __future__ import annotations

import contextlib
import pathlib
import warnings

import torch
import torch.nn.functional as F

from fedleak.core.errors import ConfigError, DataError
from fedleak.core.io import load_tensors

_WEIGHTS = pathlib.Path(__file__).resolve().parent / "weights"
_TRUNK_FILES = {"alex": "lpips_alexnet.pt", "vgg": "lpips_vgg16.pt"}
_LPIPS_MIN_SIDE = 32
_MSE_FLOOR = 1e-10

_SSIM_SIGMA = 1.5
_SSIM_RADIUS = 5  # skimage: int(truncate * sigma + 0.5) with truncate=3.5 -> 11-tap window
_SSIM_K1, _SSIM_K2 = 0.01, 0.03

_lpips_models: dict[tuple[str, str], torch.nn.Module] = {}


def mse(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (x - y).pow(2).flatten(1).mean(1)


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    return 10 * torch.log10(data_range**2 / mse(x, y).clamp_min(_MSE_FLOOR))


def _gaussian_taps(device, dtype) -> torch.Tensor:
    t = torch.arange(-_SSIM_RADIUS, _SSIM_RADIUS + 1, device=device, dtype=dtype)
    g = torch.exp(-0.5 * (t / _SSIM_SIGMA) ** 2)
    return g / g.sum()


def _band(taps: torch.Tensor, size: int) -> torch.Tensor:
    """(size, size - len(taps) + 1) matrix M with (v @ M)[j] = sum_k taps[k] v[j + k]: a valid
    correlation along the last axis as one matrix product."""
    out = size - len(taps) + 1
    band = torch.zeros(size, out, dtype=taps.dtype, device=taps.device)
    rows = torch.arange(out, device=taps.device)
    for k, tap in enumerate(taps):
        band[rows + k, rows] = tap
    return band


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    n, c, h, w = x.shape
    win = 2 * _SSIM_RADIUS + 1
    if h < win or w < win:
        raise DataError(f"SSIM needs images of at least {win}x{win}, got {h}x{w}")
    # var = E[x^2] - E[x]^2 cancels digits. Rather than float64 (CPU float64 filtering was slower than
    # skimage's per-image loop), shift each image channel by a constant first: variances and the
    # covariance do not change, and with values centred float32 stays within ~4e-7 of skimage even on
    # flat patches (the constant is added back to the means below).
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    x, y = x.to(dtype), y.to(dtype)
    offset = (x.mean((2, 3), keepdim=True) + y.mean((2, 3), keepdim=True)) / 2
    x, y = x - offset, y - offset

    # One separable "valid" filtering of all five moment maps; valid is exactly skimage's crop of
    # (win - 1) // 2 pixels, so its reflect padding never matters. Two matrix products with banded
    # Gaussian matrices: one GEMM each for the whole batch, where depthwise convolution has no fast
    # CPU kernel for 11-tap rows.
    maps = torch.cat([x, y, x * x, y * y, x * y], dim=1)
    g = _gaussian_taps(x.device, dtype)
    maps = maps @ _band(g, w)                                          # along W
    maps = (maps.transpose(-1, -2) @ _band(g, h)).transpose(-1, -2)  # along H
    mx, my, mxx, myy, mxy = maps.split(c, dim=1)

    c1, c2 = (_SSIM_K1 * data_range) ** 2, (_SSIM_K2 * data_range) ** 2
    # centred moments from the shifted means; the luminance term needs the true means
    contrast = (2 * torch.addcmul(mxy, mx, my, value=-1) + c2) / (mxx + myy - mx * mx - my * my + c2)
    mx, my = mx + offset, my + offset
    s = (2 * mx * my + c1) / (mx * mx + my * my + c1) * contrast
    # equal-sized channels, so the mean over (C, H, W) is the mean of per-channel SSIMs
    return s.flatten(1).mean(1).float()


def lpips_model(net: str = "alex", device: torch.device | str = "cpu") -> torch.nn.Module:
    """The cached, frozen LPIPS module for `net` on `device` (expects inputs in [-1, 1])."""
    device = torch.device(device)
    key = (net, str(device))
    if key in _lpips_models:
        return _lpips_models[key]
    if net not in _TRUNK_FILES:
        raise ConfigError(f"lpips net must be 'alex' (only AlexNet weights ship), got '{net}'")
    trunk = _WEIGHTS / _TRUNK_FILES[net]
    if not trunk.is_file():
        raise ConfigError(
            f"lpips net '{net}' needs {trunk}, which is not shipped (only AlexNet is); "
            f"build it with tools/convert_lpips_weights.py --net {net}, or use net='alex'"
        )

    import lpips

    with warnings.catch_warnings(), _trunk_features_only(lpips, net):  # torchvision's "pretrained is deprecated" noise
        warnings.simplefilter("ignore", UserWarning)
        # pnet_rand=True: torchvision would otherwise download the trunk; we load it below.
        model = lpips.LPIPS(net=net, version="0.1", pretrained=True, pnet_rand=True, verbose=False)
    model.net.load_state_dict(load_tensors(trunk, "LPIPS weights", map_location="cpu"), strict=True)
    model = model.to(device).eval().requires_grad_(False)
    _lpips_models[key] = model
    return model


@contextlib.contextmanager
def _trunk_features_only(lpips, net: str):
    """lpips builds the whole torchvision classifier and keeps only `.features`; AlexNet's unused
    fully connected layers alone are ~230 MB, initialised and then dropped, which raised the peak RSS
    of every matrix cell by that much. Build the network on the meta device instead and give real
    (uninitialised) memory to the features only: lpips_model overwrites them from metrics/weights."""
    tv = lpips.pretrained_networks.tv
    name = {"alex": "alexnet", "vgg": "vgg16"}[net]
    original = getattr(tv, name)

    def features_only(*args, **kwargs):
        with torch.device("meta"):
            network = original(*args, **kwargs)
        network.features = network.features.to_empty(device="cpu")
        return network

    setattr(tv, name, features_only)
    try:
        yield
    finally:
        setattr(tv, name, original)


def _lpips_input(x: torch.Tensor) -> torch.Tensor:
    x = x.float()
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    h, w = x.shape[-2:]
    if min(h, w) < _LPIPS_MIN_SIDE:
        scale = _LPIPS_MIN_SIDE / min(h, w)
        size = (max(_LPIPS_MIN_SIDE, round(h * scale)), max(_LPIPS_MIN_SIDE, round(w * scale)))
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return 2 * x - 1


def lpips_distance(x: torch.Tensor, y: torch.Tensor, net: str = "alex") -> torch.Tensor:
    """LPIPS v0.1 per image; differentiable w.r.t. the inputs when they require grad."""
    model = lpips_model(net, x.device)
    with torch.set_grad_enabled(x.requires_grad or y.requires_grad):
        return model(_lpips_input(x), _lpips_input(y)).flatten()


def match_to_ground_truth(rec: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Permutation `perm` with rec[perm[i]] matched to gt[i], minimising total MSE.

    Attacks recover a batch as an unordered set, so scoring must first pair each
    reconstruction with one ground-truth image (Hungarian assignment, not greedy).
    """
    from scipy.optimize import linear_sum_assignment

    _check_same_shape(rec, gt)
    g, r = gt.detach().flatten(1).float(), rec.detach().flatten(1).float()
    # exact pairwise differences; the matmul shortcut loses precision on near-ties
    cost = torch.cdist(g, r, compute_mode="donot_use_mm_for_euclid_dist").pow(2)
    _, cols = linear_sum_assignment(cost.cpu().double().numpy())
    return torch.as_tensor(cols, dtype=torch.long, device=rec.device)


def _check_same_shape(rec: torch.Tensor, gt: torch.Tensor) -> None:
    if rec.shape != gt.shape or rec.dim() != 4:
        raise DataError(
            f"reconstruction shape {tuple(rec.shape)} does not match ground truth "
            f"{tuple(gt.shape)} (both must be (N, C, H, W))"
        )


def score_images(rec: torch.Tensor, gt: torch.Tensor, lpips_net: str = "alex") -> dict[str, torch.Tensor]:
    _check_same_shape(rec, gt)
    rec = rec.detach().clamp(0, 1)
    gt = gt.detach()
    with torch.no_grad():
        return {
            "psnr": psnr(rec, gt),
            "ssim": ssim(rec, gt),
            "lpips": lpips_distance(rec, gt, net=lpips_net),
            "mse": mse(rec, gt),
        }
