"""The REST API and web page around an `EmotionClassifier`.

Routes: ``POST /predict``, ``GET /labels``, ``GET /health``, ``GET /`` (the web page, with
its files under ``/static``) and FastAPI's ``/docs`` and ``/openapi.json``.

Every request goes through one `MicroBatcher`, so texts from concurrent clients share a
model call. The model only gives probabilities; turning them into labels happens here,
per request, because requests merged into one batch may ask for different ``top_k`` or
``threshold``.

Every error answers ``{"detail": "<one line>"}`` so that a script (or the web page) can show
it as it is: 413 for a body over ``max_body_bytes`` (`BodySizeLimit`: from
Content-Length, and while the body streams in), 422 for a body that is not
the expected JSON or breaks a limit, 503 when the queue is full, 500 when the model fails.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from goemo.core.errors import ConfigError, GoemoError

try:
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse
    from fastapi.staticfiles import StaticFiles
    from pydantic import BaseModel, ConfigDict, Field
    from starlette.datastructures import Headers
    from starlette.exceptions import HTTPException as StarletteHTTPException
except ImportError as e:  # pragma: no cover - depends on the installed extras
    raise GoemoError(f"serving needs the serve extra ({e.name} is missing): pip install 'goemo[serve]'") from None

from goemo.serve.batcher import MicroBatcher, QueueFullError

log = logging.getLogger(__name__)

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


@dataclass(frozen=True)
class ServeLimits:
    """Per-request limits and batching settings; every limit answers with a message naming it.

    >>> ServeLimits(max_texts=16).max_texts
    16
    """

    max_texts: int = 64
    max_chars: int = 2000
    max_body_bytes: int = 1_000_000
    max_batch: int = 64
    max_wait_ms: float = 5.0
    max_queue: int = 4096

    def __post_init__(self) -> None:
        for name in ("max_texts", "max_chars", "max_body_bytes", "max_batch", "max_queue"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if not 0 <= self.max_wait_ms <= 10_000:
            raise ConfigError(f"max_wait_ms must be between 0 and 10000, got {self.max_wait_ms!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------- request and response bodies


class PredictRequest(BaseModel):
    """Body of ``POST /predict``; unknown keys are refused so that a typo ("text") is not ignored."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"texts": ["Thank you so much!", "Why would you do that?"], "top_k": 3}]},
    )

    texts: list[str] = Field(description="Texts to classify, in order.")
    top_k: int | None = Field(
        None, ge=1, description="Return the k most probable labels instead of those above threshold."
    )
    threshold: float | None = Field(
        None, ge=0.0, le=1.0, description="One threshold for every label instead of the model's tuned ones."
    )
    taxonomy: Literal["goemotions", "ekman", "sentiment"] | None = Field(
        None, description="Name the emotions by group: a group's score is its members' highest probability."
    )


class LabelScore(BaseModel):
    label: str
    score: float


class TextResult(BaseModel):
    labels: list[LabelScore] = Field(description="Selected labels, most probable first.")
    scores: dict[str, float] = Field(description="Probability of every label (or group), in label order.")


class PredictResponse(BaseModel):
    results: list[TextResult]


class LabelsResponse(BaseModel):
    labels: list[str]
    thresholds: dict[str, float]


# ---------------------------------------------------------------- errors


def _where(loc: Sequence[Any]) -> str:
    """``("body", "texts", 2)`` -> ``texts[2]``: the field as the client wrote it."""
    parts = [p for p in loc if p != "body"]
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "body"


def _is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";")[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def _validation_message(errors: Sequence[dict[str, Any]], content_type: str | None = "application/json") -> str:
    """One line for a request body that did not parse or validate."""
    first = errors[0]
    if content_type and not _is_json(content_type) and tuple(first.get("loc", ())) == ("body",):
        return f"Content-Type must be application/json, got {content_type[:60]}"
    if first.get("type") == "json_invalid":
        reason = (first.get("ctx") or {}).get("error", "malformed JSON")
        pos = first["loc"][1] if len(first.get("loc", ())) > 1 else "?"
        return f"request body is not valid JSON: {reason} at character {pos}"
    if first.get("type") == "missing" and tuple(first.get("loc", ())) == ("body",):
        return 'request body is missing: send JSON like {"texts": ["I love it"]} with Content-Type: application/json'
    if first.get("type") == "model_attributes_type" or (
        tuple(first.get("loc", ())) == ("body",) and first.get("type", "").endswith("_type")
    ):
        return 'request body must be a JSON object like {"texts": ["I love it"]}'
    msg = f"{_where(first.get('loc', ()))}: {first.get('msg', 'invalid value')}"
    if len(errors) > 1:
        msg += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return msg


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        return JSONResponse(
            status_code=422,
            content={
                "detail": _validation_message(errors, request.headers.get("content-type")),
                "errors": _jsonable_errors(errors),
            },
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail
        return JSONResponse(status_code=exc.status_code, content={"detail": detail}, headers=exc.headers)


def _jsonable_errors(errors: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pydantic's error list without the echoed input (it may be a megabyte of text)."""
    return [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type")} for e in errors]


# ---------------------------------------------------------------- body size


class BodyTooLarge(StarletteHTTPException):
    """Raised from ``receive`` when the streamed body passes the limit; FastAPI re-raises it as a 413."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, _too_large_message(max_bytes), headers={"Connection": "close"})


def _too_large_message(max_bytes: int) -> str:
    return f"request body is larger than the limit of {max_bytes:,} bytes (--max-body-bytes)"


class BodySizeLimit:
    """ASGI middleware: 413 for a body over ``max_bytes``, however it is sent.

    A declared Content-Length over the limit is refused before a byte of the body is read;
    a body without one (chunked) is counted as it arrives and refused the moment it passes
    the limit, so a client cannot make the server buffer more than ``max_bytes``.

    Starlette's own ``max_body_size`` enforces the same limit, but its answer is always the
    plain text "Content Too Large" (it replaces whatever the app sends), and a client should
    learn which limit it hit and how large it is.
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                await _error(400, f"Content-Length is not a number: {declared[:40]!r}")(scope, receive, send)
                return
            if size > self.max_bytes:
                await _error(413, _too_large_message(self.max_bytes))(scope, receive, send)
                return
        received = 0
        started = False

        async def limited_receive() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:  # normally answered inside by the HTTPException handler
            if started:
                raise
            await _error(413, _too_large_message(self.max_bytes))(scope, receive, send)


def _error(status: int, detail: str) -> JSONResponse:
    """An error answered before the app sees the request; the connection is not reused."""
    return JSONResponse({"detail": detail}, status_code=status, headers={"Connection": "close"})


# ---------------------------------------------------------------- the app


def create_app(
    classifier: Classifier,
    limits: ServeLimits | None = None,
    *,
    model_name: str | None = None,
) -> FastAPI:
    """The FastAPI application serving ``classifier``; run it with any ASGI server.

    >>> from goemo import EmotionClassifier                                    # doctest: +SKIP
    >>> app = create_app(EmotionClassifier.load("runs/x/best"), ServeLimits(max_texts=16))  # doctest: +SKIP
    >>> import uvicorn; uvicorn.run(app, host="127.0.0.1", port=8000)          # doctest: +SKIP
    """
    limits = limits or ServeLimits()
    path = getattr(classifier, "path", None)
    if model_name is None and path is not None:
        model_name = str(path)
    label_names = list(classifier.label_names)
    thresholds = np.asarray(classifier.thresholds, dtype=np.float64)
    if thresholds.shape != (len(label_names),):
        raise ConfigError(f"classifier has {len(label_names)} labels but {thresholds.shape} thresholds")
    batcher = MicroBatcher(
        classifier.predict_proba,
        max_batch=limits.max_batch,
        max_wait_ms=limits.max_wait_ms,
        max_queue=limits.max_queue,
    )
    started = time.time()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()
            batcher.close()

    app = FastAPI(
        title="goemo",
        summary="Multi-label emotion classification of text (GoEmotions labels).",
        version=__import__("goemo").__version__,
        lifespan=lifespan,
    )
    app.add_middleware(BodySizeLimit, max_bytes=limits.max_body_bytes)
    app.state.batcher = batcher
    app.state.limits = limits
    _install_error_handlers(app)

    @app.post("/predict", response_model=PredictResponse, summary="Emotions of one or more texts")
    async def predict(body: PredictRequest) -> dict[str, Any]:
        """Probabilities of every label and the selected labels, per text, in input order."""
        texts = body.texts
        if not texts:
            raise HTTPException(422, "texts is empty: send at least one text")
        if len(texts) > limits.max_texts:
            raise HTTPException(
                422, f"too many texts: {len(texts)} in one request; the limit is {limits.max_texts} (--max-texts)"
            )
        for i, text in enumerate(texts):
            if len(text) > limits.max_chars:
                raise HTTPException(
                    422,
                    f"texts[{i}] has {len(text):,} characters; the limit is {limits.max_chars:,} (--max-chars)",
                )
        try:
            names = classifier.label_names_for(body.taxonomy) if body.taxonomy else label_names
        except GoemoError as e:  # e.g. sentiment asked of a model trained on Ekman groups
            raise HTTPException(422, f"taxonomy: {e}") from None
        if body.top_k is not None and body.top_k > len(names):
            raise HTTPException(422, f"top_k is {body.top_k} but the model has {len(names)} labels")
        try:
            probs = await batcher.submit(texts)
        except QueueFullError as e:
            raise HTTPException(503, f"server busy: {e}", headers={"Retry-After": "1"}) from None
        except Exception as e:  # the batcher already logged the traceback
            raise HTTPException(500, f"model failed: {type(e).__name__}: {e}") from None
        # Labels are chosen per request: requests sharing a batch may ask for different options.
        chosen = classifier.predict_from_proba(
            probs, top_k=body.top_k, threshold=body.threshold, taxonomy=body.taxonomy
        )
        scores = classifier.decide(probs, taxonomy=body.taxonomy)[1] if body.taxonomy else probs
        return {
            "results": [
                {"labels": labels, "scores": dict(zip(names, map(float, row)))} for labels, row in zip(chosen, scores)
            ]
        }

    @app.get("/labels", response_model=LabelsResponse, summary="Label names and their decision thresholds")
    async def labels() -> dict[str, Any]:
        return {"labels": label_names, "thresholds": dict(zip(label_names, map(float, thresholds)))}

    @app.get("/health", summary="Liveness, model, limits and batching counters")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "model": model_name,
            "labels": len(label_names),
            "backend": getattr(classifier, "backend", None),
            "device": getattr(classifier, "device", None),
            "precision": getattr(classifier, "precision", None),
            "uptime_s": round(time.time() - started, 3),
            "limits": limits.to_dict(),
            "batching": batcher.stats.to_dict(),
        }

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
