"""The verdict machinery of issue #12 (items 2-7): per (context, defense setting) one record with the
strongest attack per image, a bootstrap interval, the label baseline, paired adaptive gains, the
data-dependence check, the budget check, the gate's decision and why; stale-result detection; DP's
ε in context. Synthetic rows where the arithmetic is the point, tiny victims and smoke budgets where
the pipeline is."""
import math
import subprocess
import sys
import textwrap
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from fedleak.harness.verdict.gate import GateConfig
from fedleak.harness.verdict.judge import bootstrap_interval, compute_verdicts

CONTEXT = {"dataset": "digits", "model": "mlp", "victim_state": "untrained", "threat_model": "fedsgd",
           "knowledge_preset": "informed"}


def rows(defense: str, attack: str, adaptive: bool, psnr: list[float], baseline: list[float] | None = None,
         predicted: list[int] | None = None, name: str | None = None, seed: int = 0) -> pd.DataFrame:
    n = len(psnr)
    baseline = baseline or [10.0] * n
    return pd.DataFrame({**{k: [v] * n for k, v in CONTEXT.items()}, "defense_label": defense, "defense": defense,
                         "attack_label": attack, "attack": name or attack, "adaptive": adaptive, "seed": seed,
                         "image_index": range(n), "psnr": psnr, "mse": [10 ** (-p / 10) for p in psnr],
                         "ssim": [p / 100 for p in psnr], "lpips": [1 - p / 100 for p in psnr],
                         "label_correct": True, "true_label": 0, "predicted_label": predicted or [0] * n,
                         "label_baseline_psnr": baseline, "psnr_over_label": np.subtract(psnr, baseline),
                         "bytes_sent": 100})


# ------------------------------------------------------------------------------------ statistics
def test_bootstrap_interval_of_the_median_is_deterministic_and_narrows_with_more_images():
    few = bootstrap_interval([10, 12, 14, 30])
    assert few == bootstrap_interval([10, 12, 14, 30])          # a fixed seed: same rows, same interval
    assert few[0] <= 13 <= few[1]
    wide = bootstrap_interval(list(range(8)))
    narrow = bootstrap_interval(list(range(8)) * 8)
    assert narrow[1] - narrow[0] < wide[1] - wide[0]
    assert bootstrap_interval([5.0]) == (5.0, 5.0)
    assert all(math.isnan(v) for v in bootstrap_interval([]))


def test_per_image_best_attack_paired_gain_and_identical_modes():
    frame = pd.concat([
        rows("d", "a", False, [10, 20, 30, 40]),
        rows("d", "a", True, [10, 20, 30, 40]),          # adaptive repeats the non-adaptive row exactly
        rows("d", "b", False, [15, 15, 15, 15]),
        rows("d", "b", True, [25, 22, 35, 12]),          # knowing the defense helps on images 0, 1 and 2
    ], ignore_index=True)
    (v,) = compute_verdicts(frame)
    assert v.identical_modes == ("a",) and v.attacks == 3    # a (once), b, b (adaptive)
    assert v.n_images == 4
    per_image = [p["psnr"] for p in v.per_image]
    assert per_image == [25, 22, 35, 40] and v.psnr == pytest.approx(30)
    # paired per image: best of all rows − best of non-adaptive rows = [10, 2, 5, 0] -> median 3.5; the
    # old "difference of medians pooled across attacks" said 18.5 − 22.5 = −4 (adaptive weaker)
    assert v.adaptive_gain == pytest.approx(3.5)
    assert v.adaptive_gain_interval[0] <= 3.5 <= v.adaptive_gain_interval[1]
    assert v.best_attack == "b (adaptive)"                  # wins images 0, 1 and 2
    assert v.psnr_over_label == pytest.approx(20) and v.label_baseline_psnr == pytest.approx(10)


def test_only_identical_adaptive_rows_give_no_adaptive_gain():
    frame = pd.concat([rows("d", "a", False, [10, 20]), rows("d", "a", True, [10, 20])], ignore_index=True)
    (v,) = compute_verdicts(frame)
    assert v.adaptive_gain is None and v.best_attack == "a" and v.identical_modes == ("a",)


def test_gain_over_the_label_is_read_per_row_against_its_own_label():
    frame = pd.concat([rows("d", "a", False, [14, 14], baseline=[13, 13]),
                       rows("d", "b", False, [12, 12], baseline=[6, 6], predicted=[3, 3])], ignore_index=True)
    (v,) = compute_verdicts(frame)
    # b has the wrong label and a worse image, yet rebuilt more than ITS label gives
    assert v.psnr == 14 and v.psnr_over_label == pytest.approx(6)


# ----------------------------------------------------------------------------------------- gate
GATE = GateConfig(max_psnr_over_label=3.0, statistic="median", min_images=2, budget_factor=4)


def judged(frame, checks=(), budget=None, gate=GATE):
    # the positive control: the same images recovered without a defense (tests/test_verdict_statistics.py)
    control = rows("none", "a", False, [100.0] * frame["image_index"].nunique())
    (v,) = [v for v in compute_verdicts(pd.concat([control, frame], ignore_index=True), list(checks), budget, gate)
            if v.defense == "d"]
    return v


def check(degenerate=False, randomised=False):
    return {"labels": {**CONTEXT, "defense_label": "d"}, "context": CONTEXT, "degenerate": degenerate,
            "randomised": randomised}


def test_gate_passes_a_converged_verdict_below_the_threshold():
    frame = rows("d", "a", False, [11, 12, 11])
    v = judged(frame, [check()], rows("d", "a", False, [11.5, 12, 11]))
    assert (v.gate, v.status, v.converged) == ("pass", "holds", True) and v.budget_rise == pytest.approx(0.5)
    assert v.values == {"psnr_over_label": pytest.approx(1.0)} and v.statistic == "median"


def test_gate_fails_closed_on_a_leak_an_unconverged_budget_and_too_few_images():
    leaky = judged(rows("d", "a", False, [20, 20, 20]), [check()], rows("d", "a", False, [20, 20, 20]))
    assert (leaky.gate, leaky.status) == ("fail", "LEAKS") and "psnr_over_label 10.00 > 3" in leaky.reasons
    # more budget adds 4 dB to the median: the verdict is not trustworthy even though it is below the threshold
    rising = judged(rows("d", "a", False, [10, 10, 10]), [check()], rows("d", "a", False, [14, 14, 9]))
    assert (rising.gate, rising.status, rising.converged) == ("fail", "UNCONVERGED", False)
    assert any(r.startswith("unconverged: a at 4× iterations and restarts adds +4.00 dB") for r in rising.reasons)
    few = judged(rows("d", "a", False, [10]), [check()], rows("d", "a", False, [10]))
    assert (few.gate, few.status) == ("fail", "INCONCLUSIVE") and "1 images, fewer than the 2" in few.reasons[0]
    unchecked = judged(rows("d", "a", False, [10, 10]), [check()])
    assert unchecked.gate == "fail" and "the budget check did not run" in unchecked.reasons
    unmeasured = rows("d", "a", False, [10, 10]).assign(label_baseline_psnr=np.nan, psnr_over_label=np.nan)
    assert "psnr_over_label not measured" in judged(unmeasured, [check()], rows("d", "a", False, [10, 10])).reasons[0]


def test_a_degenerate_observation_is_never_protection_and_never_a_leak():
    # a label-only digit within the bound over a "defense" that sends nothing of the data: not holds (a
    # broken bound is LEAKS whatever the check says: tests/test_verdict_statistics.py)
    v = judged(rows("d", "a", False, [12, 12]), [check(degenerate=True)], rows("d", "a", False, [12, 12]))
    assert (v.status, v.gate, v.degenerate) == ("DEGENERATE", "fail", True)
    plain = compute_verdicts(rows("d", "a", False, [5, 5]), [check(degenerate=True)])[0]
    assert plain.status == "DEGENERATE" and not plain.gated


def test_a_randomised_defense_needs_an_eot_attack():
    frame = rows("d", "a", False, [10, 10])
    v = judged(frame, [check(randomised=True)], rows("d", "a", False, [10, 10]))
    assert v.gate == "fail" and "no attack averaged over its randomness" in v.reasons[-1]
    with_eot = pd.concat([frame, rows("d", "loop", True, [9, 9], name="defense-loop").assign(defense_replay="share")], ignore_index=True)
    assert judged(with_eot, [check(randomised=True)], rows("d", "a", False, [10, 10])).gate == "pass"


def test_not_gated_defenses_are_reported_not_judged():
    frame = pd.concat([rows("none", "a", False, [50, 50]), rows("d", "a", False, [10, 10])], ignore_index=True)
    none, d = compute_verdicts(frame, [], None, replace(GATE, defenses=["d"]))
    assert (none.gated, none.gate, none.status, none.converged) == (False, "", "", None)
    assert d.gated and d.gate == "fail"  # no budget check rows


# ------------------------------------------------------------------------------ data dependence
def _dependence(threat="fedsgd", defense="none", options=None, rounds=0, plugins=()):
    from fedleak.harness.matrix.checks import data_dependence
    from fedleak.harness.run.config import DefenseConfig, RunConfig, ThreatModelConfig
    from fedleak.harness.run.plugins import load_plugins
    from fedleak.threat_models.victim import VictimSpec
    load_plugins(plugins)
    config = RunConfig(victim=VictimSpec(model="mlp", options={"width": 16}, rounds=rounds),
                       threat_model=ThreatModelConfig(threat), defense=DefenseConfig(defense, options or {}), device="cpu")
    return data_dependence(config, (0, 1))


def test_an_update_that_carries_the_data_is_not_degenerate():
    result = _dependence()
    assert result["degenerate"] is False and result["between"] > 0.01 and result["within"] == 0
    assert result["context"]["model"] == "mlp" and not result["randomised"]
    assert _dependence(defense="dp", options={"sigma": 0.1})["randomised"]  # noise drawn per round seed


def test_hyperfl_first_round_is_degenerate():
    """Issue #12: at round 0 the client's fresh head fits its one image exactly (loss 0), so Δφ is the
    same whatever the image; the check calls it degenerate (the ci matrix attacks round 1)."""
    result = _dependence(threat="hyperfl", defense="hyperfl")
    assert result["degenerate"] is True and result["between"] == 0
    assert result["context"]["model"] == "hyperfl-cnn"


class ZeroShare:
    source = textwrap.dedent('''
        import torch
        from fedleak.defenses.base import Defense

        class SendsNothing(Defense):
            name = "sends-nothing"
            def share(self, update, context):
                return [torch.zeros_like(u) for u in update], {}

        class FreshNoise(Defense):
            """Noise from the global RNG (not reproducible for a fixed context), plus the update × `signal`."""
            name = "fresh-noise"
            def __init__(self, signal: float = 0.0):
                self.signal = signal
            def share(self, update, context):
                return [self.signal * u.detach() + torch.randn_like(u) for u in update], {}
    ''')


@pytest.fixture
def zero_plugins(tmp_path, monkeypatch):
    (tmp_path / "verdict_plugins.py").write_text(ZeroShare.source)
    monkeypatch.syspath_prepend(str(tmp_path))
    return ("verdict_plugins:SendsNothing", "verdict_plugins:FreshNoise")


def test_a_defense_that_sends_nothing_is_degenerate(zero_plugins):
    assert _dependence(defense="sends-nothing", plugins=zero_plugins)["degenerate"] is True


def test_unreproducible_noise_is_judged_by_its_mean(zero_plugins):
    torch.manual_seed(0)
    silent = _dependence(defense="fresh-noise", plugins=zero_plugins)
    assert silent["within"] > 0 and silent["degenerate"] is None and silent["separation"] < 2  # cannot tell
    loud = _dependence(defense="fresh-noise", options={"signal": 1e4}, plugins=zero_plugins)
    assert loud["degenerate"] is False and loud["separation"] > 2


# ------------------------------------------------------------------------------ label baseline
def test_label_baseline_scores_every_class_and_the_true_one_best():
    from fedleak.harness.matrix.checks import label_baseline
    from fedleak.harness.run.config import RunConfig
    result = label_baseline(RunConfig(device="cpu"), (0, 1, 2))
    assert result["classes"] == 10 and "draws of the shipped 'digits' prior" in result["source"]
    for true, per_class in zip(result["true_label"], result["baseline"]):
        label = true["label"]
        assert per_class[label]["psnr"] == max(per_class[label]["psnr_class_mean"], per_class[label]["psnr"])
        # the label carries information: its own class is closer than the median other class
        others = sorted(c["psnr"] for i, c in enumerate(per_class) if i != label)
        assert per_class[label]["psnr"] > others[len(others) // 2]


# ------------------------------------------------------------------------------------------- DP
def test_dp_epsilon_in_context():
    from fedleak.defenses import build_defense
    from fedleak.defenses.dp import _opacus_epsilon, gaussian_epsilon
    # exact composition at sampling rate 1 agrees with Opacus's PRV accountant where that works ...
    assert gaussian_epsilon(math.sqrt(10) / 1.0, 1e-5) == pytest.approx(_opacus_epsilon("prv", 1.0, 1.0, 10, 1e-5), abs=0.02)
    # ... and stays finite where PRV returned inf (σ = 0.01: ε ≈ 5e4 over 10 rounds, meaningless as protection)
    privacy = build_defense("dp", sigma=0.01, accountant="prv").privacy(10, 1.0)
    assert 4e4 < privacy["epsilon"] < 6e4 and privacy["accountant"].startswith("exact")
    assert privacy["neighbouring"] == "add/remove one client's update (user level)" and privacy["delta"] == 1e-5
    assert build_defense("dp", sigma=0.01, accountant="prv").privacy(10, 0.5)["accountant"].startswith("rdp (prv cannot")
    assert "example" in build_defense("dp", mode="dpsgd", sigma=1.0).privacy(4, 0.1)["neighbouring"]
    # more noise, less ε; one round less than ten
    assert gaussian_epsilon(1.0, 1e-5) < gaussian_epsilon(2.0, 1e-5) < gaussian_epsilon(math.sqrt(10) * 2, 1e-5)


# ---------------------------------------------------------------------- code changes: no stale cells
PLUGIN_SOURCE = '''
import torch
from fedleak.defenses.base import Defense


class Editable(Defense):
    name = "editable"

    def share(self, update, context):
        return {body}, {{}}
'''


def test_an_edited_plugin_is_attacked_again(tmp_path, capsys, monkeypatch):
    """Issue #12: a defense changed to send the raw update, rerun into the same folder, must not
    reuse the cells its old code computed (it printed "holds")."""
    from fedleak.harness.cli.main import main
    from test_matrix import smoke_matrix, write_toml
    module = tmp_path / "editable_defense.py"
    module.write_text(PLUGIN_SOURCE.format(body="[torch.zeros_like(u) for u in update]"))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    config = write_toml(tmp_path / "m.toml", smoke_matrix(
        plugins=["editable_defense:Editable"], images={"indices": [1]}, attacks=[{"name": "idlg", "adaptive": [False]}],
        defenses=[{"name": "editable"}]))
    argv = ["matrix", str(config), "--workers", "0", "--quiet", "--output", str(tmp_path / "out")]
    assert main(argv) == 0
    first = pd.read_parquet(tmp_path / "out" / "results.parquet")
    capsys.readouterr()
    module.write_text(PLUGIN_SOURCE.format(body="[u.detach().clone() for u in update]"))
    # a new interpreter: the edited module is what it imports (as a user's next command would)
    run = subprocess.run([sys.executable, "-m", "fedleak.harness.cli", *argv], cwd=tmp_path, capture_output=True,
                         text=True, env={**__import__("os").environ, "PYTHONPATH": f"{tmp_path}:{_pythonpath()}"})
    assert run.returncode == 0, run.stderr
    assert "stored results were computed by other code and are computed again (defense 'editable' source)" in run.stdout
    second = pd.read_parquet(tmp_path / "out" / "results.parquet")
    assert set(first["cell"]).isdisjoint(second["cell"])
    assert second["psnr"].max() > first["psnr"].max() + 20   # the raw update: iDLG rebuilds the image


def _pythonpath() -> str:
    import fedleak
    from pathlib import Path
    return str(Path(fedleak.__file__).resolve().parents[1])


# ------------------------------------------------------------------------- defense capabilities
def test_evaluate_defense_never_puts_a_gradient_defense_on_embeddings_and_says_so(tmp_path):
    from fedleak.harness.matrix.evaluate_defense import evaluation_matrix
    from test_matrix import PLUGIN, smoke_matrix, write_toml
    base = write_toml(tmp_path / "base.toml", smoke_matrix(
        plugins=[], threat_models=[{"name": "fedsgd"}, {"name": "vfl"}],
        attacks=[{"name": "ig"}, {"name": "embedding-inversion", "threat_models": ["vfl"]}],
        defenses=[{"name": "none"}, {"name": "hashing", "threat_models": ["vfl"]}]))
    matrix, name, skipped = evaluation_matrix(base, PLUGIN, {}, "smoke")
    assert name == "random-k-noise" and [t.name for t in matrix.threat_models] == ["fedsgd"]
    assert skipped == ["defense 'random-k-noise' applies to gradient, update, not embedding, which threat model "
                       "'vfl' shares: not evaluated there"]
    assert "embedding-inversion" not in {a.name for a in matrix.attacks if a.threat_models}  # vfl-only entries go too
    assert matrix.gate.defenses == ["random-k-noise"] and matrix.gate.max_psnr_over_label == 3.0
