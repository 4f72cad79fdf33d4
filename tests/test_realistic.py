"""Attacks where FL really runs (issue 21): a shuffling SGD-momentum client, FedLeak's partial matching and
gradient regulariser, budgets by convergence."""
import pytest
import torch

from fedleak.attacks import Budget, build_attack
from fedleak.core.errors import ConfigError
from fedleak.defenses import NoDefense
from fedleak.metrics.image import match_to_ground_truth, psnr
from fedleak.models.functional import LocalTraining, local_update
from fedleak.threat_models import THREAT_MODELS
from fedleak.threat_models.knowledge import knowledge_flags


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 3, 3)
        self.fc = torch.nn.Linear(3 * 4 * 4, 5)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


@pytest.mark.parametrize("options", [dict(momentum=0.9), dict(momentum=0.9, nesterov=True, weight_decay=1e-2),
                                     dict(momentum=0.5, dampening=0.3)])
def test_momentum_replay_equals_torch_optim_in_float64_in_the_clients_order(options):
    """The replay of SGD with momentum over a shuffled order is torch.optim's, to float64 rounding."""
    torch.manual_seed(0)
    model = Tiny().double()
    x, y = torch.randn(6, 1, 6, 6, dtype=torch.float64), torch.tensor([0, 1, 2, 3, 4, 0])
    order = torch.tensor([4, 1, 5, 0, 3, 2])
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    client = Tiny().double()
    client.load_state_dict(model.state_dict())
    optimiser = torch.optim.SGD(client.parameters(), lr=0.1, **options)
    for epoch in range(2):
        for start in range(0, 6, 2):
            index = order[start:start + 2] if epoch == 0 else order.flip(0)[start:start + 2]
            optimiser.zero_grad()
            torch.nn.functional.cross_entropy(client(x[index]), y[index]).backward()
            optimiser.step()
    expected = [p.detach() - params[k] for k, p in client.named_parameters()]
    replay = local_update(model, params, {}, x, y, LocalTraining(lr=0.1, epochs=2, batch_size=2, **options),
                          orders=[order, order.flip(0)])
    assert max(float((a - b).abs().max()) for a, b in zip(replay, expected)) < 1e-12


def test_visiting_orders_cover_every_mini_batch_split_stored_first():
    from fedleak.attacks.batch_orders import visiting_orders
    orders = visiting_orders(torch.tensor([1, 3, 8, 7]), batch_size=2, epochs=1, count=6, seed=0)
    assert sorted(orders[0][0][:2].tolist()) == [0, 1]  # the stored split first
    splits = {tuple(sorted(map(tuple, (sorted(o[0][:2].tolist()), sorted(o[0][2:].tolist()))))) for o in orders}
    assert len({tuple(o[0].tolist()) for o in orders}) == 6 and len(splits) == 3  # 3 splits x which batch comes first
    assert all(sorted(o[0].tolist()) == [0, 1, 2, 3] for o in orders)
    twice = visiting_orders(torch.tensor([1, 1, 8, 7]), batch_size=2, epochs=2, count=40, seed=0)
    assert len({tuple(torch.cat(o).tolist()) for o in twice}) == 4 * 6  # first epoch: by label; second: by image


def _shuffled_client(digits, training, seed=1):
    from fedleak.threat_models.victim import VictimSpec, build_victim
    victim = build_victim(VictimSpec(model="mlp", options={"width": 32}), digits)
    x, y = digits.victims([0, 1, 2, 3])
    observe = lambda flags: THREAT_MODELS.get("fedavg")(training).observe(victim, x, y, NoDefense(), knowledge_flags(flags),
                                                                          seed=seed)
    return victim, x, observe


def _worst_psnr(rec, x):
    order = match_to_ground_truth(rec.images, x)
    return min(psnr(rec.images[order[i]:order[i] + 1], x[i:i + 1]).item() for i in range(len(x)))


def test_the_attacker_told_the_momentum_does_not_lose_to_the_one_that_is_not(digits):
    """A client taking 2 steps of SGD(momentum 0.9) over a shuffled DataLoader (order [1,3,2,0]): replaying the
    momentum in the stored order weighs the wrong batch 1.9x, which did worse than replaying plain SGD
    (measured before the fix, 200 it. x 6 restarts: worst image 17.4 dB told the momentum, 20.1 dB not).
    Searching the visiting order over the restarts makes the informed replay exact (44.6 dB at 200 it.)."""
    training = LocalTraining(lr=0.1, epochs=1, batch_size=2, momentum=0.9, shuffle=True)
    victim, x, observe = _shuffled_client(digits, training)
    budget = Budget(iterations=200, restarts=6)
    obs, knowledge = observe("informed")
    told = build_attack("ig").reconstruct(obs, victim.model, knowledge, budget, seed=0)
    obs_plain, knowledge_plain = observe({"preset": "informed", "optimizer": False})
    untold = build_attack("ig").reconstruct(obs_plain, victim.model, knowledge_plain, budget, seed=0)
    assert told.extras["visiting_orders"] == 6
    assert told.extras["order"][:2] in ([1, 3], [3, 1])  # the client's first mini-batch found
    assert _worst_psnr(told, x) >= _worst_psnr(untold, x) + 5
    assert told.gradient_loss < 0.1 * untold.gradient_loss


def test_fedleak_options_are_checked_at_load():
    for name in ("ig", "order-invariant"):
        assert build_attack(name, partial=0.25, partial_mode="random", grad_reg=0.1, grad_reg_norm="l1").options.partial == 0.25
    with pytest.raises(ConfigError, match="attack.options.partial"):
        build_attack("ig", partial=0)
    with pytest.raises(ConfigError, match="attack.options.partial_mode"):
        build_attack("ig", partial_mode="top")
    with pytest.raises(ConfigError, match="attack.options.grad_reg"):
        build_attack("order-invariant", grad_reg=-1.0)
    with pytest.raises(ConfigError, match="attack.options.window"):
        build_attack("ig", tolerance=1e-3, window=0)


class _Inner:
    """A matcher whose trial update is a fixed function of x (float64), to check what PartialMatcher matches."""
    precision, orders = "fp32", None

    def __init__(self, target):
        from fedleak.attacks.objective import cosine_distance
        self.target, self.distance = target, cosine_distance

    def trial_update(self, x, y):
        return [x[:12].view(3, 4) * 2.0, x[12:].view(2, 2) - 1.0]

    def __call__(self, x, y):
        return self.distance(self.trial_update(x, y), self.target)


def _cosine64(a, b):
    a, b = torch.cat([t.flatten() for t in a]), torch.cat([t.flatten() for t in b])
    return 1 - (a @ b) / (a.norm() * b.norm())


def test_partial_matching_matches_only_the_largest_entries_of_each_layer():
    from fedleak.attacks.partial_matching import PartialMatcher
    torch.manual_seed(0)
    target = [torch.randn(3, 4, dtype=torch.float64), torch.randn(2, 2, dtype=torch.float64)]
    matcher = PartialMatcher(_Inner(target), partial=0.5)
    masks = matcher.masks()
    assert [int(m.sum()) for m in masks] == [6, 2]
    for t, m in zip(target, masks):  # every kept entry is at least as large as every dropped one
        assert t.abs()[m.bool()].min() >= t.abs()[~m.bool()].max()
    x = torch.randn(16, dtype=torch.float64)
    trial = _Inner(target).trial_update(x, None)
    expected = _cosine64([t[m.bool()] for t, m in zip(trial, masks)], [t[m.bool()] for t, m in zip(target, masks)])
    assert abs(float(matcher(x, None)) - float(expected)) < 1e-12
    assert abs(float(matcher.unmasked(x, None)) - float(_cosine64(trial, target))) < 1e-12
    # what is not matched does not count: move a dropped entry, the value stays; move a kept one, it changes
    dropped = int((~masks[0].bool()).flatten().nonzero()[0])
    kept = int(masks[0].bool().flatten().nonzero()[0])
    for index, same in ((dropped, True), (kept, False)):
        moved = x.clone()
        moved[index] += 3.0
        assert (abs(float(matcher(moved, None)) - float(matcher(x, None))) < 1e-12) == same


def test_random_partial_matching_draws_a_new_subset_and_the_regulariser_adds_the_relative_norm():
    from fedleak.attacks.partial_matching import PartialMatcher
    torch.manual_seed(1)
    target = [torch.randn(30, 40, dtype=torch.float64), torch.randn(20, 20, dtype=torch.float64)]
    matcher = PartialMatcher(_Inner(target), partial=0.3, mode="random", seed=0)
    first, second = matcher.masks(), matcher.masks()
    assert not torch.equal(first[0], second[0])
    assert 0.25 < float(sum(m.sum() for m in first)) / 1600 < 0.35
    x = torch.randn(16, dtype=torch.float64)
    small = [torch.randn(3, 4, dtype=torch.float64), torch.randn(2, 2, dtype=torch.float64)]
    trial = _Inner(small).trial_update(x, None)
    for norm, p in (("l2", 2), ("l1", 1)):
        plain = PartialMatcher(_Inner(small))
        regularised = PartialMatcher(_Inner(small), grad_reg=0.5, grad_reg_norm=norm)
        ratio = torch.cat([t.flatten() for t in trial]).norm(p) / torch.cat([t.flatten() for t in small]).norm(p)
        assert abs(float(regularised(x, None) - plain(x, None)) - 0.5 * float(ratio)) < 1e-12


def test_ig_with_fedleak_options_reports_the_full_matching_loss(lenet_victim):
    from fedleak.attacks.objective import GradientMatcher
    x, y = lenet_victim.data.victims([3])
    obs, knowledge = THREAT_MODELS.get("fedsgd")(None).observe(lenet_victim, x, y, NoDefense(), knowledge_flags("informed"))
    budget = Budget(iterations=15)
    plain = build_attack("ig").reconstruct(obs, lenet_victim.model, knowledge, budget, seed=0)
    partial = build_attack("ig", partial=0.2, grad_reg=0.1).reconstruct(obs, lenet_victim.model, knowledge, budget, seed=0)
    assert not torch.equal(plain.images, partial.images)
    m, s = (torch.tensor(v).view(-1, 1, 1) for v in (knowledge.mean, knowledge.std))
    full = GradientMatcher(obs, lenet_victim.model, knowledge)((partial.images - m) / s, y)
    assert partial.gradient_loss == pytest.approx(float(full.detach()), rel=1e-4)


def test_budget_by_convergence_says_what_stopped_it(lenet_victim):
    from fedleak.harness.run.results import attack_and_score
    x, y = lenet_victim.data.victims([3])
    threat = THREAT_MODELS.get("fedsgd")(None)
    observe = lambda: threat.observe(lenet_victim, x, y, NoDefense(), knowledge_flags("informed"))
    run = lambda iterations, **options: attack_and_score(observe, build_attack("ig", **options), lenet_victim.model,
                                                         Budget(iterations), 0, x, y).rows[0]
    capped = run(12)
    assert (capped["stopped_by"], capped["iterations_run"]) == ("iterations", 12)
    converged = run(2000, tolerance=0.5, window=5)  # a loose tolerance: four plateaus of 5+ iterations
    assert converged["stopped_by"] == "converged" and 20 <= converged["iterations_run"] < 2000
    timed = run(2000, time_limit=1e-9)
    assert (timed["stopped_by"], timed["iterations_run"]) == ("time", 1)
    assert timed["time_per_image_s"] == pytest.approx(timed["wall_time_s"])


def _ladder_hooks(training):
    from fedleak.data.datasets import load_dataset
    from fedleak.harness.flower.update_audit import Hooks
    data = load_dataset("digits")
    x, y = data.victims([0, 1, 2, 3])
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10))
    hooks = Hooks(None, {}, {"build_model": lambda: model, "private_data": lambda p, n: (x, y),
                             "normalisation": lambda: ((0.5,), (0.5,)), "local_training": lambda: training})
    return hooks, model, x, y


def test_simulated_update_is_the_client_retrained_from_what_it_received():
    from fedleak.harness.flower.ladder import simulated_update
    from fedleak.threat_models.update_files import ClientUpdate
    training = LocalTraining(lr=0.1, epochs=2, batch_size=2, momentum=0.9, shuffle=True)
    hooks, model, x, y = _ladder_hooks(training)
    received = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    update = ClientUpdate(7, 1, received, received, 4, partition_id=0, num_partitions=1)
    x_norm = (x - 0.5) / 0.5
    made = simulated_update(update, model, training, x_norm, y, partition_id=0, seed=3)
    params = {k: torch.as_tensor(v) for k, v in received.items()}
    from fedleak.models.functional import shuffled_orders
    delta = local_update(model, params, {}, x_norm, y, training, orders=shuffled_orders(4, training, 3))
    for (name, value), d in zip(params.items(), delta):
        assert torch.equal(torch.as_tensor(made.sent[name]), (value + d).detach())
    assert (made.client_id, made.round, made.partition_id, made.num_examples) == (7, 1, 0, 4)


def test_ladder_runs_the_same_attack_from_one_image_one_step_to_the_apps_update(tmp_path):
    from fedleak.harness.flower.ladder import ladder_rungs, run_ladder, simulated_update
    from fedleak.harness.flower.update_audit import AttackSettings
    from fedleak.threat_models.update_files import ClientUpdate
    training = LocalTraining(lr=0.1, epochs=2, batch_size=2, momentum=0.9, shuffle=True)
    assert [r[0] for r in ladder_rungs(training, 4)] == ["1 image, 1 step", "4 images, 1 step",
                                                         "4 images, 2 steps (1 epoch)", "the app: 4 images, 4 steps"]
    assert len(ladder_rungs(replace_epochs(training, 1), 4)) == 3
    # an app that takes one full-batch step is rung 2 itself: not attacked twice
    assert [r[0] for r in ladder_rungs(LocalTraining(lr=0.1, batch_size=32, optimizer="adam"), 4)] == \
        ["1 image, 1 step", "the app: 4 images, 1 step"]
    hooks, model, x, y = _ladder_hooks(training)
    received = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    app = simulated_update(ClientUpdate(5, 1, received, received, 4, partition_id=0, num_partitions=1), model, training,
                           (x - 0.5) / 0.5, y, partition_id=0, seed=11)
    frame = run_ladder([app], hooks, AttackSettings(iterations=3, restarts=1), tmp_path, {})
    assert frame.groupby("ladder_rung").size().tolist() == [4, 4, 4, 4]
    one = frame[frame.ladder_rung == 1]
    assert one["batch_size"].tolist() == [1, 1, 1, 1] and one["replay_exact"].all()
    assert frame[frame.ladder_rung == 2]["replay_exact"].all()  # one full-batch step: no order to get wrong
    table = (tmp_path / "ladder.md").read_text()
    assert table.count("\n| ") == 4 and "the app: 4 images, 4 steps" in table
    assert (tmp_path / "ladder" / "4" / "results.csv").exists()


def replace_epochs(training, epochs):
    from dataclasses import replace
    return replace(training, epochs=epochs)


HOOKS = '''
import torch
from fedleak.data.datasets import load_dataset
from fedleak.models.functional import LocalTraining

def build_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10))

def normalisation():
    return (0.5,), (0.5,)

def local_training():
    return LocalTraining(lr=0.1, batch_size=2, momentum=0.9)
'''


def test_audit_updates_ladder_flag_writes_the_table_and_refuses_without_ground_truth(tmp_path, monkeypatch):
    from fedleak.harness.cli.main import main
    from fedleak.harness.flower.ladder import simulated_update
    from fedleak.threat_models.update_files import ClientUpdate, save_update
    (tmp_path / "ladder_hooks.py").write_text(HOOKS)
    truth = "\ndef private_data(p, n):\n    return load_dataset('digits').victims([0, 1, 2, 3])\n"
    (tmp_path / "ladder_truth.py").write_text(HOOKS + truth)
    monkeypatch.syspath_prepend(str(tmp_path))
    import ladder_truth
    model = ladder_truth.build_model()
    x, y = ladder_truth.private_data(0, 1)
    received = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    update = simulated_update(ClientUpdate(9, 1, received, received, 4, partition_id=0, num_partitions=1), model,
                              ladder_truth.local_training(), (x - 0.5) / 0.5, y, partition_id=0, seed=0)
    save_update(update, tmp_path / "saved")
    common = ["audit-updates", str(tmp_path / "saved"), "--iterations", "2", "--ladder", "--quiet"]
    assert main(common + ["--hooks", "ladder_truth", "--output", str(tmp_path / "out")]) == 0
    assert "| 3 | the app: 4 images, 2 steps |" in (tmp_path / "out" / "ladder.md").read_text()
    # the app's rung is the audit's own rows, not a second run of the same attack on the same updates
    import pandas as pd
    ladder, audit = pd.read_csv(tmp_path / "out" / "ladder.csv"), pd.read_csv(tmp_path / "out" / "results.csv")
    assert ladder[ladder.ladder_rung == 3]["psnr"].tolist() == audit["psnr"].tolist()
    assert not (tmp_path / "out" / "ladder" / "3").exists()
    assert main(common + ["--hooks", "ladder_hooks", "--output", str(tmp_path / "refused")]) == 2
    assert not (tmp_path / "refused" / "results.csv").exists()  # refused before any attack ran


# ------------------------------------------------------------------------------ the ladder in the matrix, the realistic preset
def _small_realistic(**changes):
    """The shipped realistic matrix cut to one context (digits, the quickstart CNN untrained), IG only,
    none and dp (sigma=1), at the smoke budget."""
    import dataclasses
    from fedleak.harness.matrix.config import load_matrix
    matrix = load_matrix("realistic")
    small = dataclasses.replace(
        matrix, preset="smoke", datasets=[d for d in matrix.datasets if d.name == "digits"],
        victims=[v for v in matrix.victims if v.model == "quickstart-cnn" and v.rounds == 0],
        attacks=[a for a in matrix.attacks if a.name == "ig"],
        defenses=[d if d.name == "none" else dataclasses.replace(d, sweep={"sigma": [1.0]})
                  for d in matrix.defenses if d.name in ("none", "dp")])
    return dataclasses.replace(small, **changes)


def test_the_realistic_preset_is_shipped_with_the_settings_the_issue_names():
    from fedleak.harness.run.config import shipped_presets
    from fedleak.harness.matrix.config import load_matrix
    assert "realistic" in shipped_presets("matrix")
    matrix = load_matrix("realistic")
    assert {d.name for d in matrix.datasets} == {"photos", "digits"} and matrix.images.batch_size == 8
    assert {(v.model, v.rounds) for v in matrix.victims} == {(m, r) for m in ("quickstart-cnn", "resnet18") for r in (0, 5)}
    (threat,) = matrix.threat_models
    training = threat.local_training()
    assert (threat.name, training.epochs, training.optimizer, training.momentum, training.shuffle) == \
        ("fedavg", 1, "sgd", 0.9, True) and training.steps(8) == 2
    assert {d.name for d in matrix.defenses} == {"none", "dp", "prune", "quantize", "sketch"} and matrix.ladder
    assert matrix.gate.enabled and not matrix.gate.defenses  # every defense gated: every verdict gets a status
    assert matrix.gate.max_psnr_over_label == 10.0  # the "recovered" margin: 3 dB flags noise on the photos


def test_matrix_ladder_adds_the_easier_rungs_undefended_for_multi_step_fedavg_only():
    import dataclasses
    from fedleak.harness.matrix.plan import plan_matrix
    from fedleak.harness.matrix.run import prepare_matrix
    plan = plan_matrix(prepare_matrix(_small_realistic()))
    rungs = sorted((c.labels["ladder_rung"], c.labels["ladder_label"], c.config.data.batch_size,
                    c.config.threat_model.local_batch_size, c.config.defense.name) for c in plan.ladder)
    assert rungs == [(1, "1 image, 1 step", 1, None, "none"), (2, "8 images, 1 step", 8, None, "none")]
    assert all(c.config.data.victims == list(range(8)) for c in plan.ladder)  # the context's images
    keys = {c.key for c in plan.ladder}
    assert keys <= {t.key for t in plan.tasks()} and not keys & {c.key for c in plan.cells}
    # the undefended cells (every verdict's positive control) run before the defended ones: a run cut short by
    # a timeout still has the control of the verdicts it finished
    cells = [t for t in plan.tasks() if t.key in {c.key for c in plan.cells}]
    defended = [c.config.defense.name != "none" for c in cells]
    assert defended == sorted(defended) and not defended[0]
    from fedleak.harness.matrix.ladder import matrix_ladder_cells
    from fedleak.harness.matrix.cells import expand
    assert matrix_ladder_cells(_small_realistic(ladder=False), []) == []
    assert [c.key for c in expand(_small_realistic(ladder=False))] == [c.key for c in plan.cells]
    (threat,) = _small_realistic().threat_models
    one_step = _small_realistic(threat_models=[dataclasses.replace(threat, local_batch_size=None)])
    assert matrix_ladder_cells(one_step, []) == []  # one step: the context is rung 2 already
    two_epochs = _small_realistic(threat_models=[dataclasses.replace(threat, epochs=2)])
    assert [c.labels["ladder_label"] for c in matrix_ladder_cells(two_epochs, [])][-1] == "8 images, 2 steps (1 epoch)"


def test_the_realistic_preset_at_smoke_budget_runs_and_says_inconclusive_where_the_attacks_fail(tmp_path):
    """A reduced realistic matrix end to end: the untrained quickstart CNN, 8 digits in 2 momentum steps, 2
    iterations of IG: nothing is rebuilt undefended, so dp's verdict is INCONCLUSIVE for that reason, never holds;
    the ladder's rows and table are written beside the results."""
    import pandas as pd
    from fedleak.harness.matrix.run import prepare_matrix, run_matrix
    run = run_matrix(prepare_matrix(_small_realistic()), tmp_path, workers=0, progress=False)
    assert not run.schedule.failed
    (dp,) = [v for v in run.verdicts if v.defense_label == "dp (sigma=1)"]
    assert dp.status == "INCONCLUSIVE" and dp.control_recovered == 0
    assert any("do not succeed here without a defense" in r for r in dp.reasons)
    ladder = pd.read_csv(tmp_path / "ladder.csv")
    assert sorted(ladder.groupby("ladder_rung").size().items()) == [(1, 8), (2, 8)]
    assert set(ladder["batch_size"]) == {1, 8} and "ladder_rung" not in pd.read_csv(tmp_path / "results.csv")
    table = (tmp_path / "ladder.md").read_text()
    assert "| 1 | 1 image, 1 step | 8 |" in table and "| 3 | the context itself, undefended | 8 |" in table


def test_audit_updates_rounds_attacks_only_the_rounds_asked_and_names_the_recorded_ones(tmp_path, monkeypatch, capsys):
    """--rounds: an audit after k rounds of FedAvg attacks round k's updates, not every round before it."""
    import pandas as pd
    from fedleak.harness.cli.main import main
    from fedleak.harness.flower.ladder import simulated_update
    from fedleak.threat_models.update_files import ClientUpdate, save_update
    truth = "\ndef private_data(p, n):\n    return load_dataset('digits').victims([0, 1, 2, 3])\n"
    (tmp_path / "rounds_truth.py").write_text(HOOKS + truth)
    monkeypatch.syspath_prepend(str(tmp_path))
    import rounds_truth
    model = rounds_truth.build_model()
    x, y = rounds_truth.private_data(0, 1)
    received = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    for rnd in (1, 2):
        save_update(simulated_update(ClientUpdate(9, rnd, received, received, 4, partition_id=0, num_partitions=1), model,
                                     rounds_truth.local_training(), (x - 0.5) / 0.5, y, partition_id=0, seed=rnd),
                    tmp_path / "saved")
    common = ["audit-updates", str(tmp_path / "saved"), "--hooks", "rounds_truth", "--iterations", "1", "--quiet"]
    assert main(common + ["--rounds", "2", "--output", str(tmp_path / "r2")]) == 0
    assert pd.read_csv(tmp_path / "r2" / "results.csv")["round"].tolist() == [2, 2, 2, 2]
    assert main(common + ["--rounds", "5", "--output", str(tmp_path / "r5")]) == 2
    assert "--rounds 5: no recorded update of round 5; the updates are of rounds 1, 2" in capsys.readouterr().err
