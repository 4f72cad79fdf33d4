"""What CI reads of a gated run: summary.json valid against the shipped JSON Schema, junit.xml read by
a real JUnit parser (one test case per gated verdict, the leak a failure with its numbers), the step
summary; and `fedleak compare`: an identical rerun passes, an injected regression is flagged."""
import json
import shutil

import jsonschema
import pandas as pd
import pytest
from junitparser import Error, Failure, JUnitXml

from fedleak.harness.cli.main import main
from test_matrix import smoke_matrix, write_toml

WEAK, STRONG = "random-k-noise (keep=1, noise=0)", "prune (ratio=0.01)"
GATED = smoke_matrix(images={"indices": [2, 3]}, victims=[{"model": "lenet"}],
                     attacks=[{"name": "idlg", "adaptive": [False], "budgets": {"smoke": {"iterations": 6}}}],
                     defenses=[{"name": "none"},
                               {"name": "random-k-noise", "options": {"keep": 1.0, "noise": 0.0}, "label": WEAK},
                               {"name": "prune", "options": {"ratio": 0.01}, "label": STRONG}],
                     # deterministic defenses, 2 images, no budget check: the test is about the files, not the checks
                     gate={"max_psnr": 18.0, "min_images": 2, "budget_factor": 1})


@pytest.fixture(scope="module")
def gated_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gated")
    config = write_toml(folder / "gated.toml", GATED)
    summary = folder / "step-summary.md"
    summary.write_text("earlier step\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GITHUB_STEP_SUMMARY", str(summary))
        status = main(["matrix", str(config), "--gate", "--workers", "0", "-q", "--output", str(folder / "out")])
    return status, folder / "out", summary, config


def test_gate_writes_summary_valid_against_the_schema(gated_run):
    from fedleak.reports.ci import schema
    status, out, _, _ = gated_run
    assert status == 1  # the weak setting leaks
    document = json.loads((out / "summary.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema())
    jsonschema.validate(document, schema())
    gate = document["gate"]
    assert gate["thresholds"] == {"max_psnr": 18.0} and gate["statistic"] == "worst" and not gate["passed"]
    assert (gate["gated_verdicts"], gate["failed_verdicts"], gate["errors"]) == (2, 1, 0)
    verdicts = {v["defense_label"]: v for v in document["verdicts"]}
    assert set(verdicts) == {"none", WEAK, STRONG}
    results = pd.read_parquet(out / "results.parquet")
    weak = results[results["defense_label"] == WEAK]
    assert verdicts[WEAK]["status"] == "LEAKS" and verdicts[WEAK]["values"]["psnr"] == pytest.approx(weak["psnr"].max())
    assert verdicts[STRONG]["status"] == "holds" and verdicts[STRONG]["gate"] == "pass"
    assert not verdicts["none"]["gated"] and verdicts["none"]["gate"] == ""
    assert verdicts[WEAK]["n_images"] == 2 and verdicts[WEAK]["best_attack"] == "idlg"
    cells = {c["defense_label"]: c for c in document["cells"]}
    assert cells[WEAK]["metrics"]["psnr"]["most_leaked"] == pytest.approx(weak["psnr"].max())
    provenance = cells[WEAK]["provenance"]
    # the key covers the config and the code (the folder's name), the config hash the config alone
    assert (out / "cells" / cells[WEAK]["key"] / "cell.json").is_file() and provenance["command"].startswith("fedleak matrix ")
    assert provenance["config_hash"] == weak["config_hash"].iloc[0]
    assert "opacus" in provenance["versions"]
    # the schema rejects what it should: a wrong type, a missing field
    broken = json.loads(json.dumps(document))
    broken["verdicts"][0]["n_images"] = "two"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema())
    del broken["gate"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema())


def test_junit_has_one_case_per_gated_verdict_with_the_numbers(gated_run):
    _, out, _, _ = gated_run
    xml = JUnitXml.fromfile(str(out / "junit.xml"))
    suites = list(xml)
    assert len(suites) == 1
    suite = suites[0]
    assert (suite.tests, suite.failures, suite.errors) == (2, 1, 0)
    cases = {case.name: case for case in suite}
    assert set(cases) == {WEAK, STRONG}
    results = pd.read_parquet(out / "results.parquet")
    worst = results[results["defense_label"] == WEAK]["psnr"].max()
    failure = [r for r in cases[WEAK].result if isinstance(r, Failure)]
    assert len(failure) == 1 and f"psnr {worst:.2f} > 18" in failure[0].message
    assert cases[STRONG].is_passed
    assert cases[WEAK].classname == "digits/lenet/untrained/fedsgd/informed"


def test_step_summary_is_appended(gated_run):
    _, _, summary, _ = gated_run
    text = summary.read_text()
    assert text.startswith("earlier step\n## fedleak gated")
    assert "**Gate FAILED**: 1 of 2 gated verdicts leak" in text
    assert f"| {WEAK} | LEAKS |" in text and f"| {STRONG} | holds |" in text


def test_a_gated_cell_that_did_not_run_is_a_junit_error(gated_run, tmp_path, monkeypatch):
    _, out, _, config = gated_run
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    def crash(self, gpu):
        raise RuntimeError("boom")
    strong = next(p for p in (copy / "cells").iterdir()  # the attack's cell, not its data-dependence check
                  if (p / "images.pt").exists() and STRONG in (p / "cell.json").read_text())
    shutil.rmtree(strong)  # this cell runs again, and crashes
    monkeypatch.setattr("fedleak.harness.matrix.cells.Cell.run", crash)
    assert main(["matrix", str(config), "--gate", "--workers", "0", "-q", "--output", str(copy)]) == 1
    suite = next(iter(JUnitXml.fromfile(str(copy / "junit.xml"))))
    assert suite.errors == 1
    errors = [r for case in suite for r in case.result if isinstance(r, Error)]
    assert len(errors) == 1 and "boom" in errors[0].message
    document = json.loads((copy / "summary.json").read_text())
    assert document["gate"]["errors"] == 1 and not document["gate"]["passed"]


# ---------------------------------------------------------------------------------------- compare
def test_compare_passes_an_identical_rerun(gated_run, tmp_path, capsys):
    _, out, _, config = gated_run
    again = tmp_path / "again"
    main(["matrix", str(config), "--workers", "0", "-q", "--output", str(again)])  # computed afresh
    capsys.readouterr()
    assert main(["compare", str(out), str(again), "-q"]) == 0
    printed = capsys.readouterr().out
    assert "no regression: 0 of 3 cells" in printed
    table = pd.read_csv(again / "compare" / "compare.csv")
    assert len(table) == 3 and (table["psnr_delta"] == 0).all()
    assert (again / "compare" / "compare.html").is_file()


def test_compare_flags_an_injected_regression(gated_run, tmp_path, capsys):
    _, out, _, config = gated_run
    after = tmp_path / "after"
    shutil.copytree(out, after)
    rows = pd.read_parquet(after / "results.parquet")
    rows.loc[rows["defense_label"] == STRONG, "psnr"] += 0.8  # the strong setting lets 0.8 dB more through
    rows.to_parquet(after / "results.parquet")
    assert main(["compare", str(out), str(after)]) == 1
    printed = capsys.readouterr().out
    assert "REGRESSED: 1 of 3 cells" in printed and STRONG in printed.split("REGRESSED", 1)[1]
    table = pd.read_csv(after / "compare" / "compare.csv")
    flagged = table[table["regressed"]]
    assert list(flagged["defense_label"]) == [STRONG] and flagged["psnr_delta"].iloc[0] == pytest.approx(0.8)
    assert "REGRESSED" in (after / "compare" / "compare.md").read_text()
    # within a wider tolerance it passes; a cell that disappeared fails
    assert main(["compare", str(out), str(after), "--tolerance", "psnr=1"]) == 0
    rows[rows["defense_label"] != WEAK].to_parquet(after / "results.parquet")
    capsys.readouterr()
    assert main(["compare", str(out), str(after), "--tolerance", "psnr=1"]) == 1
    assert "1 cells missing" in capsys.readouterr().out


def test_matrix_baseline_compares_with_the_stored_run(gated_run, tmp_path, capsys):
    _, out, _, config = gated_run
    again = tmp_path / "again"
    shutil.copytree(out, again)
    rows = pd.read_parquet(out / "results.parquet")
    rows["psnr"] -= 1.0  # the baseline leaked less: this run is a regression against it
    baseline = tmp_path / "baseline"
    baseline.mkdir()
    rows.to_parquet(baseline / "results.parquet")
    assert main(["matrix", str(config), "--workers", "0", "-q", "--output", str(again), "--baseline", str(baseline)]) == 1
    assert "REGRESSED: 3 of 3 cells" in capsys.readouterr().out
    assert (again / "compare" / "compare.csv").is_file()


def test_compare_bad_inputs_are_one_line(gated_run, tmp_path, capsys):
    _, out, _, _ = gated_run
    assert main(["compare", str(out), str(tmp_path / "nowhere")]) == 2
    assert main(["compare", str(out), str(out), "--tolerance", "psnr=-1"]) == 2
    assert main(["compare", str(out), str(out), "--tolerance", "accuracy=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("fedleak: error:") for line in err)


def copy_with_scores(out, after, edit):
    """A copy of the run `out` at `after` whose results are `edit(results)`; returns (after, the edited rows)."""
    shutil.copytree(out, after)
    rows = edit(pd.read_parquet(after / "results.parquet"))
    rows.to_parquet(after / "results.parquet")
    return after, rows


def test_compare_fails_where_the_new_scores_are_nan_or_missing(gated_run, tmp_path, capsys):
    """Issue 19 defect 1: every score of AFTER NaN said "no regression", rc 0."""
    _, out, _, _ = gated_run
    after, rows = copy_with_scores(out, tmp_path / "after", lambda rows: rows.assign(psnr=float("nan"), ssim=float("nan"),
                                                                                     lpips=float("nan"), mse=float("nan")))
    capsys.readouterr()
    assert main(["compare", str(out), str(after)]) == 1
    printed = capsys.readouterr().out
    assert "no regression" not in printed and "psnr NaN after" in printed and STRONG in printed
    rows.drop(columns=["psnr"]).to_parquet(after / "results.parquet")
    assert main(["compare", str(out), str(after), "--tolerance", "ssim=none", "--tolerance", "lpips=none"]) == 1
    assert "AFTER has no psnr column" in capsys.readouterr().out


def test_compare_on_string_scores_is_one_line(gated_run, tmp_path, capsys):
    _, out, _, _ = gated_run
    after, _ = copy_with_scores(out, tmp_path / "after", lambda rows: rows.assign(psnr=rows["psnr"].astype(str)))
    capsys.readouterr()
    assert main(["compare", str(out), str(after)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "psnr column holds" in err and "not numbers" in err


def test_documented_job_runs_commands_that_exist():
    """Every fedleak command line of docs/ci.md's workflow parses with the real parser (no stale flag)."""
    import shlex
    from pathlib import Path

    import yaml
    from fedleak.harness.cli.main import build_parser
    text = (Path(__file__).resolve().parents[1] / "docs" / "ci.md").read_text()
    workflow = yaml.safe_load(text.split("```yaml", 1)[1].split("```", 1)[0])
    steps = workflow["jobs"]["leakage"]["steps"]
    lines = [line.strip() for step in steps for line in step.get("run", "").splitlines()]
    commands = [shlex.split(line.replace("$baseline", "--baseline runs/baseline"))[1:] for line in lines
                if line.startswith("fedleak ")]
    assert {c[0] for c in commands} >= {"matrix", "evaluate-defense", "--version"}
    parser = build_parser()
    for argv in commands:
        if argv != ["--version"]:
            parser.parse_args(argv)  # argparse exits (a test failure) on an unknown flag
    uploads = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact"))["with"]["path"]
    assert "summary.json" in uploads and "junit.xml" in uploads


def test_evaluate_defense_writes_the_same_files_and_gates(tmp_path, capsys, monkeypatch):
    from fedleak.reports.ci import schema
    from test_matrix import PLUGIN, REPO, _stub_utility
    monkeypatch.chdir(REPO)
    monkeypatch.setattr("fedleak.harness.matrix.utility.measure_utility", _stub_utility)
    monkeypatch.setattr("fedleak.harness.matrix.evaluate_defense.registered_attacks", lambda: ["idlg"])
    base = write_toml(tmp_path / "base.toml", smoke_matrix(
        plugins=[], images={"indices": [2]}, victims=[{"model": "lenet"}],
        attacks=[{"name": "idlg", "budgets": {"smoke": {"iterations": 6}}}], defenses=[{"name": "none"}],
        utility={"options": {"rounds": 1}}))
    out = tmp_path / "eval"
    argv = ["evaluate-defense", PLUGIN, "--option", "keep=1.0", "--option", "noise=0.0", "--matrix", str(base),
            "--budget", "smoke", "--workers", "0", "-q", "--output", str(out)]
    assert main(argv) == 0  # without --gate the verdict is printed, not an exit status
    assert main([*argv, "--gate"]) == 1
    document = json.loads((out / "summary.json").read_text())
    jsonschema.validate(document, schema())
    assert document["run"]["name"] == "evaluate-random-k-noise" and not document["gate"]["passed"]
    suite = next(iter(JUnitXml.fromfile(str(out / "junit.xml"))))
    assert (suite.tests, suite.failures) == (1, 1)
    assert next(iter(suite)).name.startswith("random-k-noise")
