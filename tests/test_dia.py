"""The dropout defense and the Dropout Inversion Attack (Scheliga et al., AAAI 2023) on tiny models.

Tiny MLP/ViT variants and small budgets keep the file well under a minute on a shared CPU."""
import copy

import pytest
import torch

from fedleak.attacks import ATTACKS, Budget, build_attack
from fedleak.attacks.dia import _MaskSchedule
from fedleak.defenses import DEFENSES, NoDefense, build_defense
from fedleak.core.errors import ConfigError
from fedleak.metrics.image import psnr
from fedleak.threat_models import THREAT_MODELS
from fedleak.models.functional import local_update, loss_gradient
from fedleak.threat_models.knowledge import knowledge_flags
from fedleak.models.functional import LocalTraining
from fedleak.models.architectures import dropout_layers
from fedleak.threat_models.victim import VictimSpec, build_victim

ORACLE = {"preset": "informed", "dropout_masks": True}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Double backward through tiny models is dominated by thread overhead: on a shared machine
    # two threads made this file ~10x slower than one.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def mlp_victim(digits):
    return build_victim(VictimSpec(model="mlp", options={"width": 32, "depth": 2}), digits)


@pytest.fixture(scope="module")
def vit_victim(digits):
    return build_victim(VictimSpec(model="vit", options={"patch_size": 7, "dim": 16, "depth": 1, "heads": 2,
                                                         "mlp_dim": 16}), digits)


def observe(victim, indices, p=0.5, flags=ORACLE, threat="fedsgd", training=None, noise_seed=0):
    x, y = victim.data.victims(indices)
    defense = build_defense("dropout", p=p, noise_seed=noise_seed)
    obs, knowledge = THREAT_MODELS.get(threat)(training).observe(victim, x, y, defense, knowledge_flags(flags))
    return obs, knowledge, x, y


def replay_with(victim, masks, p):
    model = copy.deepcopy(victim.model)
    for layer in dropout_layers(model):
        layer.p = p
    return model, _MaskSchedule(model, masks)


def test_registered():
    assert "dropout" in DEFENSES.names()
    assert {"dia", "dia-oracle"} <= set(ATTACKS.names())


@pytest.mark.parametrize("name", ["mlp_victim", "vit_victim"])
def test_recorded_masks_replay_the_exact_update(request, name):
    victim = request.getfixturevalue(name)
    obs, knowledge, x, y = observe(victim, [0, 1])
    assert obs.public["dropout"] == 0.5
    (masks,) = knowledge.dropout_masks  # FedSGD: one forward pass
    layers = dropout_layers(victim.model)
    assert len(masks) == len(layers) and all(m.shape[0] == 2 for m in masks)  # batch dim included
    flat = torch.cat([m.flatten() for m in masks])
    assert set(flat.unique().tolist()) <= {0.0, 1.0} and 0.35 < 1 - flat.mean() < 0.65
    model, schedule = replay_with(victim, [masks], 0.5)
    replayed = loss_gradient(model.eval(), victim.params, victim.buffers, victim.normalise(x), y)
    schedule.close()
    for sent, again in zip(obs.shared, replayed):
        torch.testing.assert_close(again, sent, rtol=0, atol=1e-6)
    # ...and without the masks (the eval-mode model IG attacks) the update is a different one
    plain = loss_gradient(victim.model.eval(), victim.params, victim.buffers, victim.normalise(x), y)
    assert max((a - b).abs().max().item() for a, b in zip(plain, obs.shared)) > 1e-4


def test_fedavg_records_one_mask_set_per_local_step(mlp_victim):
    training = LocalTraining(lr=0.1, epochs=1, batch_size=1)
    obs, knowledge, x, y = observe(mlp_victim, [0, 1], threat="fedavg", training=training)
    assert len(knowledge.dropout_masks) == 2 and knowledge.dropout_masks[0][0].shape[0] == 1
    model, schedule = replay_with(mlp_victim, knowledge.dropout_masks, 0.5)
    replayed = local_update(model.eval(), mlp_victim.params, mlp_victim.buffers, mlp_victim.normalise(x), y, training)
    schedule.close()
    for sent, again in zip(obs.shared, replayed):
        torch.testing.assert_close(again, sent, rtol=0, atol=1e-6)


def test_defense_leaves_the_global_model_alone_and_is_reproducible(mlp_victim):
    before = [(layer.p, layer.mode) for layer in dropout_layers(mlp_victim.model)]
    first = observe(mlp_victim, [0], noise_seed=3)[1].dropout_masks
    assert [(layer.p, layer.mode) for layer in dropout_layers(mlp_victim.model)] == before
    assert not mlp_victim.model._forward_pre_hooks and not mlp_victim.model.training
    again = observe(mlp_victim, [0], noise_seed=3)[1].dropout_masks
    other = observe(mlp_victim, [0], noise_seed=4)[1].dropout_masks
    assert torch.equal(first[0][0], again[0][0]) and not torch.equal(first[0][0], other[0][0])


def test_dropout_refusals(lenet_victim, mlp_victim):
    x, y = lenet_victim.data.victims([0])
    with pytest.raises(ConfigError, match="no dropout layers"):
        THREAT_MODELS.create("fedsgd").observe(lenet_victim, x, y, build_defense("dropout"), knowledge_flags("informed"))
    for p in (1.0, -0.1, 1.5, "half"):
        with pytest.raises(ConfigError, match=r"defense\.options\.p: (must be in \[0, 1\)|expected float)"):
            build_defense("dropout", p=p)
    with pytest.raises(ConfigError, match="dropout_masks"):  # oracle flag without a dropout defense
        THREAT_MODELS.create("fedsgd").observe(mlp_victim, *mlp_victim.data.victims([0]), NoDefense(), knowledge_flags(ORACLE))
    obs, knowledge, _, _ = observe(mlp_victim, [0], flags="informed")
    assert knowledge.dropout_masks is None  # a real server never sees the masks
    with pytest.raises(ConfigError, match="dropout_masks = true"):
        build_attack("dia-oracle").reconstruct(obs, mlp_victim.model, knowledge, Budget(2))
    with pytest.raises(ConfigError, match=r"attack\.options\.p: must be in \[0, 1\)"):
        build_attack("dia", p=1.0)


def test_oracle_with_true_masks_matches_the_gradient_quickly(mlp_victim):
    obs, knowledge, x, _ = observe(mlp_victim, [2])
    rec = build_attack("dia-oracle").reconstruct(obs, mlp_victim.model, knowledge, Budget(200), seed=0)
    assert rec.gradient_loss < 1e-3
    assert psnr(rec.images, x).item() > 30


def test_dia_masks_stay_in_the_unit_interval_with_full_activation_shapes(vit_victim):
    obs, knowledge, _, _ = observe(vit_victim, [0, 1])
    rec = build_attack("dia").reconstruct(obs, vit_victim.model, knowledge, Budget(15), seed=0)
    (masks,) = rec.extras["masks"]
    (truth,) = knowledge.dropout_masks
    assert [m.shape for m in masks] == [t.shape for t in truth]
    assert any(m.dim() == 4 for m in masks)  # attention weights: (B, heads, tokens, tokens)
    for m in masks:
        assert m.min() >= 0 and m.max() <= 1
    assert any(((m > 0) & (m < 1)).any() for m in masks)  # relaxed, not a hard mask any more
    assert rec.images.min() >= 0 and rec.images.max() <= 1
    assert len(rec.loss_trace) == rec.extras["iterations_run"] <= 15
    # the caller's model is untouched: the attack works on its own copy
    assert all(layer.mode == "sample" for layer in dropout_layers(vit_victim.model))


def test_dia_beats_ig_when_the_client_used_dropout(mlp_victim):
    """IG inverts the eval-mode model and mismatches the thinned client network (DIA §5)."""
    scores = {}
    for index in (3, 4):
        obs, knowledge, x, _ = observe(mlp_victim, [index], flags="informed")
        ig = build_attack("ig", tv=1e-5).reconstruct(obs, mlp_victim.model, knowledge, Budget(300), seed=0)
        dia = build_attack("dia").reconstruct(obs, mlp_victim.model, knowledge, Budget(300), seed=0)
        scores[index] = (psnr(ig.images, x).item(), psnr(dia.images, x).item(), ig.gradient_loss, dia.gradient_loss)
    for ig_psnr, dia_psnr, ig_loss, dia_loss in scores.values():
        assert dia_psnr > ig_psnr + 5, scores
        assert dia_loss < ig_loss / 10, scores


def test_p_zero_falls_back_to_ig(mlp_victim):
    obs, knowledge, _, _ = observe(mlp_victim, [0], p=0.0)
    rec = build_attack("dia").reconstruct(obs, mlp_victim.model, knowledge, Budget(5), seed=0)
    assert rec.extras["fallback"] == "ig" and rec.extras["masks"] == []
