"""One bad request never hurts another: bad texts, failing batches, abandoned clients, a full queue,
the schema's promises, the Host check, /health and SIGTERM.

Torch and ONNX backends alike for the texts that used to crash the tokenizer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from goemo.core.errors import ConfigError  # noqa: E402
from goemo.serve import background_server  # noqa: E402
from goemo.serve.app import create_app  # noqa: E402
from goemo.serve.limits import ServeLimits  # noqa: E402

LOCAL = "http://127.0.0.1"
GOOD = ["Thank you so much!", "I can't believe it.", "What? How?", "So sorry for your loss."]
SURROGATE_BODY = b'{"texts": ["ok", "fine", "good", "a\\ud800b"]}'  # valid JSON, not valid Unicode


class Recording:
    """Wraps a classifier: records every model call's texts; optional delay per call."""

    def __init__(self, inner, delay_s: float = 0.0) -> None:
        self.inner = inner
        self.label_names = list(inner.label_names)
        self.thresholds = np.asarray(inner.thresholds)
        self.delay_s = delay_s
        self.calls: list[list[str]] = []
        self._lock = threading.Lock()

    def predict_proba(self, texts):
        with self._lock:
            self.calls.append(list(texts))
        if self.delay_s:
            time.sleep(self.delay_s)
        return self.inner.predict_proba(texts)

    def __getattr__(self, name):
        return getattr(self.inner, name)


class FakeModel:
    """A model without weights: probabilities from the text length; enough for the server's logic."""

    label_names = ["joy", "anger", "neutral"]
    thresholds = np.array([0.5, 0.5, 0.5])
    path = Path("/secret/place/runs/fake/best")
    backend, device, precision = "fake", "cpu", "fp32"

    def __init__(self, delay_s: float = 0.0, fail: dict[str, Exception] | None = None) -> None:
        self.delay_s = delay_s
        self.fail = fail or {}
        self.calls: list[list[str]] = []

    def predict_proba(self, texts):
        self.calls.append(list(texts))
        if self.delay_s:
            time.sleep(self.delay_s)
        for t in texts:
            if t in self.fail:
                raise self.fail[t]
            t.encode("utf-8")  # what a tokenizer does first: a lone surrogate raises here
        return np.array([[min(len(t) / 100, 1.0), 0.2, 0.1] for t in texts], dtype=np.float32)

    def predict_from_proba(self, probs, top_k=None, threshold=None, taxonomy=None):
        return [[{"label": "joy", "score": float(p[0])}] for p in probs]

    def decide(self, probs, threshold=None, taxonomy=None):
        return self.label_names, probs, probs > 0.5

    def label_names_for(self, taxonomy=None):
        return self.label_names


@pytest.fixture(scope="module")
def torch_classifier(tiny_model_dir: Path):
    from goemo.predict.classifier import EmotionClassifier

    return EmotionClassifier.load(tiny_model_dir, backend="torch", device="cpu")


@pytest.fixture(scope="module")
def onnx_classifier(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("onnxruntime")
    from goemo.export import export_onnx
    from goemo.predict.classifier import EmotionClassifier

    out = export_onnx(tiny_model_dir, tmp_path_factory.mktemp("onnx") / "tiny-int8", quantize="int8").path
    return EmotionClassifier.load(out, backend="onnx", device="cpu")


@pytest.fixture(params=["torch", "onnx"])
def classifier(request):
    return request.getfixturevalue(f"{request.param}_classifier")


# ---------------------------------------------------------------- 1. bad texts are refused per item


def test_lone_surrogate_is_refused_per_item_and_never_reaches_the_model(classifier):
    model = Recording(classifier)
    with TestClient(create_app(model), base_url=LOCAL) as client:
        r = client.post("/predict", content=SURROGATE_BODY, headers={"content-type": "application/json"})
        assert r.status_code == 422, r.text
        assert r.json()["detail"] == "texts[3]: not valid Unicode text (lone surrogate at position 1)"
        assert model.calls == []
        assert client.post("/predict", json={"texts": GOOD}).status_code == 200


def test_a_bad_text_never_fails_the_requests_batched_with_it(classifier):
    """Concurrent innocent and guilty requests over real HTTP, sharing batches (long max_wait)."""
    model = Recording(classifier)
    app = create_app(model, ServeLimits(max_wait_ms=300, max_batch=64))
    bad = b'{"texts": ["x\\udfff"]}'

    async def drive(base: str) -> list[int]:
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:

            async def one(i: int) -> int:
                if i % 4 == 3:
                    r = await http.post("/predict", content=bad, headers={"content-type": "application/json"})
                    assert r.json()["detail"] == "texts[0]: not valid Unicode text (lone surrogate at position 1)"
                else:
                    r = await http.post("/predict", json={"texts": [f"{GOOD[i % 3]} #{i}"]})
                return r.status_code

            return await asyncio.gather(*(one(i) for i in range(16)))

    with background_server(app) as base:
        codes = asyncio.run(drive(base))
        stats = httpx.get(f"{base}/health").json()["batching"]
    assert [c for i, c in enumerate(codes) if i % 4 != 3] == [200] * 12
    assert [c for i, c in enumerate(codes) if i % 4 == 3] == [422] * 4
    assert stats["errors"] == 0 and stats["texts"] == 12
    assert max(len(c) for c in model.calls) > 1  # the good ones did share batches


@pytest.mark.parametrize("text", ["tab\there", "new\nline\r\n", "nul\x00byte", "bell\x07", "\x1b[31mred", "\ufeffbom"])
def test_control_characters_are_accepted(classifier, text):
    """Valid Unicode, so accepted (documented): the tokenizer drops or splits on them."""
    with TestClient(create_app(classifier), base_url=LOCAL) as client:
        r = client.post("/predict", json={"texts": [text, "plain"]})
        assert r.status_code == 200, r.text
        assert len(r.json()["results"]) == 2


def test_a_failing_batch_is_rerun_alone_so_only_the_guilty_fail(caplog):
    """Defence in depth: the model raising inside a batch fails only the request that caused it."""
    model = FakeModel(fail={"boom": RuntimeError("kaput"), "refuse": ConfigError("texts[0]: not for this model")})
    app = create_app(model, ServeLimits(max_wait_ms=300))

    async def drive(base: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            bodies = [["fine", "also fine"], ["boom"], ["ok"], ["refuse"], ["good"]]
            return await asyncio.gather(*(http.post("/predict", json={"texts": b}) for b in bodies))

    with caplog.at_level(logging.INFO, logger="goemo.serve"):
        with background_server(app) as base:
            fine, boom, ok, refuse, good = asyncio.run(drive(base))
            stats = httpx.get(f"{base}/health").json()["batching"]
    assert [fine.status_code, ok.status_code, good.status_code] == [200, 200, 200]
    assert boom.status_code == 500 and boom.json()["detail"] == "model failed: RuntimeError: kaput"
    assert refuse.status_code == 422 and refuse.json()["detail"] == "texts[0]: not for this model"
    assert stats["isolated"] >= 1 and stats["errors"] == 2
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1 and "kaput" in str(tracebacks[0].exc_info[1])  # the bug, logged once


def test_the_app_serves_again_after_its_lifespan_restarts():
    """A second lifespan (a test client opened twice, a server restarted in-process) gets a model thread again."""
    app = create_app(FakeModel())
    for _ in range(2):
        with TestClient(app, base_url=LOCAL) as client:
            r = client.post("/predict", json={"texts": ["again"]})
            assert r.status_code == 200, r.text


# ---------------------------------------------------------------- 2. abandoned requests are not computed


def test_abandoned_requests_are_skipped_and_do_not_delay_the_next_one():
    """30 clients give up after 0.2 s on a model taking 0.5 s per call; the next client is answered soon."""
    model = FakeModel(delay_s=0.5)
    app = create_app(model, ServeLimits(max_batch=1, max_wait_ms=0))

    async def abandon(base: str, n: int) -> int:
        async with httpx.AsyncClient(base_url=base, timeout=0.2) as http:

            async def one(i: int) -> bool:
                try:
                    await http.post("/predict", json={"texts": [f"abandoned {i}"]})
                except httpx.TimeoutException:
                    return True
                return False

            return sum(await asyncio.gather(*(one(i) for i in range(n))))

    with background_server(app) as base:
        gave_up = asyncio.run(abandon(base, 30))
        assert gave_up >= 25
        started = time.monotonic()
        r = httpx.post(f"{base}/predict", json={"texts": ["the patient one"]}, timeout=10)  # 15 s if all were run
        waited = time.monotonic() - started
        assert r.status_code == 200
        stats = httpx.get(f"{base}/health", timeout=10).json()["batching"]
    computed = [t for call in model.calls for t in call if t.startswith("abandoned")]
    assert len(computed) <= 5, computed
    assert stats["abandoned"] >= gave_up - 5
    assert waited < 10


def test_a_cancelled_request_leaves_the_queue_at_once():
    """The batcher itself: a cancelled future frees its room in the queue and is never computed."""
    from goemo.serve import MicroBatcher, QueueFullError

    release = threading.Event()
    seen: list[str] = []

    def model(texts):
        seen.extend(texts)
        release.wait(5)
        return np.zeros((len(texts), 2))

    batcher = MicroBatcher(model, max_batch=1, max_wait_ms=0, max_queue=2)

    async def run():
        first = batcher.enqueue(["running"])
        await asyncio.sleep(0.05)  # the worker holds it in the model
        waiting = [batcher.enqueue([f"w{i}"]) for i in range(2)]
        with pytest.raises(QueueFullError):
            batcher.enqueue(["one too many"])
        for f in waiting:
            f.cancel()
        await asyncio.sleep(0)
        last = batcher.enqueue(["after"])  # room again
        release.set()
        out = await asyncio.gather(first, last)
        await batcher.stop()
        return out

    asyncio.run(run())
    assert seen == ["running", "after"]
    assert batcher.stats.abandoned == 2 and batcher.stats.requests == 2


# ---------------------------------------------------------------- 4. a bounded queue


def test_a_full_queue_answers_503_with_retry_after():
    release, entered = threading.Event(), threading.Event()

    class Blocking(FakeModel):
        def predict_proba(self, texts):
            entered.set()
            release.wait(10)
            return super().predict_proba(texts)

    app = create_app(Blocking(), ServeLimits(max_batch=1, max_wait_ms=0, max_queue=2))

    async def until(condition, what: str) -> None:
        deadline = time.monotonic() + 15
        while not await condition():
            assert time.monotonic() < deadline, what
            await asyncio.sleep(0.05)

    async def drive(base: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=base, timeout=20) as http:

            async def queued() -> int:
                return (await http.get("/health")).json()["batching"]["queued"]

            tasks = [asyncio.ensure_future(http.post("/predict", json={"texts": ["t0"]}))]
            try:
                await until(lambda: asyncio.to_thread(entered.wait, 0.05), "t0 did not reach the model")
                tasks += [asyncio.ensure_future(http.post("/predict", json={"texts": [f"t{i}"]})) for i in (1, 2)]
                await until(lambda: _is(queued(), 2), "t1 and t2 did not reach the queue")
                busy = await http.post("/predict", json={"texts": ["no room"]})
            finally:
                release.set()
            return [busy, *await asyncio.gather(*tasks)]

    with background_server(app) as base:
        busy, *rest = asyncio.run(drive(base))
    assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
    assert busy.json()["detail"].startswith("server busy: 2 texts are waiting for the model (limit 2)")
    assert [r.status_code for r in rest] == [200, 200, 200]


async def _is(value, expected) -> bool:
    return await value == expected


# ---------------------------------------------------------------- 5. the schema tells the truth


def test_openapi_states_the_limits_and_one_error_model():
    app = create_app(FakeModel(), ServeLimits(max_texts=7, max_chars=123))
    with TestClient(app, base_url=LOCAL) as client:
        spec = client.get("/openapi.json").json()
        schemas = spec["components"]["schemas"]
        op = spec["paths"]["/predict"]["post"]
        ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
        texts = schemas[ref]["properties"]["texts"]
        assert (texts["minItems"], texts["maxItems"], texts["items"]["maxLength"]) == (1, 7, 123)
        assert schemas[ref]["properties"]["top_k"]["anyOf"][0]["maximum"] == 3  # the model's labels
        assert {"400", "408", "413", "422", "503"} <= set(op["responses"])
        for code in ("400", "408", "413", "422", "503"):
            assert op["responses"][code]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/Error"
            }
        assert "Retry-After" in op["responses"]["503"]["headers"]
        assert schemas["Error"]["properties"]["detail"] == {"type": "string", "title": "Detail"}
        assert "HTTPValidationError" not in schemas
        # and the answers are what the schema says: detail is a string
        for body in (b'{"texts": []}', b'{"texts": "x"}', b"{", b'{"texts": ["a"], "top_k": 4}'):
            r = client.post("/predict", content=body, headers={"content-type": "application/json"})
            assert r.status_code == 422 and isinstance(r.json()["detail"], str), r.text
        assert client.post("/predict", json={"texts": []}).json()["detail"] == "texts is empty: send at least one text"


@pytest.mark.parametrize(
    ("options", "status"),
    [
        ({"threshold": False}, 422),
        ({"threshold": True}, 422),
        ({"threshold": "0.5"}, 422),
        ({"top_k": "3"}, 422),
        ({"top_k": True}, 422),
        ({"top_k": 2.5}, 422),
        ({"top_k": 2.0}, 200),  # the same JSON number as 2 (JSON Schema: an integer)
        ({"top_k": 2}, 200),
        ({"threshold": 1}, 200),  # an integer is a number
        ({"threshold": 0.5}, 200),
    ],
    ids=str,
)
def test_options_take_the_types_the_schema_states_and_no_others(options, status):
    """The schema says integer and number: a bool or a string is refused, not read as 1 or 3 (schemathesis ST201)."""
    with TestClient(create_app(FakeModel()), base_url=LOCAL) as client:
        r = client.post("/predict", json={"texts": ["a"], **options})
        assert r.status_code == status, r.text
        if status == 422:
            assert r.json()["detail"].startswith(next(iter(options))), r.text


def test_schema_valid_top_k_with_a_taxonomy_gives_every_group(torch_classifier):
    """top_k up to the number of labels is schema-valid; with 7 Ekman groups, 20 gives all 7."""
    with TestClient(create_app(torch_classifier), base_url=LOCAL) as client:
        r = client.post("/predict", json={"texts": ["so happy"], "top_k": 20, "taxonomy": "ekman"})
        assert r.status_code == 200, r.text
        assert len(r.json()["results"][0]["labels"]) == 7
        r = client.post("/predict", json={"texts": ["so happy"], "top_k": 29})
        assert r.status_code == 422 and r.json()["detail"] == "top_k is 29 but the model has 28 labels"


def test_a_lone_surrogate_in_a_key_is_answered_in_valid_json():
    with TestClient(create_app(FakeModel()), base_url=LOCAL) as client:
        r = client.post(
            "/predict", content=b'{"texts": ["a"], "\\ud800x": 1}', headers={"content-type": "application/json"}
        )
        assert r.status_code == 422
        r.content.decode("utf-8")  # strict UTF-8: no surrogate leaked into the answer
        assert isinstance(r.json()["detail"], str)


# ---------------------------------------------------------------- 6. Host check, /health, bind warning, SIGTERM


@pytest.mark.parametrize(
    ("host", "allowed", "status"),
    [
        ("127.0.0.1:8000", (), 200),
        ("localhost", (), 200),
        ("LOCALHOST.:80", (), 200),
        ("app.localhost:8000", (), 200),
        ("127.3.4.5", (), 200),
        ("[::1]:8000", (), 200),
        ("evil.example", (), 400),
        ("evil.example:8000", (), 400),
        ("127.0.0.1.evil.example", (), 400),
        ("127.0.0.1:80@evil.example", (), 400),  # no host at all: Starlette's parser refuses it
        ("localhost:80@evil.example", (), 400),
        ("[::1]:80@evil.example", (), 400),
        ("127.0.0.1/evil.example", (), 400),
        ("127.0.0.1 evil.example", (), 400),
        ("127.0.0.256", (), 400),
        ("", (), 400),
        ("MyBox:8000", ("mybox",), 200),
        ("mybox.lan", ("mybox",), 400),
        ("mybox:80@evil.example", ("mybox",), 400),
        ("api.example.com", ("*.example.com",), 200),
        ("example.com", ("*.example.com",), 400),
        ("anything.example", ("*",), 200),
    ],
)
def test_host_header_is_checked_against_dns_rebinding(host, allowed, status):
    app = create_app(FakeModel(), ServeLimits(allowed_hosts=allowed))
    with TestClient(app, base_url=LOCAL) as client:
        r = client.get("/labels", headers={"host": host})
        assert r.status_code == status, r.text
        if status == 400:
            assert "--allowed-host" in r.json()["detail"]


@pytest.mark.parametrize("host", ["mybox:8000", "http://mybox", "", "my box", "*mybox", "a.*.example"])
def test_allowed_hosts_are_names_without_port_or_scheme(host):
    with pytest.raises(ConfigError, match="is not a host name"):
        ServeLimits(allowed_hosts=(host,))


def test_health_names_the_model_without_its_path():
    with TestClient(create_app(FakeModel(), model_threads=3), base_url=LOCAL) as client:
        health = client.get("/health").json()
    assert health["model"] == "best"
    assert "/" not in json.dumps(health["model"]) and "secret" not in json.dumps(health)
    assert (health["backend"], health["precision"], health["threads"]) == ("fake", "fp32", 3)


def test_a_non_loopback_bind_logs_a_warning(caplog):
    from goemo.serve import _served_limits, _warn_if_exposed

    with caplog.at_level(logging.WARNING, logger="goemo.serve"):
        _warn_if_exposed("127.0.0.1")
        _warn_if_exposed("::1")
        assert caplog.records == []
        _warn_if_exposed("0.0.0.0")
    assert len(caplog.records) == 1 and "no authentication" in caplog.records[0].getMessage()
    assert _served_limits(ServeLimits(), "192.168.1.20").allowed_hosts == ("192.168.1.20",)
    assert _served_limits(ServeLimits(), "0.0.0.0").allowed_hosts == ()


@pytest.mark.slow
def test_sigterm_after_a_clean_shutdown_exits_0(tiny_model_dir):
    cmd = [sys.executable, "-m", "goemo.cli", "serve", "--model", str(tiny_model_dir), "--port", "0", "--no-access-log"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            if re.search(r"Application startup complete", line):
                break
        assert any("startup complete" in line for line in lines), "".join(lines)
    finally:
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=30)[1]
    assert "Application shutdown complete" in rest
    assert proc.returncode == 0, rest


DRAINED_SERVER = """
import logging, time
import numpy as np
from goemo.serve import bind_socket, serve_app
from goemo.serve.app import create_app
from goemo.serve.limits import ServeLimits

class Slow:  # 20 ms per call of 2 texts: 150 requests keep it busy for 1.5 s
    label_names = ["joy", "anger"]
    thresholds = np.array([0.5, 0.5])
    def predict_proba(self, texts):
        time.sleep(0.02)
        return np.full((len(texts), 2), 0.25, dtype=np.float32)
    def predict_from_proba(self, probs, top_k=None, threshold=None, taxonomy=None):
        return [[] for _ in probs]
    def decide(self, probs, threshold=None, taxonomy=None):
        return self.label_names, probs, probs > 0.5
    def label_names_for(self, taxonomy=None):
        return self.label_names

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
limits = ServeLimits(max_batch=2, max_wait_ms=0, header_timeout_s=30, drain_timeout_s=30)
sock = bind_socket("127.0.0.1", 0)
print(sock.getsockname()[1], flush=True)
serve_app(create_app(Slow(), limits), sock, limits, access_log=False)
"""


def _post(text: str) -> bytes:
    body = json.dumps({"texts": [text]}).encode()
    head = f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


async def _answer(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection; b"" if it resets it."""
    try:
        return await asyncio.wait_for(reader.read(), 60)
    except ConnectionResetError:
        return b""


def test_sigterm_answers_every_request_in_flight_then_exits_0(tmp_path):
    """Requests queued, half-sent or not yet sent when SIGTERM comes are all answered (200); new connections get 503."""
    script = tmp_path / "server.py"
    script.write_text(DRAINED_SERVER)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True).start()

    def wait_for(pattern: str) -> None:
        deadline = time.monotonic() + 60
        while not any(re.search(pattern, line) for line in list(lines)):
            assert proc.poll() is None and time.monotonic() < deadline, (pattern, "".join(lines))
            time.sleep(0.02)

    try:
        port = int(proc.stdout.readline())
        wait_for("Application startup complete")
        base = f"http://127.0.0.1:{port}"

        async def drive() -> tuple[list[bytes], list[bytes], list[bytes], list[bytes]]:
            async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
                return await asyncio.open_connection("127.0.0.1", port)

            full = [await connect() for _ in range(150)]
            half = [await connect() for _ in range(20)]
            silent = [await connect() for _ in range(5)]
            for i, (_, w) in enumerate(full):
                w.write(_post(f"queued {i}"))
            for i, (_, w) in enumerate(half):
                w.write(_post(f"half {i}")[:40])  # part of the head
            for _, w in full + half:
                await w.drain()
            async with httpx.AsyncClient(base_url=base, timeout=30) as http:  # every connection accepted
                while (await http.get("/health")).json()["connections"]["open"] < 176:
                    await asyncio.sleep(0.02)
            proc.send_signal(signal.SIGTERM)
            await asyncio.to_thread(wait_for, "(?i)shutting down")
            late = []
            for _ in range(3):  # opened after SIGTERM, while the server drains
                try:
                    reader, writer = await connect()
                except ConnectionRefusedError:
                    late.append(b"refused")
                    continue
                late.append(await _answer(reader))
                writer.close()
            for i, (_, w) in enumerate(half):
                w.write(_post(f"half {i}")[40:])
            for i, (_, w) in enumerate(silent):
                w.write(_post(f"silent {i}"))
            answers = await asyncio.gather(*(_answer(r) for r, _ in full + half + silent))
            for _, w in full + half + silent:
                w.close()
            return answers[:150], answers[150:170], answers[170:], late

        full, half, silent, late = asyncio.run(drive())
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = "".join(lines)
    status = [a[:12].decode(errors="replace") or "no answer" for a in full + half + silent]
    assert status == ["HTTP/1.1 200"] * 175, ({s: status.count(s) for s in set(status)}, log[-3000:])
    assert all(b'"results"' in a for a in full + half + silent)
    assert [a[:12] for a in late] == [b"HTTP/1.1 503"] * 3, late
    assert all(b"server is shutting down" in a and b"retry-after: 1" in a.lower() for a in late)
    assert rc == 0, log[-3000:]
    assert "Traceback" not in log and "unanswered" not in log, log[-3000:]
    assert re.search(r"shutting down: answering \d+ requests in flight first", log), log[-3000:]
