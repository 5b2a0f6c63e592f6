"""Remake the pictures in docs/ from the model `make run` trains (not a demo model).

* ``docs/serve_web_page.png``: `goemo serve`'s web page in headless Chromium, labelling a few
  texts with ``runs/reproduce/best`` at its dev-tuned thresholds;
* ``docs/report-per-label-f1.png``: the per-label F1 plot of ``runs/reproduce``'s report.

    python benchmarks/docs_pictures.py --model runs/reproduce/best

Needs Chromium (``apt-get install chromium``) and the test extra (playwright).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from playwright.sync_api import sync_playwright

from goemo.predict.classifier import EmotionClassifier
from goemo.serve import background_server
from goemo.serve.app import create_app

DOCS = Path(__file__).resolve().parents[1] / "docs"
TEXT = "I was so looking forward to this and it got cancelled. Really disappointed."
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def web_page(model: Path, chromium: Path, out: Path) -> list[str]:
    """Screenshot of the page after labelling TEXT; returns the labels the page chose."""
    clf = EmotionClassifier.load(model)
    with background_server(create_app(clf, model_name=model.parent.name)) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS, headless=True)
        page = browser.new_context(viewport={"width": 900, "height": 1000}).new_page()
        page.goto(url + "/")
        page.fill("#text", TEXT)
        page.click("#go")
        page.wait_for_selector("#bars .bar")
        chosen = page.locator("#chosen .chip").all_inner_texts()
        page.screenshot(path=str(out), full_page=True)
        browser.close()
    return chosen


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=Path("runs/reproduce/best"))
    ap.add_argument("--chromium", type=Path, default=Path("/usr/bin/chromium"))
    args = ap.parse_args(argv)
    chosen = web_page(args.model, args.chromium, DOCS / "serve_web_page.png")
    print(f"web page: {TEXT!r} -> {', '.join(chosen) or '(none above threshold)'}")
    plot = args.model.parent / "plots" / "per_label_f1.png"
    if plot.is_file():
        shutil.copyfile(plot, DOCS / "report-per-label-f1.png")
        print(f"per-label F1 plot copied from {plot}")
    else:
        print(f"no {plot}: the report plot was left as it is")


if __name__ == "__main__":
    main()
