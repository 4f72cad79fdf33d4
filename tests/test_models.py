"""Victim models: shapes, seeding, functional_call, double backward, MaskDropout."""
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from fedleak.core.errors import ConfigError, DataError, UnknownNameError
from fedleak.models.architectures import (
    MaskDropout,
    build_model,
    clear_masks,
    dropout_layers,
    model_names,
    parameters_and_buffers,
    record_masks,
    use_masks,
)

# Small variants keep the whole file well under a minute on two CPU cores.
SMALL = {
    "lenet": {},
    "convnet": {"width": 4},
    "resnet18": {"width": 4},
    "mlp": {"width": 16, "depth": 2},
    "vit": {"dim": 16, "depth": 1, "heads": 2, "mlp_dim": 16},
    "quickstart-cnn": {},  # Flower's quickstart Net at its own size: it has no width option
}
SHAPES = [(1, 28, 28), (3, 32, 32)]


def small(name, shape=(3, 32, 32), classes=10, seed=0, **extra):
    return build_model(name, classes, shape, seed=seed, **{**SMALL[name], **extra})


def test_registry_has_all_models():
    assert set(model_names()) == set(SMALL)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", sorted(SMALL))
def test_logit_shape(name, shape):
    model = small(name, shape, classes=7)
    x = torch.randn(3, *shape)
    for mode in (model.train, model.eval):
        mode()
        assert model(x).shape == (3, 7)


def test_default_options_build():
    for name in model_names():
        model = build_model(name, 10, (3, 32, 32))
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("shape,hidden", [((3, 32, 32), 768), ((1, 28, 28), 588)])
def test_lenet_hidden(shape, hidden):
    model = build_model("lenet", 10, shape)
    assert model.hidden == hidden
    assert model.fc.in_features == hidden


def test_convnet_flatten_is_36_width():
    for shape in SHAPES:
        assert build_model("convnet", 10, shape, width=8).linear.in_features == 36 * 8


@pytest.mark.parametrize("name", sorted(SMALL))
def test_seeding(name):
    before = torch.random.get_rng_state()
    a, b, c = small(name, seed=3), small(name, seed=3), small(name, seed=4)
    assert torch.equal(torch.random.get_rng_state(), before)
    pa, pb, pc = (dict(m.named_parameters()) for m in (a, b, c))
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    assert any(not torch.equal(pa[k], pc[k]) for k in pa)


def test_lenet_uniform_init():
    model = build_model("lenet", 10, (3, 32, 32))
    for name, p in model.named_parameters():
        assert p.min() >= -0.5 and p.max() <= 0.5, name
    w = model.fc.weight.detach().flatten()  # 7680 values
    # Default init would be U(-1/sqrt(768), 1/sqrt(768)) ~ U(-0.036, 0.036).
    assert w.min() < -0.45 and w.max() > 0.45
    assert abs(w.mean().item()) < 0.02
    assert abs(w.std().item() - 12 ** -0.5) < 0.01
    hist = torch.histc(w, bins=5, min=-0.5, max=0.5) / w.numel()
    assert torch.all((hist - 0.2).abs() < 0.03)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_functional_call_matches_and_perturbation_changes(name):
    model = small(name).eval()
    x = torch.randn(2, 3, 32, 32)
    params = parameters_and_buffers(model)
    assert set(params) >= {k for k, _ in model.named_parameters()}
    out = functional_call(model, params, (x,))
    assert torch.allclose(out, model(x))
    gen = torch.Generator().manual_seed(0)
    perturbed = {
        k: v + 0.1 * torch.randn(v.shape, generator=gen) if v.is_floating_point() else v
        for k, v in params.items()
    }
    assert not torch.allclose(functional_call(model, perturbed, (x,)), out)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", sorted(SMALL))
def test_second_order_gradient_reaches_input(name, shape):
    extra = {"dropout": 0.2} if name in ("mlp", "vit") else {}
    model = small(name, shape, **extra).train()
    params = {k: v.detach().clone().requires_grad_(True) for k, v in model.named_parameters()}
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    x = torch.randn(2, *shape, requires_grad=True)
    y = torch.tensor([1, 3])
    loss = F.cross_entropy(functional_call(model, {**params, **buffers}, (x,)), y)
    grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
    d = sum((g ** 2).sum() for g in grads)
    (gx,) = torch.autograd.grad(d, x)
    assert torch.isfinite(gx).all()
    assert gx.abs().sum() > 0


# ---------------------------------------------------------------------------- MaskDropout
def test_mask_dropout_records_and_replays():
    torch.manual_seed(0)
    model = small("vit", dropout=0.3).train()
    x = torch.randn(2, 3, 32, 32)
    sampled = model(x)
    masks = record_masks(model)
    # embedding, then per block: attention weights, output projection, two in the FFN
    assert len(masks) == len(dropout_layers(model)) == 1 + 4
    assert masks[0].shape == (2, 1 + 64, 16)  # cls + 8x8 patches
    assert masks[1].shape == (2, 2, 65, 65)  # attention weights: batch, heads, tokens, tokens
    assert all(not m.requires_grad for m in masks)
    use_masks(model, masks)
    assert all(layer.mode == "given" for layer in dropout_layers(model))
    assert torch.equal(model(x), sampled)
    model.eval()  # given masks apply in eval mode too
    assert torch.equal(model(x), sampled)
    clear_masks(model)
    assert all(layer.mode == "sample" and layer.given_mask is None for layer in dropout_layers(model))
    assert not torch.equal(model.train()(x), sampled)


def test_mlp_mask_shapes():
    model = small("mlp", dropout=0.5).train()
    model(torch.randn(4, 3, 32, 32))
    assert [tuple(m.shape) for m in record_masks(model)] == [(4, 16), (4, 16)]


def test_mask_dropout_sample_statistics():
    layer = MaskDropout(0.25).train()
    x = torch.ones(200, 200)
    out = layer(x)
    mask = layer.last_mask
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    assert abs(mask.mean().item() - 0.75) < 0.01
    assert torch.allclose(out, mask / 0.75)


def test_relaxed_mask_gets_gradient():
    model = small("mlp", dropout=0.25)
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    relaxed = [torch.full((2, 16), 0.5, requires_grad=True) for _ in dropout_layers(model)]
    use_masks(model, relaxed)
    model(x).square().sum().backward()
    for m in relaxed:
        assert m.grad is not None and m.grad.abs().sum() > 0
    assert x.grad is not None


def test_mask_dropout_identity_cases():
    x = torch.randn(5, 7)
    assert torch.equal(MaskDropout(0.5).eval()(x), x)
    layer = MaskDropout(0.0).train()
    assert torch.equal(layer(x), x)
    assert torch.equal(layer.last_mask, torch.ones_like(x))


def test_mask_dropout_errors():
    with pytest.raises(ConfigError):
        MaskDropout(1.0)
    model = small("mlp", dropout=0.1).eval()
    with pytest.raises(ConfigError, match="no recorded mask"):
        record_masks(model)
    with pytest.raises(ConfigError, match="dropout masks"):
        use_masks(model, [torch.ones(2, 16)])
    use_masks(model, [torch.ones(3, 16), torch.ones(3, 16)])
    with pytest.raises(ConfigError, match="does not fit"):
        model(torch.randn(2, 3, 32, 32))


def test_masks_not_in_state_dict():
    model = small("mlp", dropout=0.1).train()
    keys = set(model.state_dict())
    model(torch.randn(2, 3, 32, 32))
    use_masks(model, record_masks(model))
    assert set(model.state_dict()) == keys


# ------------------------------------------------------------------------------ errors
def test_bad_shape_raises_data_error():
    with pytest.raises(DataError, match="vit.*30, 30.*patch_size 4"):
        build_model("vit", 10, (3, 30, 30))
    with pytest.raises(DataError, match="convnet"):
        build_model("convnet", 10, (3, 8, 8), width=4)
    with pytest.raises(DataError, match="quickstart-cnn.*12, 12.*>= 14"):
        build_model("quickstart-cnn", 10, (3, 12, 12))


def test_unknown_name_and_option():
    with pytest.raises(UnknownNameError, match="lenet"):
        build_model("alexnet", 10, (3, 32, 32))
    with pytest.raises(ConfigError, match="'depth'"):
        build_model("convnet", 10, (3, 32, 32), depth=3)
    with pytest.raises(ConfigError, match="'width'"):
        build_model("lenet", 10, (3, 32, 32), width=3)
    with pytest.raises(ConfigError, match="dropout"):
        build_model("mlp", 10, (3, 32, 32), dropout=1.5)
    with pytest.raises(ConfigError, match="in_shape"):
        build_model("mlp", 10, (32, 32))
