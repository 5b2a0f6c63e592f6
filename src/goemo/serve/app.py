"""The REST API and web page around an `EmotionClassifier`.

Routes: ``POST /predict``, ``POST /explain`` (the words behind each emotion, by word occlusion
through the same batcher, so it runs on every backend), ``GET /labels``, ``GET /health``, ``GET /`` (the web page, with
its files under ``/static``) and FastAPI's ``/docs`` and ``/openapi.json``.

Every request goes through one `MicroBatcher`, so texts from concurrent clients share a
model call. The model only gives probabilities; turning them into labels happens here,
per request, because requests merged into one batch may ask for different ``top_k`` or
``threshold``.

Every error answers ``{"detail": "<one line>"}`` (the schema's ``Error``) so that a script
(or the web page) can show it as it is:

- 400: a Host header that is not loopback or ``allowed_hosts`` (`HostCheck`, against DNS
  rebinding), a Content-Length that is not a number, or one beside Transfer-Encoding
  (`BodySizeLimit`, connection closed), a body the JSON parser cannot read;
- 408: a body not received within ``body_timeout_s`` (`BodyReadTimeout`);
- 413: a body over ``max_body_bytes`` (`BodySizeLimit`: from Content-Length, and while the
  body streams in);
- 422: a body that is not the expected JSON or breaks a limit, naming the item
  (``texts[3]: not valid Unicode text (lone surrogate at position 1)``); the limits are
  in the OpenAPI schema (``minItems``, ``maxItems``, ``maxLength``), but for the tokens of a
  request (``max_tokens``), which the model's tokenizer counts (off the event loop) before the
  texts join the queue (for ``/explain``: each text's tokens times its words + 1, what the
  occlusion makes the model read);
- 503 with ``Retry-After``: the queue is full;
- 500: a bug (the model raised something other than a `GoemoError`), logged once.

A bad item is refused before it enters a batch, and a batch that fails anyway is re-run one
request at a time (`MicroBatcher`), so one bad request never fails another. A request whose
client disconnects while it waits is withdrawn from the queue. Texts may contain control
characters (tabs, newlines, NUL...): they are valid Unicode, and the tokenizer drops or
splits on them.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from goemo.core.errors import ConfigError, GoemoError
from goemo.predict.explain import OcclusionPlan, label_indices

try:
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.responses import FileResponse, Response
    from fastapi.staticfiles import StaticFiles
except ImportError as e:  # pragma: no cover - depends on the installed extras
    raise GoemoError(f"serving needs the serve extra ({e.name} is missing): pip install 'goemo[serve]'") from None

from goemo.serve.batcher import MicroBatcher, QueueFullError
from goemo.serve.connections import quiet_resource_errors
from goemo.serve.error_responses import install_error_handlers
from goemo.serve.guards import BodyReadTimeout, BodySizeLimit, HostCheck, disconnected
from goemo.serve.limits import RETRY_AFTER_S, ServeLimits
from goemo.serve.schemas import (
    ExplainRequest,
    ExplainResponse,
    HealthResponse,
    LabelsResponse,
    PredictRequest,
    PredictResponse,
    explain_request_model,
    request_model,
    responses,
)

STATIC_DIR = Path(__file__).resolve().parent / "static"


class Classifier(Protocol):
    """What the server needs from a model: `goemo.predict.classifier.EmotionClassifier` fits."""

    label_names: list[str]
    thresholds: np.ndarray

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray: ...

    def predict_from_proba(
        self, probs: np.ndarray, top_k: int | None = None, threshold: float | None = None, taxonomy: str | None = None
    ) -> list[list[dict[str, Any]]]: ...

    def decide(
        self, probs: np.ndarray, threshold: float | None = None, taxonomy: str | None = None
    ) -> tuple[list[str], np.ndarray, np.ndarray]: ...

    def label_names_for(self, taxonomy: str | None = None) -> list[str]: ...


def create_app(
    classifier: Classifier,
    limits: ServeLimits | None = None,
    *,
    model_name: str | None = None,
    model_threads: int | None = None,
    workers: int = 1,
) -> FastAPI:
    """The FastAPI application serving ``classifier``; run it with any ASGI server.

    ``model_name`` is what ``/health`` shows (default: the model folder's name, never its
    path); ``model_threads`` the model's CPU threads (default: the classifier's
    ``num_threads``, when it has one); ``workers`` how many processes serve the same port.

        from goemo import EmotionClassifier
        app = create_app(EmotionClassifier.load("runs/x/best"), ServeLimits(max_texts=16))
        import uvicorn; uvicorn.run(app, host="127.0.0.1", port=8000)
    """
    limits = limits or ServeLimits()
    path = getattr(classifier, "path", None)
    if model_name is None and path is not None:
        model_name = Path(path).resolve().name
    if model_threads is None:
        model_threads = getattr(classifier, "num_threads", None)
    label_names = list(classifier.label_names)
    thresholds = np.asarray(classifier.thresholds, dtype=np.float64)
    if thresholds.shape != (len(label_names),):
        raise ConfigError(f"classifier has {len(label_names)} labels but {thresholds.shape} thresholds")
    batcher = MicroBatcher(
        classifier.predict_proba,
        max_batch=limits.max_batch,
        max_wait_ms=limits.max_wait_ms,
        max_queue=limits.max_queue,
        max_batch_tokens=limits.max_tokens,
    )
    count_tokens = getattr(classifier, "count_tokens", None)  # `EmotionClassifier.count_tokens`
    started = time.time()
    body_model = request_model(limits, len(label_names))
    explain_model = explain_request_model(limits, label_names)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        restore = quiet_resource_errors(asyncio.get_running_loop())
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()
            batcher.close()
            restore()

    app = FastAPI(
        title="goemo",
        summary="Multi-label emotion classification of text (GoEmotions labels).",
        version=__import__("goemo").__version__,
        lifespan=lifespan,
    )
    # Outermost first: Host, then the body's size, then its time.
    app.add_middleware(BodyReadTimeout, timeout_s=limits.body_timeout_s)
    app.add_middleware(BodySizeLimit, max_bytes=limits.max_body_bytes)
    app.add_middleware(HostCheck, allowed_hosts=limits.allowed_hosts)
    app.state.batcher = batcher
    app.state.limits = limits
    app.state.connections = None  # a `ConnectionGuard` when goemo's uvicorn set-up serves the app
    install_error_handlers(app)

    async def batch_of(texts: list[str], tokens: int, watcher: asyncio.Future) -> np.ndarray | None:
        """Probabilities of ``texts`` (``tokens`` for the batcher's per-call limit) from one batcher job.

        None when the client has gone (``watcher`` done).
        """
        try:
            future = batcher.enqueue(texts, tokens)
        except QueueFullError as e:
            raise HTTPException(503, f"server busy: {e}", headers={"Retry-After": str(RETRY_AFTER_S)}) from None
        try:
            await asyncio.wait((future, watcher), return_when=asyncio.FIRST_COMPLETED)
            if not future.done() and watcher.exception() is None:
                future.cancel()  # the client has gone: its texts leave the queue uncomputed
                return None
            return await future
        except asyncio.CancelledError:
            if not future.cancelled() or _cancelling():
                raise
            raise HTTPException(
                503, "server shutting down; retry later", headers={"Retry-After": str(RETRY_AFTER_S)}
            ) from None
        except GoemoError as e:  # the model refused these texts: the caller's problem, said in one line
            raise HTTPException(422, str(e)) from None
        except Exception as e:  # a bug; the batcher already logged the traceback
            raise HTTPException(500, f"model failed: {type(e).__name__}: {e}") from None
        finally:
            if not future.done():
                future.cancel()

    async def token_counts(texts: list[str]) -> list[int] | None:
        """Each text's tokens, counted off the event loop; None when the classifier does not count them."""
        if not callable(count_tokens):
            return None
        return list(await asyncio.to_thread(count_tokens, texts))

    async def probabilities(
        texts: list[str], request: Request, step: int, tokens: list[int] | None
    ) -> np.ndarray | None:
        """Probabilities of ``texts``, ``step`` texts per batcher job, one job after another; None: the client left.

        ``/predict`` sends its texts as one job; ``/explain`` its many variants in jobs of
        ``max_batch``, so it never holds more than that in the queue and requests of others
        take turns with it. ``tokens``: each text's tokens (or an upper bound), for the
        batcher's ``max_batch_tokens``.
        """
        watcher = asyncio.ensure_future(disconnected(request))
        try:
            parts = []
            for at in range(0, len(texts), step):
                cost = sum(tokens[at : at + step]) if tokens is not None else 0
                part = await batch_of(texts[at : at + step], cost, watcher)
                if part is None:
                    return None
                parts.append(part)
            return np.concatenate(parts)
        finally:
            watcher.cancel()

    async def predict(body: PredictRequest, request: Request) -> Any:
        """Probabilities of every label and the selected labels, per text, in input order."""
        texts = body.texts
        try:
            names = classifier.label_names_for(body.taxonomy) if body.taxonomy else label_names
        except GoemoError as e:  # e.g. sentiment asked of a model trained on Ekman groups
            raise HTTPException(422, f"taxonomy: {e}") from None
        top_k = body.top_k if body.top_k is None else min(body.top_k, len(names))  # groups: fewer than labels
        tokens = await token_counts(texts)  # a long text is scored whole, in pieces: its cost is its tokens
        if tokens is not None and sum(tokens) > limits.max_tokens:
            raise HTTPException(
                422,
                f"too many tokens: {sum(tokens):,} in one request; the limit is {limits.max_tokens:,} (--max-tokens)",
            )
        probs = await probabilities(texts, request, len(texts), tokens)
        if probs is None:
            return Response(status_code=499)  # nobody reads it
        # Labels are chosen per request: requests sharing a batch may ask for different options.
        chosen = classifier.predict_from_proba(probs, top_k=top_k, threshold=body.threshold, taxonomy=body.taxonomy)
        scores = classifier.decide(probs, taxonomy=body.taxonomy)[1] if body.taxonomy else probs
        return {
            "results": [
                {"labels": labels, "scores": dict(zip(names, map(float, row)))} for labels, row in zip(chosen, scores)
            ]
        }

    predict.__annotations__["body"] = body_model  # the limits' model, not the bare one
    app.post(
        "/predict",
        response_model=PredictResponse,
        summary="Emotions of one or more texts",
        responses=responses(400, 408, 413, 422, 503),
    )(predict)

    async def explain(body: ExplainRequest, request: Request) -> Any:
        """Per text, the words behind each predicted (or asked) label: word occlusion through the batcher."""
        try:
            asked = label_indices(label_names, body.labels)
        except GoemoError as e:
            raise HTTPException(422, str(e)) from None
        plan = OcclusionPlan.of(body.texts)
        tokens = await token_counts(list(plan.originals))
        variant_tokens = None
        if tokens is not None:
            # Each text is scored once whole and once without each of its words: the model reads its tokens
            # (at most) words + 1 times. That is the request's cost, held to the same limit as /predict's.
            variant_tokens = tokens + [n for n, spans in zip(tokens, plan.spans) for _ in spans]
            if sum(variant_tokens) > limits.max_tokens:
                raise HTTPException(
                    422,
                    f"too many tokens to explain: {sum(variant_tokens):,} (each text's tokens times its words + 1); "
                    f"the limit is {limits.max_tokens:,} (--max-tokens)",
                )
        probs = await probabilities(list(plan.texts), request, limits.max_batch, variant_tokens)
        if probs is None:
            return Response(status_code=499)
        return {"results": [e.to_dict() for e in plan.finish(probs, label_names, thresholds, asked)]}

    explain.__annotations__["body"] = explain_model
    app.post(
        "/explain",
        response_model=ExplainResponse,
        summary="The words behind each emotion of one or more texts",
        description="Each word of each text is deleted in turn and every variant scored by the same model, "
        "batched with other requests; a word's attribution is how much its deletion lowers the label's probability.",
        responses=responses(400, 408, 413, 422, 503),
    )(explain)

    @app.get(
        "/labels",
        response_model=LabelsResponse,
        summary="Label names and their decision thresholds",
        responses=responses(400, 503),
    )
    async def labels() -> dict[str, Any]:
        return {"labels": label_names, "thresholds": dict(zip(label_names, map(float, thresholds)))}

    @app.get(
        "/health",
        response_model=HealthResponse,
        summary="Liveness, model, limits, batching and connection counters",
        responses=responses(400, 503),
    )
    async def health() -> dict[str, Any]:
        guard = app.state.connections
        counts = getattr(classifier, "long_text_counts", None)
        return {
            "status": "ok",
            "model": model_name,
            "labels": len(label_names),
            "backend": getattr(classifier, "backend", None),
            "device": getattr(classifier, "device", None),
            "precision": getattr(classifier, "precision", None),
            "threads": model_threads,
            "long_text": getattr(classifier, "long_text_rule", None),
            "long_texts": dict(counts) if isinstance(counts, dict) else None,
            "workers": workers,
            "pid": os.getpid(),
            "uptime_s": round(time.time() - started, 3),
            "limits": limits.to_dict(),
            "batching": {**batcher.stats.to_dict(), "queued": batcher.queued},
            "connections": guard.stats() if guard is not None else None,
        }

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def _cancelling() -> bool:
    """Whether the running task itself is being cancelled (not merely a future it awaited)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
