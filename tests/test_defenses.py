"""Defenses dp, sketch, prune, quantize: what is sent, what the server decodes, what the adaptive
attacker simulates, what it costs (harness/matrix/utility.py), and bad options."""
import math

import pytest
import torch

from fedleak.attacks import Budget, build_attack
from fedleak.attacks.objective import GradientMatcher
from fedleak.defenses import DEFENSES, ShareContext, build_defense
from fedleak.defenses import sketch_operators
from fedleak.defenses.per_example import per_example_gradients
from fedleak.core.errors import ConfigError
from fedleak.threat_models import THREAT_MODELS
from fedleak.threat_models.knowledge import KnowledgeFlags
from fedleak.models.functional import LocalTraining

SHAPES = [(12, 10), (12,), (3, 4, 5)]
CONFIGS = [
    ("dp", {"sigma": 0.5}),
    ("dp", {"mode": "dpsgd", "sigma": 0.5}),
    ("sketch", {"ratio": 0.25}),
    ("sketch", {"kind": "countsketch", "ratio": 0.25, "per_layer": True}),
    ("prune", {"ratio": 0.1}),
    ("prune", {"ratio": 0.1, "scope": "global"}),
    ("quantize", {"clip": 1.0, "levels": 8}),
]


def update(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen) for s in SHAPES]


def context(seed=7, client=0, rnd=0):
    return ShareContext(["a", "b", "c"], 4, client, rnd, seed)


def test_all_four_are_registered():
    assert {"dp", "sketch", "prune", "quantize"} <= set(DEFENSES.names())


@pytest.mark.parametrize("name,options", CONFIGS)
def test_share_and_decode_shapes(name, options):
    defense = build_defense(name, **options)
    sent, public = defense.share(update(), context())
    decoded = defense.decode(sent, public)
    assert [tuple(t.shape) for t in decoded] == SHAPES
    assert all(torch.isfinite(t).all() for t in sent)
    trial = defense.simulate([t.requires_grad_(True) for t in update(1)], _observation(sent, public))
    assert [t.shape for t in trial] == [t.shape for t in sent]
    assert defense.bytes_sent(sent) > 0


def _observation(sent, public):
    class Seen:  # the two fields a defense's simulate may read
        shared, public = None, None
    seen = Seen()
    seen.shared, seen.public = sent, public
    return seen


# ---------------------------------------------------------------- sketch

@pytest.mark.parametrize("kind", ["gaussian", "countsketch"])
def test_sketch_decode_is_unbiased_over_seeds(kind):
    defense = build_defense("sketch", kind=kind, ratio=0.2)
    g = update()
    draws = 400
    mean = [torch.zeros(s) for s in SHAPES]
    for seed in range(draws):
        sent, public = defense.share(g, context(seed=seed))
        for m, t in zip(mean, defense.decode(sent, public)):
            m += t / draws
    flat_g, flat_mean = torch.cat([t.flatten() for t in g]), torch.cat([t.flatten() for t in mean])
    one = torch.cat([t.flatten() for t in defense.decode(*defense.share(g, context(seed=0)))])
    # one draw is off by ~sqrt(d/s) = 2.2 relative; the mean of 400 by ~0.11
    assert (flat_mean - flat_g).norm() / flat_g.norm() < 0.25
    assert (one - flat_g).norm() / flat_g.norm() > 1.0


@pytest.mark.parametrize("options", [{"kind": "gaussian", "ratio": 0.3}, {"kind": "countsketch", "ratio": 0.3, "per_layer": True},
                                     {"kind": "gaussian", "size": 20}])
def test_sketch_simulate_reproduces_the_observation_with_the_public_seed(options):
    defense = build_defense("sketch", **options)
    g = update()
    sent, public = defense.share(g, context(seed=11))
    again = build_defense("sketch", **options).simulate(g, _observation(sent, public))  # fresh object: only `public` is shared
    for a, b in zip(again, sent):
        assert torch.equal(a, b)
    other = defense.simulate(g, _observation(sent, {**public, "seed": 12}))
    assert not torch.equal(other[0], sent[0])
    dims = [math.prod(s) for s in SHAPES]
    expected = [max(1, round(0.3 * d)) for d in dims] if defense.options.per_layer else [defense.options.size or round(0.3 * sum(dims))]
    assert public["sizes"] == expected and defense.bytes_sent(sent) == 4 * sum(expected)


def test_gaussian_sketch_regenerated_in_blocks_is_one_consistent_matrix(monkeypatch):
    monkeypatch.setattr(sketch_operators, "BLOCK_ENTRIES", 64)
    monkeypatch.setattr(sketch_operators, "CACHE_ENTRIES", 0)
    op = sketch_operators.GaussianSketch(300, 16, seed=5)
    v, y = torch.randn(300), torch.randn(16)
    torch.testing.assert_close((op.apply(v) * y).sum(), (v * op.adjoint(y)).sum())  # <Rv,y> = <v,Rᵀy>
    torch.testing.assert_close(op.apply(v), op.apply(v))


def test_sketch_noise_is_private_and_additive():
    plain, noisy = build_defense("sketch", ratio=0.5), build_defense("sketch", ratio=0.5, noise_sigma=0.1)
    a, _ = plain.share(update(), context())
    b, public = noisy.share(update(), context())
    assert 0.05 < (b[0] - a[0]).std() < 0.2 and "noise_seed" not in public


# ---------------------------------------------------------------- prune

def test_prune_keeps_the_largest_fraction_per_layer_and_globally():
    g = update()
    layer = build_defense("prune", ratio=0.1)
    sent, _ = layer.share(g, context())
    for s, u in zip(sent, g):
        k = max(1, round(0.1 * u.numel()))
        assert int((s != 0).sum()) == k
        assert s.abs().max() == u.abs().max() and s.abs()[s != 0].min() >= u.abs().flatten().topk(k).values.min()
    glob, _ = build_defense("prune", ratio=0.1, scope="global").share(g, context())
    assert sum(int((s != 0).sum()) for s in glob) == round(0.1 * sum(u.numel() for u in g))
    assert layer.bytes_sent(sent) == 8 * sum(int((s != 0).sum()) for s in sent)


def test_prune_simulate_masks_the_trial_with_the_observed_pattern():
    defense = build_defense("prune", ratio=0.2)
    sent, public = defense.share(update(), context())
    trial = defense.simulate(update(1), _observation(sent, public))
    for t, s, u in zip(trial, sent, update(1)):
        assert torch.equal(t != 0, s != 0) and torch.equal(t[s != 0], u[s != 0])


def test_prune_residual_is_carried_to_the_next_round_and_reset_at_round_zero():
    defense = build_defense("prune", ratio=0.1, residual=True)
    g = update()
    first, _ = defense.share(g, context(rnd=0))
    second, _ = defense.share(g, context(rnd=1))
    carried = [2 * u - s for u, s in zip(g, first)]   # what round 1 selects from
    for s, c in zip(second, carried):
        torch.testing.assert_close(s[s != 0], c[s != 0])
    restarted, _ = defense.share(g, context(rnd=0))
    assert all(torch.equal(a, b) for a, b in zip(restarted, first))


# ---------------------------------------------------------------- quantize (RQM)

def test_rqm_is_unbiased_for_the_clipped_input():
    defense = build_defense("quantize", clip=1.0, levels=5, keep=0.5)
    x = torch.linspace(-1.5, 1.5, 25)
    draws = defense.quantize(x.repeat(20000, 1), torch.Generator().manual_seed(0))  # independent per coordinate
    torch.testing.assert_close(draws.mean(0), x.clamp(-1, 1), atol=0.02, rtol=0)


def test_rqm_uses_only_kept_levels():
    x = torch.full((20000,), 0.1)   # inside the grid cell [0, 0.25] of 9 levels on [−1, 1]
    grid = torch.linspace(-1, 1, 9)
    draw = lambda keep: build_defense("quantize", clip=1.0, levels=9, keep=keep).quantize(x, torch.Generator().manual_seed(1))
    for keep in (1.0, 0.5, 0.0):
        out = draw(keep)
        assert torch.isclose(out[:, None], grid[None]).any(1).all()   # always a grid level
    assert set(draw(1.0).unique().tolist()) <= {0.0, 0.25}              # every level kept: the cell's two ends
    assert set(draw(0.0).unique().tolist()) == {-1.0, 1.0}              # only the endpoints are kept
    sparse = draw(0.5)
    assert (sparse.abs() > 0.3).any()                                   # skipped levels push it further out
    # 0.0 is output only if that level was kept (prob 0.5) and rounding went down (prob 0.6 to 0.9)
    assert 0.1 < (sparse == 0.0).float().mean() < 0.5


def test_rqm_bytes_and_simulate():
    defense = build_defense("quantize", clip=0.5, levels=16)
    sent, public = defense.share(update(), context())
    assert defense.bytes_sent(sent) == math.ceil(sum(math.prod(s) for s in SHAPES) * 4 / 8)
    assert all(t.abs().max() <= 0.5 + 1e-6 for t in sent)
    assert all(t.abs().max() <= 0.5 for t in defense.simulate(update(1), _observation(sent, public)))
    assert defense.privacy(10, 0.1) is None


# ---------------------------------------------------------------- dp

def test_dp_epsilon_from_opacus_falls_as_sigma_grows_and_target_round_trips():
    eps = [build_defense("dp", mode="dpsgd", sigma=s).privacy(100, 0.01)["epsilon"] for s in (0.6, 1.0, 2.0)]
    assert eps[0] > eps[1] > eps[2] > 0
    target = build_defense("dp", mode="dpsgd", target_epsilon=2.0, steps=100, sampling_rate=0.01)
    got = target.privacy(100, 0.01)
    assert got["delta"] == 1e-5 and 1.95 < got["epsilon"] <= 2.0


def test_dp_update_mode_clips_then_adds_noise():
    g = update()
    clean, _ = build_defense("dp", clip=0.5, sigma=0.0).share(g, context())
    assert torch.sqrt(sum(t.pow(2).sum() for t in clean)) == pytest.approx(0.5, rel=1e-5)
    noisy, public = build_defense("dp", clip=0.5, sigma=0.2).share(g, context())
    residual = torch.cat([(a - b).flatten() for a, b in zip(noisy, clean)])
    assert public["noise_std"] == pytest.approx(0.1) and 0.08 < residual.std() < 0.12


def test_per_example_gradients_vmap_and_loop_agree(digits):
    from fedleak.models.functional import loss_gradient
    from fedleak.threat_models.victim import VictimSpec, build_victim
    victim = build_victim(VictimSpec(model="mlp", options={"width": 16, "depth": 1}), digits).to(torch.float64)  # dropout p=0
    x, y = digits.victims([0, 1, 2])
    x, model = victim.normalise(x).double(), victim.model  # float64: the three paths sum in different orders
    fast = per_example_gradients(model.eval(), victim.params, victim.buffers, x, y)        # vmap
    slow = per_example_gradients(model.train(), victim.params, victim.buffers, x, y)       # dropout in train mode: loop
    model.eval()
    reference = [loss_gradient(model, victim.params, victim.buffers, x[i:i + 1], y[i:i + 1]) for i in range(3)]
    for j, (a, b) in enumerate(zip(fast, slow)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-13)
        torch.testing.assert_close(a, torch.stack([r[j] for r in reference]), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("threat_model", ["fedsgd", "fedavg"])
def test_dpsgd_replay_clips_per_example_like_the_client(lenet_victim, threat_model):
    x, y = lenet_victim.data.victims([0, 1])
    defense = build_defense("dp", mode="dpsgd", clip=0.05, sigma=0.0)  # small clip: every example is clipped
    threat = THREAT_MODELS.get(threat_model)(LocalTraining(lr=0.1, epochs=1, batch_size=2))
    losses = {}
    for adaptive in (False, True):
        obs, knowledge = threat.observe(lenet_victim, x, y, defense, KnowledgeFlags(labels=True, hyperparameters=True, defense=adaptive))
        losses[adaptive] = GradientMatcher(obs, lenet_victim.model, knowledge, "l2")(lenet_victim.normalise(x), y).item()
    assert losses[True] < 1e-10 < losses[False]


# ---------------------------------------------------------------- adaptive vs non-adaptive attacks

@pytest.mark.parametrize("name,options", [("dp", {"sigma": 0.05}), ("dp", {"mode": "dpsgd", "sigma": 0.05}),
                                          ("sketch", {"kind": "countsketch", "ratio": 0.1}), ("prune", {"ratio": 0.1}),
                                          ("quantize", {"clip": 0.1})])
@pytest.mark.parametrize("attack", ["ig", "dlg"])
def test_both_attack_paths_run_against_every_defense(lenet_victim, name, options, attack):
    x, y = lenet_victim.data.victims([0])
    for adaptive in (False, True):
        obs, knowledge = THREAT_MODELS.create("fedsgd").observe(lenet_victim, x, y, build_defense(name, **options),
                                                              KnowledgeFlags(labels=True, defense=adaptive))
        matcher = GradientMatcher(obs, lenet_victim.model, knowledge)
        assert len(matcher.target) == len(obs.shared if adaptive else obs.update)
        quick = {"inner_iterations": 3} if attack == "dlg" else {}
        result = build_attack(attack, **quick).reconstruct(obs, lenet_victim.model, knowledge, Budget(iterations=2))
        assert result.images.shape == x.shape and math.isfinite(result.gradient_loss)


def test_adaptive_sketch_attack_beats_the_non_adaptive_one(lenet_victim):
    from fedleak.metrics.image import score_images
    x, y = lenet_victim.data.victims([0])
    defense = build_defense("sketch", kind="gaussian", ratio=0.01)
    scores = {}
    for adaptive in (False, True):
        obs, knowledge = THREAT_MODELS.create("fedsgd").observe(lenet_victim, x, y, defense, KnowledgeFlags(labels=True, defense=adaptive))
        images = build_attack("ig", tv=1e-2).reconstruct(obs, lenet_victim.model, knowledge, Budget(iterations=100)).images
        _, informed = THREAT_MODELS.create("fedsgd").observe(lenet_victim, x, y, defense, KnowledgeFlags(labels=True))
        # both reconstructions scored on one yardstick: the sketch-space distance to what was sent
        loss = GradientMatcher(obs, lenet_victim.model, informed)(lenet_victim.normalise(images), y).item()
        scores[adaptive] = (loss, score_images(images, x)["psnr"].item())
    assert scores[True][0] < scores[False][0] / 5
    assert scores[True][1] > scores[False][1] + 1.0


# ---------------------------------------------------------------- utility

def test_measure_utility_reports_accuracy_bytes_epsilon_and_caches(digits):
    from fedleak.harness.matrix.utility import measure_utility
    from fedleak.core.io import cache_dir
    from fedleak.threat_models.victim import VictimSpec
    spec = VictimSpec(model="mlp", options={"width": 16, "depth": 1}, clients=2, local_batch_size=200, local_lr=0.1)
    defense = build_defense("dp", mode="dpsgd", sigma=1.0, clip=1.0)
    result = measure_utility(digits, spec, defense, rounds=2, timing_repeats=1)
    assert 0 <= result["accuracy"] <= 1 and 0 <= result["accuracy_baseline"] <= 1
    assert result["bytes_sent"] == result["bytes_dense"] == 4 * (784 * 16 + 16 * 10)
    assert result["accounting_steps"] == 2 * 10 and result["sampling_rate"] == pytest.approx(0.1)
    assert result["epsilon"] == pytest.approx(defense.privacy(20, 0.1)["epsilon"])
    assert result["client_seconds"] > 0 and result["compute_overhead"] > 0
    assert len(list((cache_dir() / "utility").glob("*.json"))) >= 1
    assert measure_utility(digits, spec, defense, rounds=2) == result
    sketched = measure_utility(digits, spec, build_defense("sketch", kind="countsketch", ratio=0.1), rounds=2, timing_repeats=1)
    assert sketched["bytes_sent"] == 4 * round(0.1 * (784 * 16 + 16 * 10)) and sketched["epsilon"] is None


# ---------------------------------------------------------------- bad inputs

@pytest.mark.parametrize("name,options,word", [
    ("dp", {"sigma": -1.0}, "sigma"),
    ("dp", {"clip": 0}, "clip"),
    ("dp", {"mode": "local"}, "mode"),
    ("dp", {"sigma": 1.0, "target_epsilon": 1.0}, "target_epsilon"),
    ("dp", {"delta": 1.5}, "delta"),
    ("dp", {"noise": 1.0}, "noise"),
    ("sketch", {"ratio": 0.0}, "ratio"),
    ("sketch", {"ratio": 1.5}, "ratio"),
    ("sketch", {"kind": "srht"}, "kind"),
    ("sketch", {"noise_sigma": -0.1}, "noise_sigma"),
    ("prune", {"ratio": 0.0}, "ratio"),
    ("prune", {"ratio": 1.01}, "ratio"),
    ("prune", {"scope": "row"}, "scope"),
    ("quantize", {"levels": 1}, "levels"),
    ("quantize", {"keep": 2.0}, "keep"),
    ("quantize", {"clip": -1.0}, "clip"),
])
def test_bad_options_raise_one_line_config_errors(name, options, word):
    with pytest.raises(ConfigError) as error:
        build_defense(name, **options)
    assert word in str(error.value) and "\n" not in str(error.value)


def test_sketch_larger_than_the_update_is_refused():
    with pytest.raises(ConfigError, match="size 1000 exceeds"):
        build_defense("sketch", size=1000).share(update(), context())


def test_what_a_defense_may_offer_is_declared_on_defense():
    """privacy_unit and the vertical-FL hooks are part of Defense with one default each (the runner, the
    utility measurement and the VFL victim read them directly, no getattr with defaults of their own)."""
    import inspect
    from fedleak.defenses.base import Defense, NoDefense
    from fedleak.harness.matrix import utility
    from fedleak.harness.run import runner
    from fedleak.threat_models import vfl_victim
    plain = NoDefense()
    assert plain.privacy_unit is None and plain.embedding_width(16) == 16
    assert plain.codec(16) is None and plain.training_loss([torch.zeros(2, 16)], torch.zeros(2, dtype=torch.long), 10) is None
    assert {build_defense("dp", mode="update").privacy_unit, build_defense("dp", mode="dpsgd").privacy_unit} == {"user", "example"}
    hashing = build_defense("hashing")
    assert hashing.codec(hashing.embedding_width(64)) is not None
    for module in (utility, runner, vfl_victim):
        source = inspect.getsource(module)
        for name in ("privacy_unit", "codec", "training_loss", "embedding_width"):
            assert f'getattr(defense, "{name}"' not in source and f'hasattr(defense, "{name}"' not in source
    assert "privacy_unit" in Defense.__dict__
