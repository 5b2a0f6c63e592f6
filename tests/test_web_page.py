"""The web page in a real browser: headless Chromium (Debian's package) driven by Playwright.

Set GOEMO_SCREENSHOT_DIR to keep the screenshots (they always go to the test's tmp folder).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = Path(os.environ.get("GOEMO_CHROMIUM", "/usr/bin/chromium"))
if not CHROMIUM.is_file():
    pytest.skip(
        f"Chromium not found at {CHROMIUM}: install it (apt-get install chromium; .ci/run does) "
        "or point GOEMO_CHROMIUM at it",
        allow_module_level=True,
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is missing (test extra)")
httpx = pytest.importorskip("httpx")

from goemo.serve import background_server  # noqa: E402
from goemo.serve.app import create_app  # noqa: E402
from goemo.serve.limits import ServeLimits  # noqa: E402

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SENTENCE = "Thank you so much, this made my day!"
SHOWN = 3  # labels the test makes cross their threshold, so that the highlight is exercised


@pytest.fixture(scope="module")
def classifier(tiny_model_dir: Path):
    """The tiny model, with thresholds placed so that exactly SHOWN labels are above them for SENTENCE.

    A tiny model trained for seconds puts no label over its tuned threshold; moving the
    thresholds is how the test gets a known number of highlighted bars.
    """
    from goemo.predict.classifier import EmotionClassifier

    clf = EmotionClassifier.load(tiny_model_dir, backend="torch", device="cpu")
    probs = np.sort(clf.predict_proba([SENTENCE])[0])[::-1]
    clf.thresholds = np.full(len(clf.label_names), (probs[SHOWN - 1] + probs[SHOWN]) / 2, dtype=np.float32)
    return clf


@pytest.fixture(scope="module")
def server(classifier):
    with background_server(create_app(classifier, ServeLimits(max_chars=300), model_name="tiny-test-model")) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture()
def page(browser, server):
    context = browser.new_context(viewport={"width": 900, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(15_000)
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("request", lambda r: None if r.url.startswith(server) else problems.append(f"off-site request {r.url}"))
    page.problems = problems  # type: ignore[attr-defined]
    page.goto(server + "/")
    page.wait_for_selector("body[data-ready=true]")
    yield page
    context.close()


def _keep(path: Path) -> None:
    target = os.environ.get("GOEMO_SCREENSHOT_DIR")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / path.name)


def _bars(page) -> list[dict]:
    return page.eval_on_selector_all(
        "#bars .bar",
        """rows => rows.map(r => {
            const track = r.querySelector('.track').getBoundingClientRect();
            const fill = r.querySelector('.fill').getBoundingClientRect();
            return {label: r.dataset.label, score: Number(r.dataset.score), above: r.classList.contains('above'),
                    shown: r.querySelector('.value').textContent, ratio: fill.width / track.width};
        })""",
    )


def test_type_click_and_read_the_bars(page, server, classifier, tmp_path):
    page.fill("#text", SENTENCE)
    page.click("#go")
    page.wait_for_selector("body[data-state=done]")
    bars = _bars(page)
    api = httpx.post(f"{server}/predict", json={"texts": [SENTENCE]}).json()["results"][0]

    assert len(bars) == len(classifier.label_names) == 28
    assert {b["label"] for b in bars} == set(classifier.label_names)
    for b in bars:
        assert b["score"] == pytest.approx(api["scores"][b["label"]], abs=1e-9)
        assert b["shown"] == f"{b['score']:.3f}"
        assert b["ratio"] == pytest.approx(b["score"], abs=0.01)  # the drawn bar is as long as the probability
    assert [b["score"] for b in bars] == sorted((b["score"] for b in bars), reverse=True)
    highlighted = [b["label"] for b in bars if b["above"]]
    assert highlighted == [d["label"] for d in api["labels"]] and len(highlighted) == SHOWN
    chips = page.locator("#chosen .chip").all_inner_texts()
    assert [c.split()[0] for c in chips] == highlighted
    assert page.locator("#bars .bar.above .fill").first.evaluate("e => getComputedStyle(e).backgroundColor") != (
        page.locator("#bars .bar:not(.above) .fill").first.evaluate("e => getComputedStyle(e).backgroundColor")
    )
    assert "Done in" in page.inner_text("#message")
    shot = tmp_path / "web_page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    _keep(shot)
    assert page.problems == []  # type: ignore[attr-defined]


def test_example_sentence_and_error_message(page, server, tmp_path):
    examples = page.locator("#examples button")
    assert examples.count() >= 4
    second = examples.nth(1)
    text = second.inner_text()
    second.click()
    page.wait_for_selector("body[data-state=done]")
    assert page.input_value("#text") == text
    api = httpx.post(f"{server}/predict", json={"texts": [text]}).json()["results"][0]
    top = _bars(page)[0]
    assert top["score"] == pytest.approx(max(api["scores"].values()), abs=1e-9)

    page.fill("#text", "x" * 301)  # over the server's max_chars=300
    assert "301 / 300" in page.inner_text("#count")
    page.click("#go")
    page.wait_for_selector("body[data-state=error]")
    message = page.inner_text("#message")
    assert "texts[0] has 301 characters; the limit is 300" in message
    shot = tmp_path / "web_page_error.png"
    page.screenshot(path=str(shot))
    _keep(shot)
    expected = "the server responded with a status of 422"  # Chromium logs every failed fetch
    assert [p for p in page.problems if expected not in p] == []  # type: ignore[attr-defined]


def test_click_an_emotion_and_see_the_words_behind_it(page, server, tmp_path):
    page.fill("#text", SENTENCE)
    page.click("#go")
    page.wait_for_selector("body[data-state=done]")
    assert page.locator("#why").is_hidden()
    chip = page.locator("#chosen .chip").first
    label = chip.get_attribute("data-label")
    chip.click()
    page.wait_for_selector("body[data-explain=done]")
    assert page.locator("#why").is_visible() and page.inner_text("#why-title").startswith(f"Why {label} (")
    api = httpx.post(f"{server}/explain", json={"texts": [SENTENCE], "labels": [label]}).json()
    words = api["results"][0]["labels"][0]["words"]
    shown = page.eval_on_selector_all(
        "#explained .word",
        """spans => spans.map(s => ({word: s.textContent, attribution: Number(s.dataset.attribution),
            pos: s.classList.contains('pos'), neg: s.classList.contains('neg'), colour: s.style.backgroundColor}))""",
    )
    assert [s["word"] for s in shown] == [w["word"] for w in words]
    assert page.inner_text("#explained") == SENTENCE  # the text as written, spaces and punctuation kept
    largest = max(abs(w["attribution"]) for w in words)
    for s, w in zip(shown, words):
        assert s["attribution"] == pytest.approx(w["attribution"], abs=1e-9)
        strong = abs(w["attribution"]) >= 0.15 * largest and largest > 0
        assert (s["pos"] or s["neg"]) == strong and s["pos"] == (strong and w["attribution"] > 0)
        assert bool(s["colour"]) == strong
    assert any(s["pos"] or s["neg"] for s in shown)  # the strongest word at least is highlighted
    assert chip.get_attribute("aria-pressed") == "true"

    # a bar works the same way, for a label below its threshold too
    last = page.locator("#bars .bar").last
    other = last.get_attribute("data-label")
    last.click()
    page.wait_for_function(f"document.getElementById('why-title').textContent.startsWith('Why {other} (')")
    assert page.locator("#bars .bar[aria-pressed=true]").get_attribute("data-label") == other
    shot = tmp_path / "web_page_explain.png"
    page.screenshot(path=str(shot), full_page=True)
    _keep(shot)
    assert page.problems == []  # type: ignore[attr-defined]
