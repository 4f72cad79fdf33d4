"""Victim models for gradient-inversion attacks.

Every model takes *normalised* images ``(N, C, H, W)`` and returns logits ``(N, classes)``.
The attacks evaluate the models with externally supplied parameters through
``torch.func.functional_call`` and differentiate a gradient distance with respect to the
input (double backward), so the forward passes below avoid in-place operations on
tensors in the graph and use only ops with second derivatives (no fused SDPA, no
in-place ReLU / residual adds).

Models:

* ``lenet``    -- the sigmoid LeNet of DLG (Zhu et al., "Deep Leakage from Gradients",
  NeurIPS 2019, github.com/mit-han-lab/dlg) and iDLG (Zhao et al. 2020), including its
  U(-0.5, 0.5) initialisation of every weight and bias.
* ``convnet``  -- the ConvNet of Inverting Gradients (Geiping et al., NeurIPS 2020,
  github.com/JonasGeiping/invertinggradients, ``inversefed/nn/models.py``).
* ``resnet18`` -- ResNet-18 (He et al. 2016) with the usual CIFAR stem (3x3 stride-1 conv,
  no max-pool), as used in Inverting Gradients.
* ``quickstart-cnn`` -- the CNN of Flower's quickstart-pytorch example and of ``flwr new``'s PyTorch
  template (itself "PyTorch: A 60 Minute Blitz"): two 5x5 convolutions, each ReLU + 2x2 max-pool,
  then Linear 120 -> 84 -> classes, for any input size (the template's 16*5*5 is the 32x32 case).
* ``mlp``      -- the bias-free GELU MLP of the Dropout Inversion Attack (Scheliga et al.,
  "Dropout is NOT all you need to prevent gradient leakage", AAAI 2023,
  github.com/dAI-SY-Group/DropoutInversionAttack, ``src/models/mlp.py``).
* ``vit``      -- the small ViT used by that paper (``src/models/vit.py``, itself
  lucidrains/vit-pytorch at commit 2fa2b62): linear patch embedding, cls token,
  learned positional embedding, pre-norm blocks, ``dim_head = dim // heads``.

Dropout in ``mlp`` and ``vit`` is :class:`MaskDropout`, whose masks can be recorded and
replayed (or relaxed to real values and optimised) as the DIA attack needs.
"""
from __future__ import annotations

import inspect
import math
import numbers
from collections import OrderedDict
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fedleak.core.errors import ConfigError, DataError
from fedleak.core.registry import Registry

__all__ = [
    "MODELS",
    "MaskDropout",
    "build_model",
    "clear_masks",
    "dropout_layers",
    "model_names",
    "parameters_and_buffers",
    "record_masks",
    "use_masks",
]

MODELS: Registry[nn.Module] = Registry("model")


# ----------------------------------------------------------------------------------------
# MaskDropout
# ----------------------------------------------------------------------------------------
class MaskDropout(nn.Module):
    """Inverted dropout whose masks can be recorded and replayed.

    Follows the ``MaskDropout`` of the Dropout Inversion Attack code
    (dAI-SY-Group/DropoutInversionAttack, ``src/models/modules.py``), but records the
    Bernoulli mask itself rather than ``output != 0`` (which mistakes a zero activation
    for a dropped unit).

    * ``mode == "sample"`` (default): in ``train()`` draws a Bernoulli(1-p) mask of the
      input's full shape, keeps it (detached) in ``last_mask`` and returns
      ``x * mask / (1-p)``; in ``eval()`` it is the identity.
    * ``mode == "given"`` (after :meth:`set_mask`): returns ``x * given_mask / (1-p)`` in
      train and eval mode alike. The given mask may be a real-valued tensor with
      ``requires_grad`` (a relaxed mask) and receives gradients.
    """

    def __init__(self, p: float = 0.0):
        super().__init__()
        p = float(p)
        if not 0.0 <= p < 1.0:
            raise ConfigError(f"dropout: p must be in [0, 1), got {p}")
        self.p = p
        self.mode = "sample"
        # Plain attributes, not buffers: masks belong to one forward pass, so they must
        # not appear in state_dict() or in the dict handed to functional_call.
        self.last_mask: Tensor | None = None
        self.given_mask: Tensor | None = None

    def set_mask(self, mask: Tensor) -> None:
        if not isinstance(mask, Tensor):
            raise ConfigError(f"dropout mask must be a tensor, got {type(mask).__name__}")
        self.given_mask = mask
        self.mode = "given"

    def clear_mask(self) -> None:
        self.given_mask = None
        self.mode = "sample"

    def forward(self, x: Tensor) -> Tensor:
        if self.mode == "given":
            mask = self.given_mask
            if mask is None:
                raise ConfigError("MaskDropout is in mode 'given' but no mask was set")
            try:
                fits = torch.broadcast_shapes(mask.shape, x.shape) == x.shape
            except RuntimeError:
                fits = False
            if not fits:
                raise ConfigError(
                    f"dropout mask of shape {tuple(mask.shape)} does not fit activation "
                    f"of shape {tuple(x.shape)}"
                )
            return x * mask / (1.0 - self.p)
        if self.mode != "sample":
            raise ConfigError(f"MaskDropout mode must be 'sample' or 'given', got {self.mode!r}")
        if not self.training:
            return x
        # Record even at p=0 so record_masks/use_masks see the same structure for every p.
        mask = torch.empty_like(x, requires_grad=False).bernoulli_(1.0 - self.p)
        self.last_mask = mask.detach()
        if self.p == 0.0:
            return x
        return x * mask / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}, mode={self.mode}"


def dropout_layers(model: nn.Module) -> list[MaskDropout]:
    """All MaskDropout modules of ``model`` in module (= registration) order."""
    return [m for m in model.modules() if isinstance(m, MaskDropout)]


def record_masks(model: nn.Module) -> list[Tensor]:
    """The masks sampled by each MaskDropout in the last train-mode forward pass."""
    layers = dropout_layers(model)
    masks = []
    for i, layer in enumerate(layers):
        if layer.last_mask is None:
            raise ConfigError(
                f"dropout layer {i} has no recorded mask; run a forward pass in train() mode "
                "with no masks given first"
            )
        masks.append(layer.last_mask)
    return masks


def use_masks(model: nn.Module, masks: Iterable[Tensor]) -> None:
    """Make each MaskDropout apply the given mask (in order) instead of sampling."""
    layers = dropout_layers(model)
    masks = list(masks)
    if len(masks) != len(layers):
        raise ConfigError(f"got {len(masks)} dropout masks for a model with {len(layers)} dropout layers")
    for layer, mask in zip(layers, masks):
        layer.set_mask(mask)


def clear_masks(model: nn.Module) -> None:
    """Return every MaskDropout to sampling its own masks."""
    for layer in dropout_layers(model):
        layer.clear_mask()


# ----------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------
def parameters_and_buffers(model: nn.Module) -> dict[str, Tensor]:
    """Name -> tensor of every parameter and buffer, the dict ``functional_call`` expects.

    The tensors are the model's own (not copies). Note that a train-mode forward pass
    through BatchNorm updates whatever running-stat buffers it is given in place.
    """
    return {**dict(model.named_parameters()), **dict(model.named_buffers())}


def model_names() -> list[str]:
    return MODELS.names()


def _check_int(name: str, key: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ConfigError(f"model '{name}': option '{key}' must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_p(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ConfigError(f"model '{name}': option 'dropout' must be a number in [0, 1), got {value!r}")
    return float(value)


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


# ----------------------------------------------------------------------------------------
# LeNet (DLG / iDLG)
# ----------------------------------------------------------------------------------------
class LeNet(nn.Module):
    """Sigmoid LeNet of DLG (mit-han-lab/dlg, ``models/vision.py``).

    Sigmoid rather than ReLU because DLG needs a twice-differentiable network whose
    second derivative is not zero almost everywhere.
    """

    def __init__(self, in_shape: tuple[int, int, int], num_classes: int):
        super().__init__()
        c, h, w = in_shape
        self.body = nn.Sequential(
            nn.Conv2d(c, 12, kernel_size=5, padding=2, stride=2),
            nn.Sigmoid(),
            nn.Conv2d(12, 12, kernel_size=5, padding=2, stride=2),
            nn.Sigmoid(),
            nn.Conv2d(12, 12, kernel_size=5, padding=2, stride=1),
            nn.Sigmoid(),
        )
        for stride in (2, 2, 1):
            h, w = _conv_out(h, 5, stride, 2), _conv_out(w, 5, stride, 2)
        self.hidden = 12 * h * w
        self.fc = nn.Linear(self.hidden, num_classes)
        # DLG's weights_init: every weight and bias U(-0.5, 0.5); the large init is part of
        # why DLG converges on this network, so the default init would change results.
        with torch.no_grad():
            for p in self.parameters():
                p.uniform_(-0.5, 0.5)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.body(x).flatten(1))


@MODELS.register("lenet")
def _lenet(in_shape, num_classes):
    return LeNet(in_shape, num_classes)


# ----------------------------------------------------------------------------------------
# The CNN of Flower's quickstart-pytorch / `flwr new` PyTorch template
# ----------------------------------------------------------------------------------------
class QuickstartCNN(nn.Module):
    """Flower's quickstart ``Net`` (flwr 1.24 ``cli/new/templates/app/code/task.pytorch.py.tpl``):
    conv 5x5 (6) -> ReLU -> max-pool 2 -> conv 5x5 (16) -> ReLU -> max-pool 2 -> Linear 120 -> ReLU ->
    Linear 84 -> ReLU -> Linear classes; PyTorch's default initialisation, as the template leaves it."""

    def __init__(self, in_shape: tuple[int, int, int], num_classes: int):
        super().__init__()
        c, h, w = in_shape
        self.conv1 = nn.Conv2d(c, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        h, w = (h - 4) // 2, (w - 4) // 2
        h, w = (h - 4) // 2, (w - 4) // 2
        self.fc1 = nn.Linear(16 * h * w, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc3(F.relu(self.fc2(x)))


@MODELS.register("quickstart-cnn")
def _quickstart_cnn(in_shape, num_classes):
    _, h, w = in_shape
    if (h - 4) // 2 < 5 or (w - 4) // 2 < 5:
        raise DataError(f"model 'quickstart-cnn' cannot take input shape {tuple(in_shape)}: its two 5x5 convolutions "
                        "and 2x2 max-pools need height and width >= 14")
    return QuickstartCNN(in_shape, num_classes)


# ----------------------------------------------------------------------------------------
# ConvNet (Inverting Gradients)
# ----------------------------------------------------------------------------------------
class ConvNet(nn.Module):
    """ConvNet of Inverting Gradients (inversefed ``ConvNet``): eight 3x3 conv-BN-ReLU
    layers with widths 1,2,2,4,4,4 | pool | 4,4 | pool (times ``width``), then a Linear."""

    def __init__(self, in_shape: tuple[int, int, int], num_classes: int, width: int = 64):
        super().__init__()
        c, h, w = in_shape
        plan = [(c, 1), (1, 2), (2, 2), (2, 4), (4, 4), (4, 4), "pool", (4, 4), (4, 4), "pool"]
        layers: list[tuple[str, nn.Module]] = []
        conv_i = pool_i = 0
        for step in plan:
            if step == "pool":
                layers.append((f"pool{pool_i}", nn.MaxPool2d(3)))
                pool_i += 1
                continue
            cin, cout = step
            cin = c if conv_i == 0 else cin * width
            layers += [
                (f"conv{conv_i}", nn.Conv2d(cin, cout * width, kernel_size=3, padding=1)),
                (f"bn{conv_i}", nn.BatchNorm2d(cout * width)),
                (f"relu{conv_i}", nn.ReLU()),
            ]
            conv_i += 1
        self.features = nn.Sequential(OrderedDict(layers))
        self.out_hw = (h // 3 // 3, w // 3 // 3)
        self.linear = nn.Linear(4 * width * self.out_hw[0] * self.out_hw[1], num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.features(x).flatten(1))


@MODELS.register("convnet")
def _convnet(in_shape, num_classes, width: int = 64):
    width = _check_int("convnet", "width", width)
    _, h, w = in_shape
    if h < 9 or w < 9:
        raise DataError(
            f"model 'convnet' cannot take input shape {tuple(in_shape)}: its two 3x3 max-pools "
            "need height and width >= 9"
        )
    return ConvNet(in_shape, num_classes, width)


# ----------------------------------------------------------------------------------------
# ResNet-18 (CIFAR stem)
# ----------------------------------------------------------------------------------------
class BasicBlock(nn.Module):
    """ResNet basic block (He et al. 2016), written without torchvision's in-place
    ``out += identity`` / ``ReLU(inplace=True)`` so double backward is always safe."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 with the CIFAR stem (3x3 stride-1 conv, no max-pool), blocks [2,2,2,2],
    widths w, 2w, 4w, 8w, global average pool, Linear; torchvision's init scheme."""

    def __init__(self, in_shape: tuple[int, int, int], num_classes: int, width: int = 64):
        super().__init__()
        c = in_shape[0]
        self.conv1 = nn.Conv2d(c, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        stages = []
        cin = width
        for i, mult in enumerate((1, 2, 4, 8)):
            cout = width * mult
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


@MODELS.register("resnet18")
def _resnet18(in_shape, num_classes, width: int = 64):
    width = _check_int("resnet18", "width", width)
    return ResNet18(in_shape, num_classes, width)


# ----------------------------------------------------------------------------------------
# MLP (DIA)
# ----------------------------------------------------------------------------------------
class MLP(nn.Module):
    """DIA MLP: flatten, ``depth`` x [Linear(no bias) -> GELU -> MaskDropout], Linear(no bias)."""

    def __init__(self, in_shape, num_classes: int, width: int = 512, depth: int = 3, dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        cin = math.prod(in_shape)
        for _ in range(depth):
            layers += [nn.Linear(cin, width, bias=False), nn.GELU(), MaskDropout(dropout)]
            cin = width
        layers.append(nn.Linear(cin, num_classes, bias=False))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


@MODELS.register("mlp")
def _mlp(in_shape, num_classes, width: int = 512, depth: int = 3, dropout: float = 0.0):
    width = _check_int("mlp", "width", width)
    depth = _check_int("mlp", "depth", depth)
    return MLP(in_shape, num_classes, width, depth, _check_p("mlp", dropout))


# ----------------------------------------------------------------------------------------
# ViT (DIA / lucidrains)
# ----------------------------------------------------------------------------------------
class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float):
        super().__init__()
        inner = heads * dim_head
        self.heads, self.scale = heads, dim_head ** -0.5
        self.norm = nn.LayerNorm(dim)
        self.to_qkv = nn.Linear(dim, 3 * inner, bias=False)
        self.attn_drop = MaskDropout(dropout)
        # lucidrains drops the output projection (and its dropout) when it would be a
        # square map on a single head; kept so parameter names/counts match that code.
        if heads == 1 and dim_head == dim:
            self.to_out: nn.Module = nn.Identity()
        else:
            self.to_out = nn.Sequential(nn.Linear(inner, dim), MaskDropout(dropout))

    def forward(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        q, k, v = self.to_qkv(self.norm(x)).chunk(3, dim=-1)
        q, k, v = (t.reshape(b, n, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        # Explicit softmax attention, not F.scaled_dot_product_attention: the attention
        # weights must be materialised for the mask, and fused kernels lack double backward.
        attn = self.attn_drop(torch.softmax(q @ k.transpose(-1, -2) * self.scale, dim=-1))
        out = (attn @ v).transpose(1, 2).reshape(b, n, -1)
        return self.to_out(out)


class _FeedForward(nn.Module):
    def __init__(self, dim: int, mlp_dim: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.net = nn.Sequential(
            nn.Linear(dim, mlp_dim), nn.GELU(), MaskDropout(dropout),
            nn.Linear(mlp_dim, dim), MaskDropout(dropout),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(self.norm(x))


class _Block(nn.Module):
    def __init__(self, dim, heads, dim_head, mlp_dim, dropout):
        super().__init__()
        self.attn = _Attention(dim, heads, dim_head, dropout)
        self.ff = _FeedForward(dim, mlp_dim, dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(x)
        return x + self.ff(x)


class ViT(nn.Module):
    """Small ViT as in the DIA code (lucidrains/vit-pytorch 2fa2b62): patches of
    ``patch_size`` flattened in (p1 p2 c) order -> Linear, cls token, learned positional
    embedding, MaskDropout, ``depth`` pre-norm blocks, LayerNorm + Linear on the cls token."""

    def __init__(self, in_shape, num_classes: int, patch_size: int, dim: int, depth: int,
                 heads: int, mlp_dim: int, dim_head: int, dropout: float):
        super().__init__()
        c, h, w = in_shape
        self.patch_size = patch_size
        num_patches = (h // patch_size) * (w // patch_size)
        self.patch_embed = nn.Linear(c * patch_size * patch_size, dim)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.pos_embedding = nn.Parameter(torch.randn(1, num_patches + 1, dim))
        self.emb_drop = MaskDropout(dropout)
        self.blocks = nn.Sequential(*[_Block(dim, heads, dim_head, mlp_dim, dropout) for _ in range(depth)])
        self.head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, num_classes))

    def forward(self, img: Tensor) -> Tensor:
        b, c, h, w = img.shape
        p = self.patch_size
        patches = (
            img.reshape(b, c, h // p, p, w // p, p)
            .permute(0, 2, 4, 3, 5, 1)
            .reshape(b, (h // p) * (w // p), p * p * c)
        )
        x = self.patch_embed(patches)
        x = torch.cat((self.cls_token.expand(b, -1, -1), x), dim=1) + self.pos_embedding
        x = self.blocks(self.emb_drop(x))
        return self.head(x[:, 0])


@MODELS.register("vit")
def _vit(in_shape, num_classes, patch_size: int = 4, dim: int = 256, depth: int = 4, heads: int = 16,
         mlp_dim: int = 256, dim_head: int | None = None, dropout: float = 0.0):
    patch_size = _check_int("vit", "patch_size", patch_size)
    dim = _check_int("vit", "dim", dim)
    depth = _check_int("vit", "depth", depth)
    heads = _check_int("vit", "heads", heads)
    mlp_dim = _check_int("vit", "mlp_dim", mlp_dim)
    if dim_head is None:
        # DIA's build_VisionTransformer sets dim_head = hidden_size // heads
        if dim % heads:
            raise ConfigError(f"model 'vit': dim ({dim}) must be divisible by heads ({heads}), or set dim_head")
        dim_head = dim // heads
    dim_head = _check_int("vit", "dim_head", dim_head)
    _, h, w = in_shape
    if h % patch_size or w % patch_size:
        raise DataError(
            f"model 'vit' cannot take input shape {tuple(in_shape)}: patch_size {patch_size} "
            "must divide both height and width"
        )
    return ViT(in_shape, num_classes, patch_size, dim, depth, heads, mlp_dim, dim_head, _check_p("vit", dropout))


# ----------------------------------------------------------------------------------------
# entry point
# ----------------------------------------------------------------------------------------
def _options_of(factory: Callable) -> list[str]:
    params = list(inspect.signature(factory).parameters)
    return params[2:]  # after in_shape, num_classes


def build_model(name: str, num_classes: int, in_shape: tuple[int, int, int], seed: int = 0,
                **options) -> nn.Module:
    """Build victim model ``name`` for images of shape ``in_shape`` = (C, H, W).

    Weights depend only on ``seed``: they are drawn from a private copy of the CPU RNG,
    so building a model neither consumes nor changes the global random state.
    """
    factory = MODELS.get(name)
    allowed = _options_of(factory)
    for key in options:
        if key not in allowed:
            known = ", ".join(allowed) if allowed else "none"
            raise ConfigError(f"model '{name}': unknown option '{key}' (options: {known})")
    try:
        shape = tuple(int(s) for s in in_shape)
        ok = len(shape) == 3 and all(s >= 1 for s in shape) and all(int(s) == s for s in in_shape)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(f"model '{name}': in_shape must be three positive integers (C, H, W), got {in_shape!r}")
    num_classes = _check_int(name, "num_classes", num_classes)
    seed = _check_int(name, "seed", seed, minimum=0)

    # fork_rng(devices=[]) restores only the CPU generator; seeding that generator alone
    # (not torch.manual_seed) keeps CUDA RNG state untouched on GPU machines too.
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        model = factory(shape, num_classes, **options)
    model.fedleak_name = name
    model.in_shape = shape
    model.num_classes = num_classes
    return model
