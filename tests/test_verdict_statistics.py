"""Issue #20: a verdict a team can act on. The worst image and the share of images recovered before the
median; "recovered" defined once; the positive control (a failure of the attacks means something only
where the same attacks succeed without the defense); "degenerate" never outranks a measured leak; the
budget check over every attack row, iteration-free ones named as such; one round seed per image; the
strongest attacks in the shipped preset. Synthetic rows where the arithmetic is the point, tiny victims
and smoke budgets where the pipeline is."""
import math
from dataclasses import replace
import textwrap

import numpy as np
import pandas as pd
import pytest

from fedleak.harness.verdict.gate import GateConfig
from fedleak.harness.verdict.judge import compute_verdicts

CONTEXT = {"dataset": "digits", "model": "mlp", "victim_state": "untrained", "threat_model": "fedsgd",
           "knowledge_preset": "informed"}
GATE = GateConfig(max_psnr_over_label=3.0, min_images=2, budget_factor=4)  # statistic: the default


def rows(defense: str, attack: str, adaptive: bool, psnr: list[float], baseline: float = 10.0,
         ssim: list[float] | None = None, name: str | None = None) -> pd.DataFrame:
    n = len(psnr)
    return pd.DataFrame({**{k: [v] * n for k, v in CONTEXT.items()}, "defense_label": defense, "defense": defense,
                         "attack_label": attack, "attack": name or attack, "adaptive": adaptive, "seed": 0,
                         "image_index": range(n), "psnr": psnr, "mse": [10 ** (-p / 10) for p in psnr],
                         "ssim": ssim or [min(p / 100, 0.5) for p in psnr], "lpips": [1 - p / 100 for p in psnr],
                         "label_correct": True, "true_label": 0, "predicted_label": 0,
                         "label_baseline_psnr": baseline, "psnr_over_label": np.subtract(psnr, baseline),
                         "bytes_sent": 100})


def check(degenerate=False, randomised=False, defense="d"):
    return {"labels": {**CONTEXT, "defense_label": defense}, "context": CONTEXT, "degenerate": degenerate,
            "randomised": randomised}


def verdict_of(frame, checks=(), budget=None, gate=GATE, defense="d"):
    frame = frame.reset_index(drop=True)
    (v,) = [v for v in compute_verdicts(frame, list(checks), budget, gate) if v.defense_label == defense]
    return v


def recovered_control(n: int) -> pd.DataFrame:
    """The undefended run recovering all n images (the positive control passes)."""
    return rows("none", "a", False, [100.0] * n)


# ------------------------------------------------------------------------------ "recovered", once
def test_recovered_needs_30_db_and_10_above_the_label_or_ssim_09():
    from fedleak.harness.verdict.judge import RECOVERED_OVER_LABEL, RECOVERED_PSNR, RECOVERED_SSIM, recovered
    assert (RECOVERED_PSNR, RECOVERED_OVER_LABEL, RECOVERED_SSIM) == (30.0, 10.0, 0.9)
    assert recovered(35.0, 0.5, 20.0)
    assert not recovered(35.0, 0.5, 5.0)          # 35 dB, yet the label alone gives 30: not the image
    assert not recovered(29.9, 0.5, 25.0)
    assert recovered(25.0, 0.95, 2.0)             # structure rebuilt, PSNR held down by a brightness shift
    assert recovered(31.0, 0.1, math.nan)         # no label baseline measured: PSNR alone
    assert list(recovered(pd.Series([100.0, 12.0]), pd.Series([1.0, 0.2]), pd.Series([90.0, 2.0]))) == [True, False]


# ------------------------------------------------------------------------ worst image, share, median
def test_a_median_no_longer_hides_three_images_rebuilt_exactly():
    """The issue's example: per image over the label [87, 87, 87, -1, -1, -1, -1, -1] has a median of -1."""
    psnr = [97.0, 97.0, 97.0, 9.0, 9.0, 9.0, 9.0, 9.0]
    frame = pd.concat([recovered_control(8), rows("d", "a", False, psnr)], ignore_index=True)
    budget = rows("d", "a", False, psnr)
    v = verdict_of(frame, [check()], budget)
    assert v.psnr == 9.0 and v.psnr_over_label == -1.0                    # the median says nothing leaked
    assert v.worst_psnr == 97.0 and v.worst_psnr_over_label == 87.0
    assert (v.recovered, v.share_recovered) == (3, 3 / 8)
    assert v.worst_ssim == 0.5 and v.worst_lpips == pytest.approx(0.03)
    assert [p["recovered"] for p in v.per_image] == [True] * 3 + [False] * 5
    assert (v.status, v.statistic, v.values) == ("LEAKS", "worst", {"psnr_over_label": 87.0})
    # the old default (median) called this protection
    median = verdict_of(frame, [check()], budget, GateConfig(max_psnr_over_label=3.0, min_images=2, statistic="median"))
    assert median.status == "holds"


def test_evaluate_defense_and_the_ci_preset_gate_the_worst_image():
    from fedleak.harness.verdict.gate import DEFAULT_GATE
    from fedleak.harness.matrix.config import load_matrix
    assert DEFAULT_GATE.statistic == "worst"
    assert load_matrix("ci").gate.statistic == "worst"


def test_the_headline_reads_worst_image_and_share_before_the_median():
    from fedleak.reports.verdicts import headline
    psnr = [97.0, 97.0, 97.0, 9.0, 9.0, 9.0, 9.0, 9.0]
    v = verdict_of(pd.concat([recovered_control(8), rows("d", "a", False, psnr)], ignore_index=True), [check()])
    line = headline(v)
    assert line.startswith("worst image 97.0 dB (+87.0 dB above its label), 3 of 8 images recovered, median 9.0 dB [")
    from fedleak.reports.verdicts import verdict_table
    table = verdict_table([v])
    assert table.header[1:3] == ["worst image", "recovered"] and table.rows[0][1:3] == ["97.0 (+87.0)", "3/8"]


# ------------------------------------------------------------------------------- positive control
def test_holds_needs_the_undefended_run_to_recover_those_images():
    defended = rows("d", "a", False, [11.0, 12.0])
    budget = rows("d", "a", False, [11.0, 12.0])
    assert verdict_of(pd.concat([recovered_control(2), defended]), [check()], budget).status == "holds"
    # undefended, the attacks reach 12 dB (the label gives 10): their failure under the defense says nothing
    weak = rows("none", "a", False, [12.0, 12.5])
    v = verdict_of(pd.concat([weak, defended]), [check()], budget)
    assert (v.status, v.gate, v.control_recovered) == ("INCONCLUSIVE", "fail", 0.0)
    assert any(r.startswith("the attacks do not succeed here without a defense: undefended, 2 of these 2 images")
               for r in v.reasons)
    # one image of two recovered undefended is not enough to vouch for the other
    half = rows("none", "a", False, [100.0, 12.0])
    assert verdict_of(pd.concat([half, defended]), [check()], budget).control_recovered == 0.5
    assert verdict_of(pd.concat([half, defended]), [check()], budget).status == "INCONCLUSIVE"
    # no undefended run at all in this context
    alone = verdict_of(defended, [check()], budget)
    assert alone.status == "INCONCLUSIVE" and alone.control_recovered is None
    assert any("no undefended run in this context" in r for r in alone.reasons)
    # another context's undefended run is not this context's control
    elsewhere = recovered_control(2).assign(threat_model="vfl")
    assert verdict_of(pd.concat([elsewhere, defended]), [check()], budget).control_recovered is None


def test_an_undefended_context_where_no_attack_succeeds_makes_every_verdict_inconclusive(tmp_path):
    """A real matrix: IG with one iteration recovers nothing, with or without a defense."""
    from fedleak.harness.matrix.config import matrix_from_dict
    from fedleak.harness.matrix.run import prepare_matrix, run_matrix
    from test_matrix import smoke_matrix
    matrix = prepare_matrix(matrix_from_dict(smoke_matrix(
        plugins=[], images={"indices": [0, 1]}, attacks=[{"name": "ig", "adaptive": [False],
                                                          "budgets": {"smoke": {"iterations": 1}}}],
        defenses=[{"name": "none"}, {"name": "prune", "options": {"ratio": 0.5}}, {"name": "quantize"}],
        gate={"max_psnr_over_label": 3.0, "min_images": 2, "budget_factor": 1})))
    run = run_matrix(matrix, tmp_path / "m", workers=0, progress=False)
    gated = [v for v in run.verdicts if v.gated]
    assert len(gated) == 2 and {v.defense for v in gated} == {"prune", "quantize"}
    undefended = next(v for v in run.verdicts if v.defense == "none")
    assert undefended.recovered == 0
    for v in gated:
        assert v.status == "INCONCLUSIVE" and v.control_recovered == 0.0, (v.status, v.reasons)
        assert any(r.startswith("the attacks do not succeed here without a defense") for r in v.reasons)


# ----------------------------------------------------------------------- degenerate vs the evidence
def test_a_measured_leak_outranks_the_degenerate_check():
    frame = pd.concat([recovered_control(2), rows("d", "a", False, [100.0, 9.0])], ignore_index=True)
    v = verdict_of(frame, [check(degenerate=True)], rows("d", "a", False, [100.0, 9.0]))
    assert v.status == "LEAKS" and v.degenerate
    assert not any(r.startswith("degenerate") for r in v.reasons)
    # under a lax bound nothing is broken, but an image was recovered: not "protects the data"
    lax = GateConfig(max_psnr=200.0, min_images=2, budget_factor=1)
    v = verdict_of(frame, [check(degenerate=True)], gate=lax)
    assert v.status != "DEGENERATE" and v.recovered == 1
    assert compute_verdicts(frame, [check(degenerate=True)])[1].status == ""   # not gated: no DEGENERATE either
    # nothing recovered and nothing depends on the data: DEGENERATE as before
    quiet = pd.concat([recovered_control(2), rows("d", "a", False, [11.0, 12.0])], ignore_index=True)
    assert verdict_of(quiet, [check(degenerate=True)], rows("d", "a", False, [11.0, 12.0])).status == "DEGENERATE"


ZERO_FOR_SOME = textwrap.dedent('''
    import torch
    from fedleak.defenses.base import Defense

    class RawForSome(Defense):
        """The update as it is where the batch's label is 0 or 1 (read off the last layer's gradient: the
        label's row is the largest), zeros for the others: a per-image decision keyed on the data."""
        name = "raw-for-some"

        def share(self, update, context):
            raw = int(update[-1].detach().norm(dim=1).argmax()) < 2
            return [u.detach().clone() if raw else torch.zeros_like(u) for u in update], {}
''')


@pytest.fixture
def raw_for_some(tmp_path, monkeypatch):
    (tmp_path / "raw_for_some.py").write_text(ZERO_FOR_SOME)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "raw_for_some:RawForSome"


def test_the_data_dependence_check_reads_every_attacked_image(raw_for_some):
    from fedleak.harness.matrix.checks import data_dependence
    from fedleak.harness.run.config import DefenseConfig, RunConfig
    from fedleak.harness.run.plugins import load_plugins
    from fedleak.threat_models.victim import VictimSpec
    load_plugins([raw_for_some])
    config = RunConfig(victim=VictimSpec(model="mlp", options={"width": 16}), defense=DefenseConfig("raw-for-some"),
                       device="cpu")
    # held-out digits 1, 2, 3 (labels 3, 8, 7) are sent as zeros, digit 0 (label 1) raw: two victims alone
    # (the first and the next of another label) say degenerate
    assert data_dependence(config, (1, 2))["degenerate"] is True
    every = data_dependence(config, (1, 2, 3, 0))
    assert every["degenerate"] is False and every["victims"][:4] == [1, 2, 3, 0]


def test_a_defense_that_sends_a_few_images_raw_and_the_rest_as_zeros_leaks(tmp_path, capsys, monkeypatch, raw_for_some):
    """The issue's measured case through the user's command: evaluate-defense (no [gate]: its default)."""
    import json
    from fedleak.harness.cli.main import main
    from test_matrix import smoke_matrix, write_toml
    monkeypatch.setattr("fedleak.harness.matrix.evaluate_defense.registered_attacks", lambda: ["idlg"])
    base = write_toml(tmp_path / "base.toml", smoke_matrix(
        plugins=[], images={"indices": [0, 1, 2, 3]}, attacks=[{"name": "idlg", "budgets": {"smoke": {"iterations": 20}}}],
        defenses=[{"name": "none"}]))
    status = main(["evaluate-defense", raw_for_some, "--matrix", str(base), "--budget", "smoke", "--workers", "0",
                   "--quiet", "--output", str(tmp_path / "eval")])
    printed = capsys.readouterr().out
    assert status == 0, printed
    verdicts = json.loads((tmp_path / "eval" / "verdicts.json").read_text())
    (mine,) = [v for v in verdicts if v["defense"] == "raw-for-some"]
    assert mine["status"] == "LEAKS" and mine["statistic"] == "worst" and mine["worst_psnr"] >= 80
    assert 1 <= mine["recovered"] < mine["n_images"] == 4 and mine["psnr"] < 30     # the median hides it
    assert mine["degenerate"] is False
    line = next(line for line in printed.splitlines() if line.startswith("verdict: LEAKS"))
    assert line.index("worst image") < line.index("images recovered") < line.index("median")


# ---------------------------------------------------------------------------------- budget check
def test_the_budget_check_reads_every_attack_row_and_names_iteration_free_ones():
    defended = pd.concat([rows("d", "a", False, [12.0, 12.0]), rows("d", "b", True, [9.0, 9.0]),
                          rows("d", "fc", False, [8.0, 8.0])], ignore_index=True)
    frame = pd.concat([recovered_control(2), defended], ignore_index=True)
    # b wins no image, but with 4× its budget it rebuilds one: the verdict is not converged
    rerun = pd.concat([rows("d", "a", False, [12.1, 12.0]), rows("d", "b", True, [9.0, 40.0]),
                       rows("d", "fc", False, [8.0, 8.0])], ignore_index=True)
    v = verdict_of(frame, [check()], rerun)
    assert (v.status, v.converged, v.budget_attack) == ("UNCONVERGED", False, "b (adaptive)")
    assert set(v.budget_attacks) == {"a", "b (adaptive)", "fc"} and v.iteration_free == ("fc",)
    # only an analytic read-out reran, and repeated itself: iteration-free, not "converged"
    only = verdict_of(pd.concat([recovered_control(2), rows("d", "fc", False, [8.0, 8.0])]), [check()],
                      rows("d", "fc", False, [8.0, 8.0]))
    assert only.converged is None and only.iteration_free == ("fc",) and only.status == "holds"
    from fedleak.reports.verdicts import verdict_table
    assert "iteration-free" in verdict_table([only]).rows[0]


def test_the_budget_check_reruns_every_finished_cell_of_a_gated_verdict():
    from fedleak.harness.matrix.budget_check import BudgetCheck
    from fedleak.harness.matrix.cells import expand
    from fedleak.harness.matrix.config import matrix_from_dict
    from test_matrix import smoke_matrix
    matrix = matrix_from_dict(smoke_matrix(plugins=[], attacks=[{"name": "idlg"}, {"name": "ig"}, {"name": "analytic-fc"}],
                                           defenses=[{"name": "none"}, {"name": "prune"}],
                                           gate={"max_psnr_over_label": 3.0}))
    cells = [c for c in expand(matrix) if c.config.defense.name == "prune"]
    check = BudgetCheck(cells, matrix.gate, rows_of=None)
    again = check.expand(cells)
    assert len(cells) == 6 and len(again) == 6       # 3 attacks × 2 modes, not the winner's cells alone
    assert all(c.labels["check"] == "budget" for c in again)
    factor = matrix.gate.budget_factor
    assert factor > 1 and {(c.config.attack.name, c.config.attack.iterations) for c in again} == \
        {(c.config.attack.name, factor * c.config.attack.iterations) for c in cells}


def test_the_budget_check_covers_every_row_that_can_change_the_verdict():
    """On each image, every row within the margin of the gated statistic reruns there (and one not yet
    measured); a row further below does not, nor an adaptive row that repeated its non-adaptive twin."""
    from fedleak.harness.matrix.budget_check import BudgetCheck, rerun_images
    from fedleak.harness.matrix.cells import expand
    from fedleak.harness.matrix.config import matrix_from_dict
    from test_matrix import smoke_matrix
    matrix = matrix_from_dict(smoke_matrix(
        plugins=[], images={"indices": [0, 1, 2, 3]}, attacks=[{"name": "idlg"}, {"name": "ig"}, {"name": "dlg"}],
        defenses=[{"name": "none"}, {"name": "prune"}], gate={"max_psnr_over_label": 3.0, "budget_margin": 6.0}))
    cells = {(c.labels["attack_label"], c.labels["adaptive"]): c
             for c in expand(matrix) if c.config.defense.name == "prune"}
    psnr = {("idlg", False): [20.0, 12.0, 13.0, 11.0],      # the worst image: 20 - 10 = +10 over its label
            ("idlg", True): [19.0, 30.0 - 15.9, 9.0, 9.0],   # image 1: 4.1 over, within 6 dB of +10
            ("ig", False): [11.0, 11.0, 11.0, float("nan")],  # image 3 not measured yet
            ("ig", True): [11.5, 11.0, 11.0, float("nan")],
            ("dlg", False): [13.9, 12.0, 12.0, 12.0],        # 3.9 over: 6.1 below the worst image
            ("dlg", True): [13.9, 12.0, 12.0, 12.0]}         # repeats its non-adaptive twin exactly
    frame = pd.concat([rows("d", a, adaptive, values).assign(cell=cells[a, adaptive].key)
                       for (a, adaptive), values in psnr.items()], ignore_index=True)
    frame.loc[frame["psnr"].isna(), "psnr_over_label"] = np.nan
    images = rerun_images(list(cells.values()), frame, matrix.gate)
    assert images == {cells["idlg", False].key: [0], cells["idlg", True].key: [0, 1], cells["ig", False].key: [3],
                      cells["ig", True].key: [3], cells["dlg", False].key: []}
    # the property itself: every (row, image) within the margin of the worst image, or unmeasured, is covered
    level = frame.groupby("image_index")["psnr_over_label"].max().max()
    for (attack, adaptive), cell in cells.items():
        mine = frame[frame["cell"] == cell.key]
        must = mine[mine["psnr_over_label"].isna() | (mine["psnr_over_label"] >= level - 6.0)]["image_index"]
        twin = cells[attack, False].key if attack == "dlg" else cell.key
        assert set(must) <= set(images[twin]), (attack, adaptive)
    # the reruns are cells of their images only, at the factor's budget; a cell with no image is not rerun
    again = BudgetCheck(list(cells.values()), matrix.gate, rows_of=None).expand(list(cells.values()), frame)
    assert sorted(c.config.data.victim_indices() for c in again) == [[0], [0, 1], [3], [3]]
    assert all(c.labels["images"] == c.config.data.victim_indices() for c in again)
    # the mean moves with every image: every row reruns on every image
    mean = replace(matrix.gate, statistic="mean")
    assert all(v == [0, 1, 2, 3] for k, v in rerun_images(list(cells.values()), frame, mean).items()
               if k != cells["dlg", True].key)


def test_a_rerun_on_some_images_that_repeats_itself_is_iteration_free():
    frame = pd.concat([recovered_control(3), rows("d", "fc", False, [8.0, 9.0, 8.5])], ignore_index=True)
    v = verdict_of(frame, [check()], rows("d", "fc", False, [8.0, 9.0, 8.5]).iloc[[1]])
    assert v.iteration_free == ("fc",) and v.converged is None and v.status == "holds"
    moved = verdict_of(frame, [check()], rows("d", "fc", False, [8.0, 11.0, 8.5]).iloc[[1]])
    assert moved.iteration_free == () and moved.converged is False and moved.status == "UNCONVERGED"


def test_a_verdict_that_already_leaks_gets_no_budget_check():
    from fedleak.harness.matrix.budget_check import BudgetCheck
    from fedleak.harness.matrix.cells import expand
    from fedleak.harness.matrix.config import matrix_from_dict
    from test_matrix import smoke_matrix

    class Done:
        def done(self, key):
            return True

        def error(self, key):
            return None

    matrix = matrix_from_dict(smoke_matrix(plugins=[], attacks=[{"name": "idlg"}], defenses=[{"name": "prune"}],
                                           gate={"max_psnr_over_label": 3.0}))
    cells = expand(matrix)
    leaky = BudgetCheck(cells, matrix.gate, lambda done, store: rows("d", "a", False, [9.0, 100.0]))
    assert leaky(Done()) == []                       # the worst image is 90 dB over its label already
    quiet = BudgetCheck(cells, matrix.gate, lambda done, store: rows("d", "a", False, [9.0, 12.0]))
    assert len(quiet(Done())) == len(cells) == 2
    unmeasured = rows("d", "a", False, [9.0, 100.0]).assign(psnr_over_label=np.nan)   # no label baseline yet
    assert len(BudgetCheck(cells, matrix.gate, lambda done, store: unmeasured)(Done())) == 2


# -------------------------------------------------------------------------------- one seed per image
def test_every_image_gets_its_own_round_seed_and_keeps_it_in_any_cell():
    from fedleak.harness.run.config import DataConfig, RunConfig
    from fedleak.harness.matrix.cells import expand
    from fedleak.harness.matrix.config import matrix_from_dict
    from fedleak.harness.run.runner import batch_seeds
    from test_matrix import smoke_matrix
    (cell,) = [c for c in expand(matrix_from_dict(smoke_matrix(plugins=[], defenses=[{"name": "none"}])))]
    assert cell.config.data.batch_seed == "image"
    config = RunConfig(data=DataConfig(victims=[3, 5], num_victims=2, batch_seed="image"), seed=0)
    seeds = [batch_seeds(config, n, [i]) for n, i in enumerate([3, 5])]
    assert seeds[0][1] != seeds[1][1] and seeds[0][0] == seeds[1][0] == 0   # one client, a round seed per image
    assert seeds[0][2] != seeds[1][2] and max(s[2] for s in seeds) * 1009 < 2 ** 32   # GGL's numpy seed
    assert batch_seeds(config, 7, [5]) == seeds[1]                          # whichever position it holds
    other = batch_seeds(RunConfig(data=DataConfig(batch_seed="image"), seed=1), 0, [3])
    assert other[1] not in {s[1] for s in seeds}
    # a randomised defense draws afresh per image: DP's noise under the two images' seeds differs
    import torch
    from fedleak.defenses import build_defense
    from fedleak.defenses.base import ShareContext
    dp = build_defense("dp", sigma=1.0, clip=1.0, mode="update")
    update = [torch.zeros(64)]
    draws = [dp.share(update, ShareContext(["w"], 1, client, 0, seed))[0][0] for client, seed, _ in seeds]
    assert not torch.equal(draws[0], draws[1])


def test_a_matrix_run_records_one_round_seed_per_image(tmp_path):
    from fedleak.harness.matrix.config import matrix_from_dict
    from fedleak.harness.matrix.run import prepare_matrix, run_matrix
    from test_matrix import smoke_matrix
    matrix = prepare_matrix(matrix_from_dict(smoke_matrix(
        plugins=[], images={"indices": [1, 2, 3]}, attacks=[{"name": "idlg", "adaptive": [False]}],
        defenses=[{"name": "dp", "options": {"sigma": 0.1, "clip": 1.0, "mode": "update"}}])))
    run_matrix(matrix, tmp_path / "m", workers=0, progress=False)
    results = pd.read_parquet(tmp_path / "m" / "results.parquet")
    assert results["round_seed"].nunique() == 3


# ------------------------------------------------------------------------- the strongest attacks shipped
def test_the_ci_preset_runs_defense_loop_with_lbfgs_and_adam_and_declares_every_budget():
    from fedleak.harness.matrix.evaluate_defense import evaluation_matrix
    from fedleak.harness.matrix.cells import expand
    from fedleak.harness.matrix.config import PRESETS, load_matrix
    base = load_matrix("ci")
    loops = [a for a in base.attacks if a.name == "defense-loop"]
    assert {a.options.get("optimizer", "adam") for a in loops} == {"adam", "lbfgs"}
    assert len({a.display for a in loops}) == 2
    evaluator = {"defense-loop", "analytic-fc", "layer-subset", "learn-to-invert"}
    for entry in base.attacks:
        if entry.name in evaluator:
            assert all(getattr(entry.budgets, preset) is not None and getattr(entry.budgets, preset).iterations
                       for preset in PRESETS), entry
    matrix, name, _ = evaluation_matrix("ci", "fedleak.examples.broken_defenses:PublicSeedNoise", {}, "ci")
    labels = {c.labels["attack_label"] for c in expand(matrix) if c.config.defense.name == name}
    assert {"defense-loop", "defense-loop (lbfgs)", "analytic-fc", "learn-to-invert"} <= labels
    assert matrix.gate.statistic == "worst"
