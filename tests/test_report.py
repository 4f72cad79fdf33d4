"""The matrix report: what it shows, that the same results give the same bytes, and that the HTML
page works in a real (headless) browser."""
import io
import shutil

import numpy as np
import pandas as pd
import pytest

from fedleak.harness.cli.main import main
from fedleak.harness.matrix.config import matrix_from_dict
from fedleak.harness.matrix.run import prepare_matrix, run_matrix
from fedleak.harness.matrix.results import report_matrix_folder as write_matrix_report
from test_matrix import smoke_matrix


def _stub_utility(data, victim_spec, defense, rounds=None, **_):
    """Stands in for harness.matrix.utility's FedAvg training: accuracy falls with the defense's strength,
    and one setting has an ε, so the privacy-utility view has something of everything to show."""
    params = defense.describe()
    return {"accuracy": 0.9 - 0.3 * (1 - params.get("keep", 1.0)) - 0.1 * params.get("ratio", 0.0),
            "epsilon": 2.5 if defense.name == "random-k-noise" else None, "bytes_sent": 100}


MATRIX = smoke_matrix(
    attacks=[{"name": "ig"}, {"name": "idlg", "adaptive": [False], "budgets": {"smoke": {"iterations": 2}}}],
    defenses=[{"name": "none"}, {"name": "random-k-noise", "options": {"keep": 0.5}}, {"name": "prune"},
              {"name": "hashing"}],  # vertical FL only: listed as not applicable under fedsgd
    utility={"options": {"rounds": 1}}, gate={"max_psnr": 18.0})


@pytest.fixture(scope="module")
def matrix_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("matrix") / "out"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("fedleak.harness.matrix.utility.measure_utility", _stub_utility)
        run = run_matrix(prepare_matrix(matrix_from_dict(MATRIX)), out, workers=0, progress=False)
    assert not run.schedule.failed
    return out


def test_report_shows_heat_maps_tradeoff_and_grids(matrix_folder, tmp_path):
    markdown, page = write_matrix_report(matrix_folder, tmp_path / "r")
    text = markdown.read_text()
    for metric in ("PSNR", "SSIM", "LPIPS"):
        assert f"### {metric}: attack × defense" in text
    assert "best attack (per cell)" in text and "best attack (per image)" in text
    assert "| ig (adaptive) |" in text and "| idlg |" in text
    # the verdict table: utility next to the leakage, ε over training where the defense has one
    verdict_rows = [line for line in text.splitlines() if line.startswith("| random-k-noise |") and "– / 2.5" in line]
    assert len(verdict_rows) == 1 and "| accuracy |" in text
    assert "over label [95% CI]" in text and "| converged |" in text and "| degenerate |" in text
    assert "## Gate" in text
    assert "## Pairs not applicable" in text and "defense 'hashing' applies to embedding, not gradient" in text
    figures = sorted(p.name for p in (tmp_path / "r").glob("*.png"))
    assert figures == ["c1-heat-lpips.png", "c1-heat-psnr.png", "c1-heat-ssim.png", "c1-mosaic.png",
                       "c1-privacy-utility.png"]
    for name in figures:
        assert f"]({name})" in text
        assert (tmp_path / "r" / name).with_suffix(".csv").is_file() and f"`{name[:-4]}.csv`" in text  # its data
    html = page.read_text()
    assert html.count('<img alt="') == len(figures)
    assert "src=\"c1-" not in html and 'nav class="toc"' in html


def test_heat_map_values_are_the_best_over_modes_per_image(matrix_folder):
    from fedleak.reports.matrix_tables import BEST_CELL, BEST_IMAGE, heat_table
    results = pd.read_parquet(matrix_folder / "results.parquet")
    table = heat_table(results, "psnr")
    prune = results[results["defense_label"] == "prune"]
    per_image = prune.groupby("image_index")["psnr"].max()
    assert table.loc[BEST_IMAGE, "prune"] == pytest.approx(per_image.median())
    ig = prune[prune["attack_label"] == "ig"]
    assert table.loc["ig (adaptive)", "prune"] == pytest.approx(ig[ig["adaptive"]]["psnr"].median())
    assert table.loc[BEST_CELL, "prune"] == pytest.approx(table.loc[["ig", "ig (adaptive)", "idlg"], "prune"].max())
    assert np.isnan(table.loc["ig (adaptive)", "none"])  # no defense: one mode only


def test_same_results_give_the_same_bytes(matrix_folder, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(matrix_folder, copy, ignore=shutil.ignore_patterns("report"))
    first = write_matrix_report(matrix_folder, tmp_path / "a")
    second = write_matrix_report(copy, tmp_path / "b")
    for a, b in zip(first, second):
        assert a.read_bytes() == b.read_bytes()
    for png in (tmp_path / "a").glob("*.png"):
        assert png.read_bytes() == (tmp_path / "b" / png.name).read_bytes()
    # merging the stored cells again reproduces the results files byte for byte
    before = {n: (matrix_folder / n).read_bytes() for n in ("results.parquet", "results.csv", "utility.csv")}
    rerun = run_matrix(prepare_matrix(matrix_from_dict(MATRIX)), matrix_folder, workers=0, progress=False)
    assert rerun.schedule.computed == []
    assert {n: (matrix_folder / n).read_bytes() for n in before} == before


def test_report_without_utility_says_so(matrix_folder, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(matrix_folder, copy, ignore=shutil.ignore_patterns("report", "utility.csv"))
    markdown, _ = write_matrix_report(copy)
    text = markdown.read_text()
    assert "utility was not measured" in text and "privacy-utility" not in text


def test_report_command_and_bad_input(matrix_folder, tmp_path, capsys):
    assert main(["report", str(matrix_folder), "--output", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "report.html").is_file()
    single = tmp_path / "single"
    single.mkdir()
    pd.DataFrame({"psnr": [1.0]}).to_parquet(single / "results.parquet")
    assert main(["report", str(single)]) == 2
    assert "not a matrix's" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "nowhere")]) == 2


def test_html_page_in_headless_chromium(matrix_folder, tmp_path):
    """The page as a reader uses it: every image decodes, a click sorts a table (numbers by value, both
    ways), a click opens one image's view (ground truth, every attack's reconstruction with its scores
    and loss) and closes it, and nothing logs an error."""
    from headless_browser import Browser, find_chromium
    executable = find_chromium()
    if executable is None:
        pytest.skip("Chromium not installed and tools/install_test_deps.sh could not install it "
                    "(apt package chromium-headless-shell)")
    _, page_path = write_matrix_report(matrix_folder, tmp_path / "r")
    broken = tmp_path / "broken.html"  # the checks must be able to fail
    broken.write_text('<html><body><img src="data:image/png;base64,AAAA"><script>console.error("boom")</script></body></html>')
    browser = Browser(executable)
    try:
        page = browser.load(page_path.resolve().as_uri())
        images = page.evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.className])")
        assert len([i for i in images if i[2] == ""]) == 5  # the figures; the rest are the per-image views'
        assert all(complete and width > 0 for complete, width, _ in images), images
        assert page.evaluate("document.querySelectorAll('nav.toc a').length") >= 8
        assert page.evaluate("document.querySelector('nav.toc a').getAttribute('href')") == "#gate"

        # sort the first verdict table by PSNR ("16.6 [15.9, 17.2]": by the median): ascending, then descending
        column = page.evaluate("""(() => {
            const psnr = th => th.textContent.startsWith('PSNR');
            window.summary = Array.from(document.querySelectorAll('table.sortable')).find(
                t => t.tHead && Array.from(t.tHead.rows[0].cells).some(psnr));
            return Array.from(window.summary.tHead.rows[0].cells).findIndex(psnr); })()""")
        assert column > 0
        read = f"Array.from(window.summary.tBodies[0].rows).map(r => r.cells[{column}].textContent)"
        before = page.evaluate(read)
        click = f"window.summary.tHead.rows[0].cells[{column}].click()"
        page.evaluate(click)
        ascending = page.evaluate(read)
        page.evaluate(click)
        descending = page.evaluate(read)
        values = lambda texts: [float("inf") if t.startswith("exact") else float(t.split()[0]) for t in texts if t != "–"]
        assert sorted(values(before)) == values(ascending) and values(descending) == values(ascending)[::-1]
        assert len(set(values(before))) > 1  # there is something to sort
        assert page.evaluate("window.summary.querySelector('thead th[aria-sort]').textContent").startswith("PSNR")

        # open the first image's view, read it, close it
        view = page.evaluate("document.querySelector('button.open-view').dataset.view")
        assert not page.evaluate(f"document.getElementById('{view}').open")
        page.evaluate("document.querySelector('button.open-view').click()")
        assert page.evaluate(f"document.getElementById('{view}').open")
        shown = page.evaluate(f"""(() => {{
            const dialog = document.getElementById('{view}');
            return {{images: Array.from(dialog.querySelectorAll('img')).map(i => i.naturalWidth),
                     captions: Array.from(dialog.querySelectorAll('figcaption')).map(c => c.innerText),
                     visible: dialog.getBoundingClientRect().height}}; }})()""")
        assert shown["visible"] > 100 and len(shown["images"]) >= 4 and all(w > 0 for w in shown["images"])
        assert shown["captions"][0] == "ground truth"
        assert all("PSNR" in c and "LPIPS" in c and "loss" in c for c in shown["captions"][1:])
        shot = _grey(page.screenshot())
        assert shot.std() > 20 and (shot < 128).mean() > 0.01  # text, tables and figures, not a blank page
        page.evaluate(f"document.getElementById('{view}').querySelector('button.close-view').click()")
        assert not page.evaluate(f"document.getElementById('{view}').open")
        assert page.errors() == []

        control = browser.load(broken.resolve().as_uri())
        assert control.evaluate("document.images[0].naturalWidth") == 0
        assert any("boom" in e for e in control.errors())
    finally:
        browser.close()


def _grey(png: bytes) -> np.ndarray:
    from PIL import Image
    return np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=float)


def test_names_in_a_report_are_text_not_markup(tmp_path):
    """Issue 19 defect 8: report.md carried raw markup from names (a defense label, a plugin's name)."""
    from fedleak.reports.document import Document, Heading, Paragraph, Table, md_code, to_markdown
    name = "<img src=x onerror=alert(1)> **strong** [click](http://x) `tick` a|b _edge_ snake_case"
    doc = Document(f"run of {name}")
    doc.add(Heading(name), Table(["defense", "psnr"], [[name, "12.00"]]), Paragraph(f"{md_code(name)}: gated"))
    text = to_markdown(doc, tmp_path)
    import re
    for raw in ("<img", r"\*\*strong", r"\[click", r"\|b", " _edge_"):
        assert not re.search(r"(?<!\\)" + raw, text.replace(md_code(name), "")), raw
    assert r"\<img src=x onerror=alert(1)\> \*\*strong\*\* \[click\](http://x) \`tick\` a\|b \_edge\_ snake_case" in text
    assert md_code("a `b` c") == "``a `b` c``" and md_code("`x") == "`` `x ``"
