"""Screenshots of a matrix report's HTML page in headless Chromium (the driver the browser test uses),
for docs/images/: the top of the page (contents, gate, summary), a heat map with its table, the
mosaic, and one image's view opened.

    python tools/report_screenshots.py runs/matrix-ci/report/report.html docs/images
"""
from __future__ import annotations

import base64
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from headless_browser import Browser, find_chromium  # noqa: E402

WIDTH, HEIGHT = 1280, 900


def shot(page, name: str, folder: Path, selector: str | None = None) -> Path:
    """The viewport, scrolled so that `selector` (if given) is at its top."""
    if selector:
        page.evaluate(f"window.scrollTo(0, window.scrollY + document.querySelector({selector!r}).getBoundingClientRect().top - 8)")
    data = page.browser.send("Page.captureScreenshot", {"format": "png"}, page.session)["data"]
    path = folder / name
    path.write_bytes(base64.b64decode(data))
    print(path)
    return path


def main(page_path: str, folder: str) -> None:
    executable = find_chromium()
    if executable is None:
        raise SystemExit("no Chromium (tools/install_test_deps.sh installs chromium-headless-shell)")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    browser = Browser(executable)
    try:
        page = browser.load(Path(page_path).resolve().as_uri())
        page.browser.send("Emulation.setDeviceMetricsOverride",
                          {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False}, page.session)
        shot(page, "report-top.png", out)
        shot(page, "report-summary.png", out, "h3[id^='what-each-defense-buys']")
        shot(page, "report-heat-map.png", out, "h3[id^='psnr-attack']")
        shot(page, "report-mosaic.png", out, "h3[id^='reconstructions']")
        shot(page, "report-per-image.png", out, "h3[id^='per-image']")
        page.evaluate("document.querySelector('button.open-view').click()")
        shot(page, "report-image-view.png", out)
        errors = page.errors()
        if errors:
            raise SystemExit(f"the page logged errors: {errors}")
    finally:
        browser.close()


if __name__ == "__main__":
    main(*sys.argv[1:3])
