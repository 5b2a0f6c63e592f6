"""The REST server: endpoints, every limit, malformed bodies, micro-batching under concurrency."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from goemo.predict.explain import word_spans  # noqa: E402
from goemo.serve import MicroBatcher, QueueFullError, background_server, bind_socket  # noqa: E402
from goemo.serve.app import create_app  # noqa: E402
from goemo.serve.limits import ServeLimits  # noqa: E402

TEXTS = [
    "Thank you so much, this made my day!",
    "I can't believe they cancelled the show.",
    "Wait, what? How does that even work?",
    "I'm so sorry for your loss.",
]


def load_classifier(folder: Path):
    """The real `EmotionClassifier` (torch backend, CPU)."""
    from goemo.predict.classifier import EmotionClassifier

    return EmotionClassifier.load(folder, backend="torch", device="cpu")


class Counting:
    """Wraps a classifier and records the size of every model call."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.label_names = list(inner.label_names)
        self.thresholds = np.asarray(inner.thresholds)
        self.calls: list[int] = []
        self._lock = threading.Lock()

    def predict_proba(self, texts):
        with self._lock:
            self.calls.append(len(texts))
        return self.inner.predict_proba(texts)

    def __getattr__(self, name):  # predict_from_proba, decide, ...
        return getattr(self.inner, name)


@pytest.fixture(scope="module")
def classifier(tiny_model_dir: Path):
    return load_classifier(tiny_model_dir)


LIMITS = ServeLimits(max_texts=4, max_chars=50, max_body_bytes=2000, max_wait_ms=2.0)
LOCAL = "http://127.0.0.1"  # the test client's default Host, "testserver", is refused (DNS rebinding guard)


@pytest.fixture()
def client(classifier) -> Iterator[TestClient]:
    with TestClient(create_app(classifier, LIMITS, model_name="tiny"), base_url=LOCAL) as c:
        yield c


# ---------------------------------------------------------------- endpoints


def test_predict_matches_direct_model_calls(client, classifier):
    r = client.post("/predict", json={"texts": TEXTS})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == len(TEXTS)
    names = list(classifier.label_names)
    for text, res in zip(TEXTS, results):
        direct = classifier.predict_proba([text])[0]
        assert list(res["scores"]) == names  # every label, in label order
        np.testing.assert_allclose([res["scores"][n] for n in names], direct, atol=1e-5)
        expected = classifier.predict([text])[0]
        assert [d["label"] for d in res["labels"]] == [d["label"] for d in expected]
        # labels: above their own threshold, most probable first
        scores = [d["score"] for d in res["labels"]]
        assert scores == sorted(scores, reverse=True)
        for d in res["labels"]:
            assert d["score"] > classifier.thresholds[names.index(d["label"])]


def test_top_k_and_threshold_override(client, classifier):
    text = TEXTS[0]
    probs = classifier.predict_proba([text])[0]
    names = list(classifier.label_names)
    best3 = [names[i] for i in np.argsort(-probs)[:3]]
    r = client.post("/predict", json={"texts": [text], "top_k": 3})
    assert [d["label"] for d in r.json()["results"][0]["labels"]] == best3
    cut = float(np.sort(probs)[-5])  # exactly 4 labels are strictly above it
    r = client.post("/predict", json={"texts": [text], "threshold": cut})
    assert len(r.json()["results"][0]["labels"]) == 4
    r = client.post("/predict", json={"texts": [text], "threshold": cut, "top_k": 2})
    assert [d["label"] for d in r.json()["results"][0]["labels"]] == best3[:2]
    r = client.post("/predict", json={"texts": [text], "threshold": 1.0})
    assert r.json()["results"][0]["labels"] == []


def test_taxonomy_groups(client, classifier):
    text = TEXTS[1]
    r = client.post("/predict", json={"texts": [text], "taxonomy": "ekman"})
    assert r.status_code == 200, r.text
    res = r.json()["results"][0]
    assert list(res["scores"]) == ["anger", "disgust", "fear", "joy", "sadness", "surprise", "neutral"]
    probs = classifier.predict_proba([text])[0]
    sad = [classifier.label_names.index(n) for n in ("sadness", "disappointment", "embarrassment", "grief", "remorse")]
    assert res["scores"]["sadness"] == pytest.approx(float(probs[sad].max()), abs=1e-5)
    assert [d["label"] for d in res["labels"]] == [d["label"] for d in classifier.predict([text], taxonomy="ekman")[0]]
    r = client.post("/predict", json={"texts": [text], "taxonomy": "/etc/passwd"})
    assert r.status_code == 422 and r.json()["detail"].startswith("taxonomy: Input should be")


def test_labels_and_health(client, classifier, tiny_model_dir):
    meta = json.loads((tiny_model_dir / "goemo.json").read_text())
    r = client.get("/labels").json()
    assert r["labels"] == meta["label_names"]
    assert r["thresholds"] == pytest.approx(meta["thresholds"]["per_label"])
    before = client.get("/health").json()
    assert before["status"] == "ok" and before["labels"] == 28 and before["model"] == "tiny"
    assert before["limits"]["max_texts"] == 4
    client.post("/predict", json={"texts": TEXTS[:3]})
    after = client.get("/health").json()["batching"]
    assert after["requests"] == before["batching"]["requests"] + 1
    assert after["texts"] == before["batching"]["texts"] + 3


def test_openapi_and_web_page(client):
    spec = client.get("/openapi.json").json()
    assert {"/predict", "/labels", "/health"} <= set(spec["paths"])
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    js, css = client.get("/static/app.js"), client.get("/static/style.css")
    assert js.status_code == css.status_code == 200
    assert '<script src="/static/app.js">' in page.text and 'href="/static/style.css"' in page.text
    for text in (page.text, js.text, css.text):  # works offline: nothing loaded from elsewhere
        assert not re.search(r"""(src|href)=["']?(https?:)?//|url\(\s*["']?(https?:)?//|@import""", text)
    assert set(re.findall(r'fetch\("([^"]+)"', js.text)) == {"/predict", "/explain", "/labels", "/health"}


def test_explain_matches_the_classifier_and_batches_its_variants(classifier):
    """/explain: the numbers of `EmotionClassifier.explain`, every variant through the batcher in max_batch jobs."""
    counting = Counting(classifier)
    limits = ServeLimits(max_texts=4, max_chars=50, max_body_bytes=2000, max_batch=8)
    with TestClient(create_app(counting, limits, model_name="tiny"), base_url=LOCAL) as c:
        r = c.post("/explain", json={"texts": TEXTS[:2]})
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        assert max(counting.calls) <= 8 and sum(counting.calls) == 2 + sum(len(word_spans(t)) for t in TEXTS[:2])
        for res, direct in zip(results, classifier.explain(TEXTS[:2])):
            assert res["text"] == direct.text
            assert [x["label"] for x in res["labels"]] == [x.label for x in direct.labels]
            for got, want in zip(res["labels"], direct.labels):
                assert got["method"] == "occlusion" and got["score"] == pytest.approx(want.score, abs=1e-6)
                assert [(w["word"], w["start"], w["end"]) for w in got["words"]] == [
                    (w.word, w.start, w.end) for w in want.words
                ]
                np.testing.assert_allclose(
                    [w["attribution"] for w in got["words"]], [w.attribution for w in want.words], atol=1e-5
                )
        r = c.post("/explain", json={"texts": [TEXTS[3]], "labels": ["sadness", "remorse"]})
        asked = r.json()["results"][0]["labels"]
        assert {x["label"] for x in asked} == {"sadness", "remorse"} and asked[0]["score"] >= asked[1]["score"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"texts": ["a"] * 5}, "too many texts: 5 in one request; the limit is 4 (--max-texts)"),
        ({"texts": ["ok", "x" * 51]}, "texts[1] has 51 characters; the limit is 50 (--max-chars)"),
        ({"texts": ["ok"], "labels": ["joy", "nope"]}, "labels: nope not among the model's labels"),
        ({"texts": ["ok"], "labels": []}, "labels"),
        ({"texts": ["ok"], "label": ["joy"]}, "label"),
        ({"texts": []}, "texts is empty"),
    ],
)
def test_explain_has_the_limits_of_predict(client, body, message):
    r = client.post("/explain", json=body)
    assert r.status_code == 422, r.text
    assert message in r.json()["detail"]
    assert {"/predict", "/explain"} <= set(client.get("/openapi.json").json()["paths"])


# ---------------------------------------------------------------- limits and bad bodies


def test_too_many_texts(client):
    r = client.post("/predict", json={"texts": ["a"] * 5})
    assert r.status_code == 422
    assert r.json()["detail"] == "too many texts: 5 in one request; the limit is 4 (--max-texts)"


def test_text_too_long(client):
    r = client.post("/predict", json={"texts": ["ok", "x" * 51]})
    assert r.status_code == 422
    assert r.json()["detail"] == "texts[1] has 51 characters; the limit is 50 (--max-chars)"
    assert client.post("/predict", json={"texts": ["x" * 50]}).status_code == 200


def test_body_too_large_by_content_length(client):
    body = json.dumps({"texts": ["y" * 2500]}).encode()
    r = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert "2,000 bytes" in r.json()["detail"] and "--max-body-bytes" in r.json()["detail"]


def test_body_too_large_while_streaming(client):
    """No Content-Length (chunked): the limit is checked on the bytes as they arrive."""

    def chunks():
        yield b'{"texts": ["'
        for _ in range(10):
            yield b"z" * 400
        yield b'"]}'

    r = client.post("/predict", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert "--max-body-bytes" in r.json()["detail"]


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b'{"texts": ["unfinished', "application/json", "request body is not valid JSON"),
        (b"\xff\xfe\x00garbage", "application/json", "request body is not valid JSON"),
        (b"", "application/json", "request body is missing"),
        (b"[1, 2]", "application/json", "request body must be a JSON object"),
        (b'"just a string"', "application/json", "request body must be a JSON object"),
        (b'{"texts": "one string"}', "application/json", "texts: Input should be a valid list"),
        (b'{"texts": ["ok", 7]}', "application/json", "texts[1]: Input should be a valid string"),
        (b'{"text": ["typo"]}', "application/json", "texts: Field required"),
        (b'{"texts": []}', "application/json", "texts is empty"),
        (b'{"texts": ["a"], "top_k": 0}', "application/json", "top_k: Input should be greater than or equal to 1"),
        (b'{"texts": ["a"], "top_k": 29}', "application/json", "top_k is 29 but the model has 28 labels"),
        (b'{"texts": ["a"], "threshold": 1.5}', "application/json", "threshold: Input should be less than or equal"),
        (b'{"texts": ["a"]}', "text/plain", "Content-Type"),
    ],
)
def test_malformed_bodies_get_one_clear_line(client, body, content_type, message):
    r = client.post("/predict", content=body, headers={"content-type": content_type})
    assert r.status_code == 422, r.text
    assert message in r.json()["detail"]
    assert client.get("/health").status_code == 200  # still serving


@pytest.mark.parametrize(
    ("body", "headers", "status", "message"),
    [
        (b"[" * 100_000 + b"]" * 100_000, {}, 400, "error parsing the body"),  # deeper than the JSON parser goes
        (b'{"texts": ["a"]}', {"content-length": "many"}, 400, "Content-Length is not a number"),
    ],
)
def test_hostile_bodies_are_refused(classifier, body, headers, status, message):
    with TestClient(create_app(classifier), base_url=LOCAL) as client:  # default limits: a 1 MB body
        r = client.post("/predict", content=body, headers={"content-type": "application/json", **headers})
        assert r.status_code == status and message in r.json()["detail"]
        assert client.get("/health").status_code == 200


def test_model_failure_is_500_and_server_recovers(classifier):
    class Flaky(Counting):
        def predict_proba(self, texts):
            if "boom" in texts:
                raise RuntimeError("kaput")
            return super().predict_proba(texts)

    with TestClient(create_app(Flaky(classifier), LIMITS), base_url=LOCAL) as c:
        r = c.post("/predict", json={"texts": ["boom"]})
        assert r.status_code == 500 and r.json()["detail"] == "model failed: RuntimeError: kaput"
        assert c.post("/predict", json={"texts": ["fine"]}).status_code == 200
        assert c.get("/health").json()["batching"]["errors"] == 1


def test_limits_are_validated():
    from goemo.core.errors import ConfigError

    with pytest.raises(ConfigError, match="max_texts must be a positive integer"):
        ServeLimits(max_texts=0)
    with pytest.raises(ConfigError, match="max_wait_ms"):
        ServeLimits(max_wait_ms=-1)


# ---------------------------------------------------------------- micro-batching


def test_concurrent_clients_each_get_their_own_answer(classifier):
    """20 clients at once over real HTTP: fewer model calls than requests, each answer its own."""
    counting = Counting(classifier)
    app = create_app(counting, ServeLimits(max_batch=64, max_wait_ms=50))
    texts = [f"{TEXTS[i % 4]} (number {i}{'!' * (i % 5)})" for i in range(20)]

    async def drive(base: str) -> list[dict]:
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:

            async def one(text: str) -> dict:
                r = await http.post("/predict", json={"texts": [text]})
                assert r.status_code == 200, r.text
                return r.json()["results"][0]

            return await asyncio.gather(*(one(t) for t in texts))

    with background_server(app) as base:
        results = asyncio.run(drive(base))
        stats = httpx.get(f"{base}/health").json()["batching"]
    names = list(classifier.label_names)
    for text, res in zip(texts, results):
        direct = classifier.predict_proba([text])[0]
        np.testing.assert_allclose([res["scores"][n] for n in names], direct, atol=1e-5)
    assert stats["requests"] == 20 and stats["texts"] == 20
    assert len(counting.calls) == stats["batches"] < 20
    assert max(counting.calls) > 1


def _fake_model(texts):
    """Row i encodes its own text, so a mixed-up slice is visible."""
    return np.array([[len(t), hash(t) % 1000, 0.5] for t in texts], dtype=np.float64)


def test_batcher_slices_and_respects_max_batch():
    calls: list[int] = []

    def model(texts):
        calls.append(len(texts))
        time.sleep(0.01)
        return _fake_model(texts)

    batcher = MicroBatcher(model, max_batch=8, max_wait_ms=20)
    requests = [[f"r{i}-t{j}" * (i + 1) for j in range(1 + i % 3)] for i in range(30)]

    async def run():
        out = await asyncio.gather(*(batcher.submit(r) for r in requests))
        await batcher.stop()
        return out

    outputs = asyncio.run(run())
    for req, out in zip(requests, outputs):
        np.testing.assert_array_equal(out, _fake_model(req))
    assert sum(calls) == sum(len(r) for r in requests)
    assert max(calls) <= 8 and len(calls) < len(requests)
    assert batcher.stats.batches == len(calls) and batcher.stats.largest_batch == max(calls)


def test_batcher_max_batch_one_means_one_call_per_request():
    calls: list[int] = []
    batcher = MicroBatcher(lambda t: calls.append(len(t)) or _fake_model(t), max_batch=1, max_wait_ms=20)

    async def run():
        await asyncio.gather(*(batcher.submit([f"t{i}"]) for i in range(6)), batcher.submit(["a", "b", "c"]))
        await batcher.stop()

    asyncio.run(run())
    assert sorted(calls) == [1, 1, 1, 1, 1, 1, 3]  # a longer request still runs whole


def test_batcher_queue_full_and_survives_errors():
    release = threading.Event()

    def slow(texts):
        release.wait(5)
        if "bad" in texts:
            raise ValueError("bad text")
        return _fake_model(texts)

    batcher = MicroBatcher(slow, max_batch=2, max_wait_ms=0, max_queue=3)

    async def run():
        first = asyncio.ensure_future(batcher.submit(["a"]))
        await asyncio.sleep(0.05)  # the worker holds "a" in the model
        queued = [asyncio.ensure_future(batcher.submit([t])) for t in ("b", "bad", "c")]
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFullError, match="3 texts are waiting"):
            await batcher.submit(["d"])
        release.set()
        done = await asyncio.gather(first, *queued, return_exceptions=True)
        await batcher.stop()
        return done

    a, b, bad, c = asyncio.run(run())
    np.testing.assert_array_equal(a, _fake_model(["a"]))
    assert isinstance(bad, ValueError)
    np.testing.assert_array_equal(b, _fake_model(["b"]))  # b shared bad's batch, and was re-run alone
    np.testing.assert_array_equal(c, _fake_model(["c"]))
    assert batcher.stats.errors == 1 and batcher.stats.isolated == 1


# ---------------------------------------------------------------- the CLI verb


@pytest.mark.slow
def test_cli_serve_starts_answers_and_stops(tiny_model_dir):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [
        sys.executable,
        "-m",
        "goemo.cli",
        "serve",
        "--model",
        str(tiny_model_dir),
        "--port",
        "0",
        "--max-texts",
        "2",
        "--no-access-log",
    ]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 90
        port = None
        while port is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            m = re.search(r"on http://127\.0\.0\.1:(\d+)", line)
            port = int(m.group(1)) if m else None
        assert port, "".join(lines)
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                health = httpx.get(f"{base}/health", timeout=5).json()
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert health["limits"]["max_texts"] == 2
        r = httpx.post(f"{base}/predict", json={"texts": ["a", "b", "c"]}, timeout=10)
        assert r.status_code == 422 and "--max-texts" in r.json()["detail"]
    finally:
        proc.terminate()  # SIGTERM: a graceful shutdown, and exit 0
        rest = proc.communicate(timeout=30)[1]
    assert proc.returncode == 0, rest
    assert "Application shutdown complete" in rest


def test_cli_serve_errors_are_one_line(tmp_path, tiny_model_dir):
    from typer.testing import CliRunner

    from goemo.cli import app

    runner = CliRunner()
    taken = bind_socket("127.0.0.1", 0)
    try:
        port = taken.getsockname()[1]
        r = runner.invoke(app, ["serve", "--model", str(tiny_model_dir), "--port", str(port)])
        assert r.exit_code == 1
        assert f"goemo: error: cannot listen on 127.0.0.1:{port}" in r.output
    finally:
        taken.close()
    r = runner.invoke(app, ["serve", "--model", str(tmp_path / "missing"), "--port", "0"])
    assert r.exit_code == 1 and r.output.startswith("goemo: error:") and "Traceback" not in r.output
    r = runner.invoke(app, ["serve", "--help"])
    assert r.exit_code == 0 and "Example: goemo serve --model" in r.output


# ---------------------------------------------------------------- long texts and the token limit

LONG = (
    "I waited three weeks for this order and checked the tracking every day. "
    "When it finally came the box was crushed and half the parts were missing! "
    "Thank you so much to the shop, though, they sent the rest the very next morning. "
    "Honestly I am still a bit annoyed about the wait."
)


def test_a_long_text_is_scored_whole_and_a_request_over_max_tokens_is_refused(classifier):
    assert len(classifier.tokenizer(LONG)["input_ids"]) > classifier.max_length
    limits = ServeLimits(max_tokens=120, max_wait_ms=0.0)
    with TestClient(create_app(classifier, limits), base_url=LOCAL) as c:
        r = c.post("/predict", json={"texts": [LONG]})
        assert r.status_code == 200, r.text
        scores = [r.json()["results"][0]["scores"][n] for n in classifier.label_names]
        np.testing.assert_allclose(scores, classifier.predict_proba([LONG])[0], atol=1e-6)
        tokens = sum(classifier.count_tokens([LONG, LONG]))
        r = c.post("/predict", json={"texts": [LONG, LONG]})
        assert r.status_code == 422
        assert r.json()["detail"] == f"too many tokens: {tokens:,} in one request; the limit is 120 (--max-tokens)"
        health = c.get("/health").json()
        assert health["long_text"].startswith(f"texts over {classifier.max_length} tokens: pieces")
        assert health["long_texts"]["long"] >= 1 and health["batching"]["tokens"] == tokens // 2


def test_explain_counts_what_occlusion_makes_the_model_read(classifier):
    """/explain's tokens are each text's tokens times its words + 1, against --max-tokens; the batcher gets them."""
    short = "Thank you so much, this made my day!"
    tokens, words = classifier.count_tokens([short])[0], len(word_spans(short))
    cost = tokens * (words + 1)
    assert tokens <= 120 < cost  # /predict takes the text; explaining it reads it words + 1 times
    limits = ServeLimits(max_tokens=120, max_wait_ms=0.0)
    with TestClient(create_app(classifier, limits), base_url=LOCAL) as c:
        assert c.post("/predict", json={"texts": [short]}).status_code == 200
        r = c.post("/explain", json={"texts": [short]})
        assert r.status_code == 422
        assert r.json()["detail"] == (
            f"too many tokens to explain: {cost:,} (each text's tokens times its words + 1); "
            "the limit is 120 (--max-tokens)"
        )
    with TestClient(create_app(classifier, ServeLimits(max_tokens=cost, max_batch=4)), base_url=LOCAL) as c:
        before = c.get("/health").json()["batching"]["tokens"]
        r = c.post("/explain", json={"texts": [short]})
        assert r.status_code == 200, r.text
        assert (
            c.get("/health").json()["batching"]["tokens"] - before == cost
        )  # every variant counted, at most its text's


def test_batcher_keeps_each_model_call_within_max_batch_tokens():
    """A heavy request is not merged with so many others that they all wait for it; each call stays bounded."""
    calls: list[list[str]] = []
    release = threading.Event()

    def model(texts):
        calls.append(list(texts))
        release.wait(5)
        return _fake_model(texts)

    batcher = MicroBatcher(model, max_batch=64, max_wait_ms=0, max_batch_tokens=10)
    cost = {"first": 1, "heavy": 9, "a": 2, "b": 2, "c": 2, "d": 2, "e": 5}

    async def run():
        first = asyncio.ensure_future(batcher.submit(["first"], cost["first"]))
        await asyncio.sleep(0.05)  # the model holds "first": the rest queue
        rest = [asyncio.ensure_future(batcher.submit([t], cost[t])) for t in ("heavy", "a", "b", "c", "d", "e")]
        await asyncio.sleep(0.05)
        release.set()
        await asyncio.gather(first, *rest)
        await batcher.stop()

    asyncio.run(run())
    assert calls == [["first"], ["heavy"], ["a", "b", "c", "d"], ["e"]]
    assert all(sum(cost[t] for t in call) <= 10 for call in calls)
    assert batcher.stats.tokens == sum(cost.values())
