"""Generator priors (own DCGAN, BigGAN-deep and StyleGAN2 adapters), the projections GIFD relies
on, and small end-to-end runs of the generative attacks GGL and GIFD."""
import json

import pytest
import torch
import torch.nn.functional as F

from fedleak.attacks import build_attack
from fedleak.attacks.base import Budget
from fedleak.attacks.generators import DCGANConfig, DCGANGenerator, load_prior
from fedleak.attacks.generators.store import SHIPPED, sidecar_path
from fedleak.attacks.gifd import GIFD, select_lowest, split_iterations, stage_lr
from fedleak.attacks.projections import project_l1_ball, project_sphere
from fedleak.defenses import NoDefense
from fedleak.core.errors import ConfigError
from fedleak.threat_models import THREAT_MODELS
from fedleak.threat_models.knowledge import knowledge_flags

torch.set_num_threads(1)

WITH_AUX = {"preset": "eavesdropper", "auxiliary_data": True}


def _check_forward_from(prior, latent, labels=None):
    with torch.no_grad():
        full = prior(latent, labels)
        for k in range(prior.num_blocks + 1):
            torch.testing.assert_close(prior.forward_from(k, prior.features(k, latent, labels), latent, labels), full)
    return full


# ----------------------------------------------------------------------------- generators

def test_dcgan_forward_from_every_block_reproduces_forward():
    torch.manual_seed(0)
    prior = DCGANGenerator(DCGANConfig(width=8)).freeze()
    z, y = prior.sample_latent(3, torch.Generator().manual_seed(1)), torch.tensor([0, 4, 9])
    images = _check_forward_from(prior, z, y)
    assert images.shape == (3, 1, 28, 28) and 0 <= images.min() and images.max() <= 1
    shapes = {tuple(prior.features(k, z, y).shape[1:]) for k in range(prior.num_blocks + 1)}
    assert len(shapes) == prior.num_blocks  # distinct maps (the last two share 28x28 by design)


def test_biggan_adapter_matches_the_module_and_every_block():
    biggan = pytest.importorskip("pytorch_pretrained_biggan")
    from fedleak.attacks.generators.biggan import BigGANPrior
    config = biggan.BigGANConfig(output_dim=32, z_dim=16, class_embed_dim=16, channel_width=4, num_classes=5,
                                 layers=[(False, 16, 16), (True, 16, 8), (True, 8, 4), (False, 4, 2), (True, 2, 1)],
                                 attention_layer_position=3)
    torch.manual_seed(0)
    module = biggan.BigGAN(config)
    with torch.no_grad():
        module.generator.bn.weight.fill_(1)  # the port leaves this BN's affine uninitialised
        module.generator.bn.bias.zero_()
        module(torch.randn(2, 16), torch.eye(5)[:2], 1.0)  # spectral-norm power iterations
    module.eval()
    prior = BigGANPrior(module, truncation=0.4).freeze()
    z, y = torch.randn(3, 16), torch.tensor([0, 3, 4])
    assert prior.num_blocks == 6 and prior.num_classes == 5  # 5 GenBlocks + self-attention
    images = _check_forward_from(prior, z, y)
    with torch.no_grad():
        torch.testing.assert_close(images, (module(z, F.one_hot(y, 5).float(), 0.4) + 1) / 2)
        assert BigGANPrior(module, image_size=16)(z, y).shape == (3, 3, 16, 16)


@pytest.mark.parametrize("latent_space", ["w+", "z"])
def test_stylegan2_adapter_matches_the_module_and_every_block(latent_space):
    from stylegan2_reference import Generator
    from fedleak.attacks.generators.stylegan2 import StyleGAN2Prior
    torch.manual_seed(0)
    module = Generator(size=32).eval()
    prior = StyleGAN2Prior(module, latent_space=latent_space).freeze()
    latent = prior.sample_latent(2, torch.Generator().manual_seed(1))
    assert prior.num_blocks == 4 and latent.shape[1:] == prior.latent_shape
    images = _check_forward_from(prior, latent)
    with torch.no_grad():
        raw, _ = module([latent], input_is_latent=latent_space == "w+", randomize_noise=False)
    torch.testing.assert_close(images, (raw + 1) / 2)


@pytest.fixture
def colour_observation():
    """A 3x32x32, 8-class observation (random images) for the adapters' RGB output."""
    from fedleak.data.datasets import _make
    from fedleak.threat_models.victim import VictimSpec, build_victim
    g = torch.Generator().manual_seed(0)
    images, labels = torch.rand(20, 3, 32, 32, generator=g), torch.arange(20) % 8
    data = _make("random-rgb", (images[:16], labels[:16]), (images[16:], labels[16:]), [str(c) for c in range(8)])
    victim = build_victim(VictimSpec(model="lenet"), data)
    x, y = data.victims([0])
    observation, knowledge = THREAT_MODELS.create("fedsgd").observe(victim, x, y, NoDefense(), knowledge_flags(WITH_AUX))
    return observation, knowledge, victim.model


def test_attacks_run_on_the_adapters_tuple_states_and_resizing(colour_observation):
    biggan = pytest.importorskip("pytorch_pretrained_biggan")
    from stylegan2_reference import Generator
    from fedleak.attacks.generators.biggan import BigGANPrior
    from fedleak.attacks.generators.stylegan2 import StyleGAN2Prior
    observation, knowledge, model = colour_observation
    torch.manual_seed(0)
    style = StyleGAN2Prior(Generator(size=32, channels={4: 8, 8: 8, 16: 4, 32: 4}).eval()).freeze()
    result = GIFD(prior=style).reconstruct(observation, model, knowledge, Budget(8, 1))
    assert result.images.shape == (1, 3, 32, 32) and result.loss_trace[-1] < result.loss_trace[0]
    config = biggan.BigGANConfig(output_dim=64, z_dim=8, class_embed_dim=8, channel_width=4, num_classes=8,
                                 layers=[(False, 16, 8), (True, 8, 4), (True, 4, 2), (False, 2, 1)], attention_layer_position=9)
    module = biggan.BigGAN(config)
    with torch.no_grad():
        module.generator.bn.weight.fill_(1)
        module.generator.bn.bias.zero_()
    prior = BigGANPrior(module.eval()).freeze()  # 16x16 native output, area-resized to the data's 32x32
    result = build_attack("ggl", prior=prior, optimizer="adam").reconstruct(observation, model, knowledge, Budget(6, 1))
    assert result.images.shape == (1, 3, 32, 32) and torch.isfinite(result.images).all()
    assert build_attack("gifd", prior=prior).describe()["prior"]["generator"] == "BigGANPrior"


def test_adapters_reject_modules_of_another_layout():
    from fedleak.attacks.generators.biggan import BigGANPrior
    from fedleak.attacks.generators.stylegan2 import StyleGAN2Prior
    with pytest.raises(ConfigError, match="BigGAN"):
        BigGANPrior(torch.nn.Linear(2, 2))
    with pytest.raises(ConfigError, match="rosinality"):
        StyleGAN2Prior(torch.nn.Linear(2, 2))


def test_shipped_prior_loads_safely_with_its_provenance():
    path = SHIPPED["digits"]
    blob = torch.load(path, weights_only=True)  # plain tensors and values only
    assert set(blob) == {"format", "config", "state_dict"}
    prior = load_prior("digits")
    images = prior(prior.sample_latent(10, torch.Generator().manual_seed(0)), torch.arange(10))
    assert images.shape == (10, 1, 28, 28) and images.min() >= 0 and images.max() <= 1
    assert not any(p.requires_grad for p in prior.parameters()) and not prior.training
    record = json.loads(sidecar_path(path).read_text())
    assert record["command"].startswith("fedleak prior train --dataset digits")
    assert record["seed"] == 0 and "victims never used" in record["data_split"]["split"]
    assert record["quality"]["class_accuracy"] > 0.9 and record["torch_threads"] == 1


def test_training_a_tiny_prior_round_trips_through_a_safe_checkpoint(tmp_path, digits):
    from fedleak.attacks.generators.store import save_prior
    from fedleak.attacks.generators.training import TrainConfig, train_dcgan
    config = TrainConfig(epochs=1, batch_size=32, width=4, latent_dim=8)
    result = train_dcgan(digits.train_images[:64], digits.train_labels[:64], 10, config)
    assert len(result.history) == 1 and all(torch.isfinite(torch.tensor(v)) for v in result.history[0].values())
    path = save_prior(result.generator, tmp_path / "p.pt", {"command": "test", "seed": 0})
    loaded = load_prior(str(path))
    z, y = torch.randn(2, 8), torch.tensor([1, 2])
    with torch.no_grad():
        torch.testing.assert_close(loaded(z, y), result.generator(z, y))
    assert json.loads(sidecar_path(path).read_text())["command"] == "test"


def test_prior_commands_are_wired_into_the_cli(tmp_path):
    from fedleak.harness.cli.main import build_parser
    from fedleak.harness.cli.prior import cmd_prior_eval, cmd_prior_train
    args = build_parser().parse_args(["prior", "train", "--dataset", "digits", "--epochs", "3", "--output", str(tmp_path / "p.pt")])
    assert args.func is cmd_prior_train and args.epochs == 3
    assert build_parser().parse_args(["prior", "eval"]).func is cmd_prior_eval
    with pytest.raises(ConfigError, match="no such file"):
        load_prior(str(tmp_path / "missing.pt"))
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="cannot read"):
        load_prior(str(tmp_path / "bad.pt"))


# ----------------------------------------------------------------------------- projections

def test_l1_ball_projection_is_the_per_sample_euclidean_projection():
    torch.manual_seed(0)
    v = torch.randn(5, 3, 4, 4)
    radius = torch.tensor([1.0, 2.5, 0.0, 1e3, 7.0])
    p = project_l1_ball(v, radius)
    norms = p.flatten(1).abs().sum(1)
    outside = v.flatten(1).abs().sum(1) > radius
    assert torch.all(norms <= radius + 1e-4)
    torch.testing.assert_close(norms[outside], radius[outside])
    torch.testing.assert_close(p[~outside], v[~outside])  # identity inside the ball
    assert p[2].abs().max() == 0
    # KKT of min ||p - v||^2 s.t. ||p||_1 <= r: p = sign(v) max(|v| - theta, 0) with one theta per sample
    for i in torch.nonzero(outside).flatten().tolist():
        a, b = v[i].flatten(), p[i].flatten()
        kept = b != 0
        assert torch.all(torch.sign(b[kept]) == torch.sign(a[kept]))
        theta = (a[kept].abs() - b[kept].abs())
        if kept.any():
            torch.testing.assert_close(theta, theta.mean().expand_as(theta))
            assert torch.all(a[~kept].abs() <= theta.mean() + 1e-5)


def test_l1_ball_projection_accepts_a_scalar_radius():
    v = torch.tensor([[3.0, -1.0], [0.2, 0.1]])
    torch.testing.assert_close(project_l1_ball(v, 2.0), torch.tensor([[2.0, 0.0], [0.2, 0.1]]))


def test_spherical_projection_restores_each_norm():
    z = torch.randn(4, 8, 3)
    norms = torch.tensor([1.0, 2.0, 3.0, 8.0])
    projected = project_sphere(z * 5 + 1, norms)
    torch.testing.assert_close(projected.flatten(1).norm(dim=1), norms)


# ----------------------------------------------------------------------------- GIFD mechanics

def test_gifd_selects_the_lowest_loss_stage_and_restart_not_the_last_restart():
    losses = torch.tensor([[0.9, 0.8, 0.7],
                           [0.5, 0.2, 0.6],
                           [0.4, float("nan"), 0.3]])  # last restart best at the last stage, but not overall
    assert select_lowest(losses) == (1, 1)


def test_gifd_schedule_and_iteration_split():
    lrs = [stage_lr(0.1, s, 100, 0.05, 0.75) for s in range(100)]
    assert lrs[0] < lrs[4] <= 0.1 and max(lrs) == pytest.approx(0.1) and lrs[-1] < 1e-3
    assert split_iterations(10, 4) == [3, 3, 2, 2]


@pytest.fixture
def digit_observation(lenet_victim):
    x, y = lenet_victim.data.victims([3])
    observation, knowledge = THREAT_MODELS.create("fedsgd").observe(lenet_victim, x, y, NoDefense(), knowledge_flags(WITH_AUX))
    return observation, knowledge, lenet_victim.model, y


def test_generative_attacks_require_the_auxiliary_data_flag(convnet_victim):
    x, y = convnet_victim.data.victims([0])
    observation, knowledge = THREAT_MODELS.create("fedsgd").observe(convnet_victim, x, y, NoDefense(), knowledge_flags("eavesdropper"))
    for name in ("ggl", "gifd"):
        with pytest.raises(ConfigError, match="auxiliary_data"):
            build_attack(name).reconstruct(observation, convnet_victim.model, knowledge, Budget(2, 1))


def test_gifd_end_to_end_returns_its_lowest_loss_candidate(digit_observation):
    observation, knowledge, model, _ = digit_observation
    result = GIFD(prior="digits").reconstruct(observation, model, knowledge, Budget(16, 2), seed=0)
    losses = torch.tensor(result.extras["stage_losses"])
    stage, restart = result.extras["chosen_stage"], result.extras["chosen_restart"]
    assert losses.shape == (4, 2) and result.gradient_loss == pytest.approx(float(losses.min()))
    torch.testing.assert_close(result.images, result.extras["stage_images"][stage, restart])
    assert result.images.shape == (1, 1, 28, 28) and torch.isfinite(result.images).all()
    assert result.loss_trace[-1] < result.loss_trace[0]


def test_ggl_adam_and_cma_reduce_the_gradient_loss(digit_observation):
    observation, knowledge, model, y = digit_observation
    adam = build_attack("ggl", optimizer="adam").reconstruct(observation, model, knowledge, Budget(10, 1), seed=0)
    assert adam.loss_trace[-1] < adam.loss_trace[0] and torch.isfinite(adam.images).all()
    cma = build_attack("ggl", population=6).reconstruct(observation, model, knowledge, Budget(4, 1), seed=0)
    assert cma.gradient_loss <= cma.loss_trace[0] and cma.extras["objective_evaluations"] == 4 * 6 + 2
    assert cma.images.shape == (1, 1, 28, 28) and 0 <= cma.images.min() and cma.images.max() <= 1
    assert knowledge.labels is None and torch.equal(cma.labels, y)  # inferred by the iDLG rule
