"""No silent gaps, and nothing of the defense author's word trusted unchecked (issue 20, items 3 and 4):
an attack that errors is a failed cell that summary.json, junit.xml and the exit status agree on; one
image's failure fails that image; a verdict missing an evaluator attack, or whose adaptive attack could
not run the defense's own share, is never "holds"; EOT counts only where share ran in the loop; a
declared passthrough is probed; randomisation is tested across fresh instances and private draws; the
evaluator's replay runs the client's pipeline on a deep copy of the configured instance."""
import json
import sys

import pandas as pd
import pytest
from junitparser import JUnitXml

from fedleak.harness.cli.main import main
from fedleak.harness.verdict.gate import GateConfig
from fedleak.harness.verdict.judge import compute_verdicts
from test_matrix import _stub_utility, smoke_matrix, write_toml
from test_verdict import check, rows

MODULE = "gaps_plugins"
PLUGINS = '''import sys

import torch

from fedleak.attacks.base import Attack
from fedleak.defenses.base import Defense
from fedleak.defenses.seeding import generator


class NanShare(Defense):
    name = "gaps-nan"

    def share(self, update, context):
        return [torch.full_like(u, float("nan")) for u in update], {}


class WrongType(Defense):
    name = "gaps-wrong-type"

    def share(self, update, context):
        return "not a list of tensors"


class ForClientOnly(Defense):
    """Sends the update as it is to the server, but raises whenever the evaluator's attacks call it."""
    name = "gaps-client-only"

    def share(self, update, context):
        frame = sys._getframe(1)
        while frame is not None:
            if frame.f_globals.get("__name__", "").startswith("fedleak.attacks"):
                raise RuntimeError("this share refuses the attacker's copy")
            frame = frame.f_back
        return [u.detach().clone() for u in update], {}


class Identity(Defense):
    name = "gaps-identity"


class FalsePassthrough(Defense):
    """Declares passthrough, yet adds noise from the public round seed (reversible by the server)."""
    name = "gaps-false-passthrough"
    passthrough = True

    def share(self, update, context):
        g = generator("public", context.seed, context.client_id, context.round)
        return [u + torch.randn(u.shape, generator=g).to(u) for u in update], {}


class TruePassthrough(Defense):
    name = "gaps-true-passthrough"
    passthrough = True


class PrivateNoise(Defense):
    """Noise keyed to a private seed, the client and the round (defenses/seeding.py), not the round seed."""
    name = "gaps-private-noise"

    def __init__(self, noise_seed: int = 0, sigma: float = 0.1):
        self.noise_seed, self.sigma = int(noise_seed), float(sigma)

    def share(self, update, context):
        g = generator("gaps", self.noise_seed, context.client_id, context.round)
        return [u + self.sigma * torch.randn(u.shape, generator=g).to(u) for u in update], {}

    def describe(self):
        return {"sigma": self.sigma}


class Prepared(Defense):
    """Public-seed noise (reversible: the server knows the seed), scaled by a factor the client sets when it
    prepares its model: share needs prepare_model to have run (client state)."""
    name = "gaps-prepared"

    def __init__(self, sigma: float = 1.0):
        self.sigma = float(sigma)
        self.scale = None

    def prepare_model(self, model):
        self.scale = self.sigma
        return model

    def share(self, update, context):
        if self.scale is None:
            raise RuntimeError("share before prepare_model")
        g = generator("prepared", context.seed, context.client_id, context.round)
        return [u + self.scale * torch.randn(u.shape, generator=g).to(u) for u in update], {}

    def describe(self):
        return {"sigma": self.sigma}


class ZeroEvenLabels(Defense):
    """Sends zeros for an image whose label (read off the last bias gradient) is even, the update otherwise."""
    name = "gaps-zero-even"

    def share(self, update, context):
        if int(update[-1].argmin()) % 2 == 0:
            return [torch.zeros_like(u) for u in update], {}
        return [u.detach().clone() for u in update], {}


class Crash(Attack):
    """An attack that crashes (a bug, not a user error)."""
    name = "gaps-crash"

    def reconstruct(self, observation, model, knowledge, budget, seed=0, progress=False):
        raise RuntimeError("boom")


class FailsSecondBatch(Attack):
    """Returns the label-mean image for the first batch it sees, and raises on the next."""
    name = "gaps-second-batch"
    calls = 0

    def reconstruct(self, observation, model, knowledge, budget, seed=0, progress=False):
        from fedleak.attacks.base import Reconstruction
        FailsSecondBatch.calls += 1
        if FailsSecondBatch.calls % 2 == 0:
            raise RuntimeError("this batch's layer is zero")
        images = torch.full((knowledge.num_images, *knowledge.image_shape), 0.5)
        return Reconstruction(images, torch.zeros(knowledge.num_images, dtype=torch.long), [], 0.0)
'''

# never broken: whatever the attacks reach, only the checks (gaps, images, budget, EOT) decide
LENIENT = {"max_psnr_over_label": 1000.0, "statistic": "median", "min_images": 1, "budget_factor": 1}


@pytest.fixture
def project(tmp_path, monkeypatch):
    (tmp_path / f"{MODULE}.py").write_text(PLUGINS)
    sys.modules.pop(MODULE, None)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr("fedleak.harness.matrix.utility.measure_utility", _stub_utility)
    return tmp_path


def evaluate(project, defense: str, attacks: list[str], monkeypatch, gate: dict | None = None):
    """`evaluate-defense MODULE:defense --budget smoke --gate` on one image of a tiny LeNet; (exit, summary,
    junit suite, printed)."""
    monkeypatch.setattr("fedleak.harness.matrix.evaluate_defense.registered_attacks", lambda: attacks)
    table = smoke_matrix(plugins=[], images={"indices": [2]}, victims=[{"model": "lenet"}],
                         attacks=[{"name": a, "budgets": {"smoke": {"iterations": 4}}} for a in attacks],
                         defenses=[{"name": "none"}], utility={"enabled": False})
    if gate:
        table["gate"] = gate
    base = write_toml(project / "base.toml", table)
    out = project / f"eval-{defense}"
    status = main(["evaluate-defense", f"{MODULE}:{defense}", "--matrix", str(base), "--budget", "smoke",
                   "--workers", "0", "-q", "--output", str(out), "--gate"])
    summary = json.loads((out / "summary.json").read_text())
    suite = next(iter(JUnitXml.fromfile(str(out / "junit.xml"))))
    return status, summary, suite


# ------------------------------------------------------------------------------------ failed cells
@pytest.mark.parametrize("defense", ["NanShare", "WrongType"])
def test_a_share_that_sends_garbage_fails_closed(project, monkeypatch, capsys, defense):
    status, summary, suite = evaluate(project, defense, ["idlg"], monkeypatch)
    printed = capsys.readouterr()
    assert status != 0
    assert summary["gate"]["passed"] is False and summary["gate"]["errors"] >= 2   # both modes of idlg
    assert suite.tests >= 2 and suite.errors + suite.failures >= 2
    assert "failed" in printed.out and " 0 failed" not in printed.out


def test_a_share_that_raises_for_the_attackers_copy_fails_closed(project, monkeypatch, capsys):
    status, summary, suite = evaluate(project, "ForClientOnly", ["idlg", "defense-loop"], monkeypatch, LENIENT)
    (verdict,) = [v for v in summary["verdicts"] if v["gated"]]
    assert status != 0 and summary["gate"]["passed"] is False and suite.failures == 1
    assert verdict["status"] == "INCONCLUSIVE"
    assert any("defense-loop could not run the defense's share" in r and "RuntimeError" in r for r in verdict["reasons"])
    results = pd.read_parquet(project / "eval-ForClientOnly" / "results.parquet")
    loop = results[results["attack"] == "defense-loop"]
    assert set(loop["defense_replay"]) == {"identity"} and loop["defense_replay_note"].str.contains("refuses").all()


def test_a_gate_that_judged_nothing_has_not_passed():
    from fedleak.reports.ci import summary_document
    document = summary_document({"name": "x"}, {"thresholds": {}, "statistic": "worst", "defenses": [],
                                                "description": ""}, [], [], [])
    assert document["gate"]["passed"] is False and document["gate"]["gated_verdicts"] == 0


def test_a_crashed_cell_in_a_gated_matrix_makes_its_verdict_inconclusive(project, capsys):
    table = smoke_matrix(plugins=[f"{MODULE}:Identity", f"{MODULE}:Crash"], images={"indices": [2]},
                         victims=[{"model": "lenet"}], defenses=[{"name": "none"}, {"name": "gaps-identity"}],
                         attacks=[{"name": "idlg", "budgets": {"smoke": {"iterations": 4}}}, {"name": "gaps-crash"}],
                         gate=LENIENT)
    config = write_toml(project / "m.toml", table)
    status = main(["matrix", str(config), "--gate", "--workers", "0", "-q", "--output", str(project / "m")])
    assert status == 1
    verdicts = json.loads((project / "m" / "verdicts.json").read_text())
    (mine,) = [v for v in verdicts if v["defense_label"] == "gaps-identity"]
    assert mine["status"] == "INCONCLUSIVE" and mine["gate"] == "fail"
    assert any(r.startswith("gaps-crash (non-adaptive) did not run: RuntimeError: boom") for r in mine["reasons"])
    failures = json.loads((project / "m" / "failures.json").read_text())
    assert {f["labels"]["attack_label"] for f in failures if not f["not_applicable"]} == {"gaps-crash"}
    assert "gate FAILED" in capsys.readouterr().out


def test_one_failed_batch_fails_its_images_not_the_run(project, tmp_path):
    from fedleak.harness.run.config import AttackConfig, DataConfig, DefenseConfig, RunConfig
    from fedleak.threat_models.victim import VictimSpec
    from fedleak.harness.run.plugins import load_plugin
    from fedleak.harness.run.runner import run_attack
    load_plugin(f"{MODULE}:FailsSecondBatch").calls = 0
    config = RunConfig(data=DataConfig(name="digits", victims=[0, 1, 2, 3], num_victims=4, batch_size=2),
                       victim=VictimSpec(model="lenet"), defense=DefenseConfig("none", {}),
                       attack=AttackConfig("gaps-second-batch", 1, 1, {}), output=str(tmp_path / "run"))
    frame = run_attack(config, report=False).rows
    assert list(frame["image_error"] != "") == [False, False, True, True]
    assert frame["psnr"].iloc[:2].notna().all() and frame["psnr"].iloc[2:].isna().all()
    assert "this batch's layer is zero" in frame["image_error"].iloc[2]
    one_batch = RunConfig(data=DataConfig(name="digits", victims=[0, 1], num_victims=2, batch_size=2),
                          victim=VictimSpec(model="lenet"), defense=DefenseConfig("none", {}),
                          attack=AttackConfig("gaps-second-batch", 1, 1, {}), output=str(tmp_path / "one"))
    load_plugin(f"{MODULE}:FailsSecondBatch").calls = 1  # its only batch fails: the run fails, as a cell would
    with pytest.raises(RuntimeError, match="layer is zero"):
        run_attack(one_batch, report=False)


def test_analytic_fc_fails_only_the_image_whose_layer_is_zero(project, tmp_path):
    """A defense that sends nothing for one of two images (as a model check refusing the round does):
    analytic-fc fails that image, with the reason, and scores the other."""
    from fedleak.harness.run.config import AttackConfig, DataConfig, DefenseConfig, RunConfig
    from fedleak.harness.run.plugins import load_plugin
    from fedleak.harness.run.runner import run_attack
    from fedleak.threat_models.victim import VictimSpec
    load_plugin(f"{MODULE}:ZeroEvenLabels")
    config = RunConfig(data=DataConfig(name="digits", victims=[0, 2], num_victims=2, batch_size=1),  # labels 1, 8
                       victim=VictimSpec(model="lenet"), defense=DefenseConfig("gaps-zero-even", {}),
                       attack=AttackConfig("analytic-fc", 2, 1, {}), output=str(tmp_path / "run"))
    frame = run_attack(config, report=False).rows
    assert frame["image_error"].iloc[0] == "" and frame["psnr"].iloc[0] > 0
    assert "gradient was shared non-zero" in frame["image_error"].iloc[1] and pd.isna(frame["psnr"].iloc[1])


def test_a_failed_image_or_cell_keeps_a_verdict_from_holding():
    gate = GateConfig(**LENIENT)
    whole = pd.concat([rows("d", "a", False, [20, 20]), rows("none", "a", False, [30, 30])], ignore_index=True)
    whole["image_error"] = ""
    (v, _) = compute_verdicts(whole, gate=gate)
    assert v.status == "holds"
    failed_image = whole.copy()
    failed_image.loc[1, ["psnr", "ssim", "lpips", "psnr_over_label"]] = float("nan")
    failed_image.loc[1, "image_error"] = "attack 'a' needs a linear layer"
    (v, _) = compute_verdicts(failed_image, gate=gate)
    assert v.status == "INCONCLUSIVE" and v.n_images == 1
    assert any("a (non-adaptive) failed on 1 of 2 images: attack 'a' needs" in r for r in v.reasons)
    cell = {"key": "k", "task": "b vs d", "error": "RuntimeError: boom", "not_applicable": False,
            "labels": {"defense_label": "d", "attack_label": "b", "adaptive": True, "dataset": "digits"}}
    (v, _) = compute_verdicts(whole, gate=gate, failed=[cell])
    assert v.status == "INCONCLUSIVE" and "b (adaptive) did not run: RuntimeError: boom" in v.reasons
    (v, _) = compute_verdicts(whole, gate=gate, failed=[{**cell, "not_applicable": True}])
    assert v.status == "holds"


# ------------------------------------------------------------------------------------ EOT
def test_eot_counts_only_where_the_defenses_own_share_ran():
    gate = GateConfig(**LENIENT)
    plain = rows("d", "a", False, [10, 10])
    control = rows("none", "a", False, [100, 100]).assign(defense_replay="")  # the positive control: holds is possible
    for replay, counted in (("simulate", False), ("identity", False), ("share", True)):
        loop = rows("d", "loop", True, [9, 9], name="defense-loop").assign(defense_replay=replay)
        (_, v) = compute_verdicts(pd.concat([control, plain.assign(defense_replay=""), loop], ignore_index=True),
                                  [check(randomised=True)], gate=gate)
        assert v.eot is counted and (v.status == "holds") is counted, replay


# ------------------------------------------------------------------------------------ passthrough
def test_a_false_passthrough_is_caught_and_attacked_adaptively(project):
    from fedleak.harness.matrix.cells import expand
    from fedleak.harness.matrix.config import matrix_from_dict
    from fedleak.harness.run.plugins import load_plugins
    load_plugins([f"{MODULE}:FalsePassthrough", f"{MODULE}:TruePassthrough"])
    matrix = matrix_from_dict(smoke_matrix(plugins=[], attacks=[{"name": "ig"}, {"name": "defense-loop"}],
                                           defenses=[{"name": "gaps-false-passthrough"},
                                                     {"name": "gaps-true-passthrough"}]))
    modes = {(c.labels["defense_label"], c.labels["attack_label"], c.labels["adaptive"]) for c in expand(matrix)}
    assert ("gaps-false-passthrough", "ig", True) in modes and ("gaps-false-passthrough", "defense-loop", True) in modes
    assert ("gaps-true-passthrough", "ig", True) not in modes
    from fedleak.harness.matrix.cells import false_passthroughs
    notes = false_passthroughs(matrix)
    assert any("gaps-false-passthrough" in n and "declares passthrough" in n and "does not return its input" in n for n in notes)
    assert len(notes) == 1


# ------------------------------------------------------------------------------------ randomised
def test_noise_keyed_to_a_private_seed_is_randomised(project):
    from fedleak.harness.run.plugins import load_plugin
    from test_verdict import _dependence
    load_plugin(f"{MODULE}:PrivateNoise")
    assert _dependence(defense="gaps-private-noise", options={"sigma": 0.1})["randomised"]
    assert not _dependence(defense="none")["randomised"]


# ------------------------------------------------------------------------------------ the replay
def test_the_replay_runs_prepare_model_on_a_copy_of_the_configured_defense(project, tmp_path):
    """A defense whose share needs its prepare_model (client state): the rebuilt copy raised, and the
    defense-loop attacked the noisy observation; the client's pipeline on a deep copy replays it."""
    from fedleak.harness.run.config import AttackConfig, DataConfig, DefenseConfig, RunConfig, ThreatModelConfig
    from fedleak.harness.run.plugins import load_plugin
    from fedleak.harness.run.runner import run_attack
    from fedleak.threat_models.victim import VictimSpec
    load_plugin(f"{MODULE}:Prepared")
    config = RunConfig(data=DataConfig(name="digits", victims=[2], num_victims=1, batch_size=1),
                       victim=VictimSpec(model="mlp", options={"width": 32, "depth": 1}),
                       defense=DefenseConfig("gaps-prepared", {"sigma": 1.0}),
                       threat_model=ThreatModelConfig(knowledge={"preset": "informed", "defense": True}),
                       attack=AttackConfig("defense-loop", 3, 1, {"optimizer": "lbfgs"}),
                       output=str(tmp_path / "r"), device="cpu")
    frame = run_attack(config, report=False).rows
    assert frame["defense_replay"].iloc[0] == "share", frame["defense_replay_note"].iloc[0]
    # measured: 18.9 dB; the rebuilt copy (share raised, the noisy observation matched as it is) 5.1 dB
    assert frame["psnr"].iloc[0] > 15
