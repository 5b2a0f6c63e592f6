"""The REST API and web page around an `EmotionClassifier`.

Routes: ``POST /predict``, ``GET /labels``, ``GET /health``, ``GET /`` (the web page, with
its files under ``/static``) and FastAPI's ``/docs`` and ``/openapi.json``.

Every request goes through one `MicroBatcher`, so texts from concurrent clients share a
model call. The model only gives probabilities; turning them into labels happens here,
per request, because requests merged into one batch may ask for different ``top_k`` or
``threshold``.

Every error answers ``{"detail": "<one line>"}`` (the schema's ``Error``) so that a script
(or the web page) can show it as it is:

- 400: a Host header that is not loopback or ``allowed_hosts`` (`HostCheck`, against DNS
  rebinding), a Content-Length that is not a number, a body the JSON parser cannot read;
- 408: a body not received within ``body_timeout_s`` (`BodyReadTimeout`);
- 413: a body over ``max_body_bytes`` (`BodySizeLimit`: from Content-Length, and while the
  body streams in);
- 422: a body that is not the expected JSON or breaks a limit, naming the item
  (``texts[3]: not valid Unicode text (lone surrogate at position 1)``); the limits are
  in the OpenAPI schema (``minItems``, ``maxItems``, ``maxLength``);
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
import ipaddress
import logging
import os
import time
from collections.abc import Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

import numpy as np

from goemo.core.errors import ConfigError, GoemoError

try:
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse, Response
    from fastapi.staticfiles import StaticFiles
    from pydantic import BaseModel, ConfigDict, Field, StringConstraints, create_model
    from starlette.datastructures import Headers
    from starlette.exceptions import HTTPException as StarletteHTTPException
except ImportError as e:  # pragma: no cover - depends on the installed extras
    raise GoemoError(f"serving needs the serve extra ({e.name} is missing): pip install 'goemo[serve]'") from None

from goemo.serve.batcher import MicroBatcher, QueueFullError
from goemo.serve.connections import quiet_resource_errors

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
RETRY_AFTER_S = 1  # what a 503 tells the client to wait


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
    """Per-request limits, batching, and connection settings; every limit answers with a message naming it.

    Per request: ``max_texts``, ``max_chars`` (per text), ``max_body_bytes``,
    ``body_timeout_s`` (the whole body must arrive within it: 408). Batching: ``max_batch``,
    ``max_wait_ms``, ``max_queue`` (texts waiting; 503 beyond). Connections (applied by
    `goemo.serve.run_server` and `background_server`, which run uvicorn):
    ``header_timeout_s`` (a request head must arrive within it), ``max_connections`` (open at
    once; None: from the open-file limit, see `goemo.serve.connections.resolve_connections`;
    JSON 503 beyond), ``limit_concurrency`` (uvicorn's own limit: a plain-text 503 beyond it;
    None: off), ``timeout_keep_alive_s`` (an idle connection is closed after it),
    ``backlog`` (connections the kernel queues before they are accepted, and how many are
    accepted at once; None: from the open-file limit). ``allowed_hosts``:
    Host names accepted besides loopback (``"*"``: any).

    >>> ServeLimits(max_texts=16).max_texts
    16
    """

    max_texts: int = 64
    max_chars: int = 2000
    max_body_bytes: int = 1_000_000
    max_batch: int = 64
    max_wait_ms: float = 5.0
    max_queue: int = 4096
    body_timeout_s: float = 10.0
    header_timeout_s: float = 10.0
    max_connections: int | None = None
    limit_concurrency: int | None = None
    timeout_keep_alive_s: int = 5
    backlog: int | None = None
    allowed_hosts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        positive = ["max_texts", "max_chars", "max_body_bytes", "max_batch", "max_queue"]
        optional = ["max_connections", "limit_concurrency", "backlog"]
        for name in positive + optional + ["timeout_keep_alive_s"]:
            value = getattr(self, name)
            if value is None and name in optional:
                continue
            low = 0 if name == "timeout_keep_alive_s" else 1
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                kind = "a non-negative" if low == 0 else "a positive"
                raise ConfigError(f"{name} must be {kind} integer, got {value!r}")
        if not 0 <= self.max_wait_ms <= 10_000:
            raise ConfigError(f"max_wait_ms must be between 0 and 10000, got {self.max_wait_ms!r}")
        for name in ("body_timeout_s", "header_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 3600:
                raise ConfigError(f"{name} must be between 0 and 3600 seconds (exclusive of 0), got {value!r}")
        hosts = (self.allowed_hosts,) if isinstance(self.allowed_hosts, str) else tuple(self.allowed_hosts)
        if not all(isinstance(h, str) and h.strip() for h in hosts):
            raise ConfigError(f"allowed_hosts must be non-empty host names, got {self.allowed_hosts!r}")
        object.__setattr__(self, "allowed_hosts", hosts)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------- request and response bodies


class PredictRequest(BaseModel):
    """Body of ``POST /predict``; unknown keys are refused so that a typo ("text") is not ignored.

    `create_app` serves a copy of it whose ``texts`` and ``top_k`` carry the app's limits, so
    that the OpenAPI schema states them.
    """

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


def request_model(limits: ServeLimits, num_labels: int) -> type[PredictRequest]:
    """`PredictRequest` with this server's limits in its schema: what is validated is what is documented."""
    text = Annotated[str, StringConstraints(max_length=limits.max_chars)]
    return create_model(
        "PredictRequest",
        __base__=PredictRequest,
        texts=(
            list[text],
            Field(
                min_length=1,
                max_length=limits.max_texts,
                description=f"Texts to classify, in order: 1 to {limits.max_texts}, "
                f"each at most {limits.max_chars} characters of valid Unicode.",
            ),
        ),
        top_k=(
            int | None,
            Field(
                None,
                ge=1,
                le=num_labels,
                description="Return the k most probable labels instead of those above threshold "
                "(at most the number of labels; with a taxonomy, a k above its number of groups gives them all).",
            ),
        ),
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


class HealthResponse(BaseModel):
    status: str
    model: str | None = Field(description="The model folder's name (never its path).")
    labels: int
    backend: str | None
    device: str | None
    precision: str | None
    threads: int | None = Field(description="CPU threads of the model, when known.")
    workers: int = Field(1, description="Server processes sharing the port (goemo serve --workers).")
    pid: int = Field(description="This worker's process id (with several workers, which one answered).")
    uptime_s: float
    limits: dict[str, Any]
    batching: dict[str, int | float]
    connections: dict[str, int | float] | None = Field(
        None, description="Open connections and refusals, when served by goemo's uvicorn set-up."
    )


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str | None


class Error(BaseModel):
    """Every error: one line to show as it is (and, for a body that did not validate, each problem)."""

    detail: str
    errors: list[FieldError] | None = Field(None, description="Each problem, for a body that did not validate.")


def _responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    what = {
        400: "Host header not allowed, Content-Length not a number, or a body the JSON parser cannot read.",
        408: "The request body did not arrive within the body timeout (--body-timeout).",
        413: "The body is larger than --max-body-bytes.",
        422: "The body is not the expected JSON, or a text or option is over a limit; `detail` names it.",
        503: "Server busy (the queue or the connection cap is full): retry after `Retry-After` seconds.",
    }
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        out[code] = {"model": Error, "description": what[code]}
        if code == 503:
            out[code]["headers"] = {
                "Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}
            }
    return out


# ---------------------------------------------------------------- errors


def _clean(text: str) -> str:
    """Text safe to put in a JSON answer: a lone surrogate (from a client's key) shown as ``\\ud800``."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _where(loc: Sequence[Any]) -> str:
    """``("body", "texts", 2)`` -> ``texts[2]``: the field as the client wrote it."""
    parts = [p for p in loc if p != "body"]
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return _clean(out) or "body"


def _is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";")[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def surrogate_position(text: str) -> int | None:
    """Index of the first lone surrogate in ``text`` (not valid Unicode: UTF-8 cannot encode it), or None.

    >>> surrogate_position("a\\ud800b"), surrogate_position("fine")
    (1, None)
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return e.start
    return None


def _limit_message(first: dict[str, Any]) -> str | None:
    """The server's own words for a limit the schema states (texts, characters, top_k), or None."""
    loc, kind, ctx = tuple(first.get("loc", ())), first.get("type"), first.get("ctx") or {}
    value = first.get("input")
    if loc == ("body", "texts") and kind == "too_short":
        return "texts is empty: send at least one text"
    if loc == ("body", "texts") and kind == "too_long":
        return (
            f"too many texts: {ctx.get('actual_length')} in one request; "
            f"the limit is {ctx.get('max_length')} (--max-texts)"
        )
    if len(loc) == 3 and loc[:2] == ("body", "texts") and isinstance(value, str):
        if kind == "string_too_long":
            return (
                f"texts[{loc[2]}] has {len(value):,} characters; the limit is {ctx.get('max_length'):,} (--max-chars)"
            )
        if kind == "string_unicode":
            return f"texts[{loc[2]}]: not valid Unicode text (lone surrogate at position {surrogate_position(value)})"
    if kind == "string_unicode":
        return f"{_where(loc)}: not valid Unicode text (a lone surrogate)"
    if loc == ("body", "top_k") and kind == "less_than_equal":
        return f"top_k is {value} but the model has {ctx.get('le')} labels"
    return None


def _validation_message(errors: Sequence[dict[str, Any]], content_type: str | None = "application/json") -> str:
    """One line for a request body that did not parse or validate."""
    first = errors[0]
    if content_type and not _is_json(content_type) and tuple(first.get("loc", ())) == ("body",):
        return f"Content-Type must be application/json, got {content_type[:60]}"
    if first.get("type") == "json_invalid":
        reason = str((first.get("ctx") or {}).get("error", "malformed JSON")).removesuffix(" at")
        pos = first["loc"][1] if len(first.get("loc", ())) > 1 else "?"
        return f"request body is not valid JSON: {reason} at character {pos}"
    if first.get("type") == "missing" and tuple(first.get("loc", ())) == ("body",):
        return 'request body is missing: send JSON like {"texts": ["I love it"]} with Content-Type: application/json'
    msg = _limit_message(first)
    if msg is None and (
        first.get("type") == "model_attributes_type"
        or (tuple(first.get("loc", ())) == ("body",) and first.get("type", "").endswith("_type"))
    ):
        return 'request body must be a JSON object like {"texts": ["I love it"]}'
    if msg is None:
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
                "detail": _clean(_validation_message(errors, request.headers.get("content-type"))),
                "errors": _jsonable_errors(errors),
            },
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            status_code=exc.status_code, content={"detail": _clean(str(exc.detail))}, headers=exc.headers
        )


def _jsonable_errors(errors: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pydantic's error list without the echoed input (it may be a megabyte of text)."""
    return [
        {
            "loc": [p if isinstance(p, int) else _clean(str(p)) for p in e.get("loc", ())],
            "msg": _clean(str(e.get("msg", ""))),
            "type": e.get("type"),
        }
        for e in errors
    ]


def _error(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """An error answered before the app sees the request; the connection is not reused."""
    return JSONResponse(
        {"detail": _clean(detail)}, status_code=status, headers={"Connection": "close", **(headers or {})}
    )


# ---------------------------------------------------------------- Host header (DNS rebinding)


def _host_name(value: str) -> str:
    """``"Example.COM.:8000"`` -> ``"example.com"``; ``"[::1]:80"`` -> ``"::1"``."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    if value.count(":") == 1:
        value = value.split(":")[0]
    return value.rstrip(".")


def is_loopback_host(name: str) -> bool:
    """``localhost``, ``*.localhost``, 127.0.0.0/8 or ``::1``.

    >>> is_loopback_host("localhost"), is_loopback_host("127.8.0.1"), is_loopback_host("evil.example")
    (True, True, False)
    """
    name = _host_name(name)
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class HostCheck:
    """ASGI middleware: 400 unless the Host header names loopback or one of ``allowed_hosts``.

    A web page on another site can make a browser send requests to 127.0.0.1 by pointing
    its own name at that address (DNS rebinding); such requests carry the page's name in
    Host, so refusing unknown names keeps other sites' pages away from the API.
    ``"*"`` in ``allowed_hosts`` accepts any Host.
    """

    def __init__(self, app: Any, allowed_hosts: Sequence[str] = ()) -> None:
        self.app = app
        self.any = "*" in allowed_hosts
        self.allowed = {_host_name(h) for h in allowed_hosts if h != "*"}

    def allows(self, host: str | None) -> bool:
        if self.any:
            return True
        if not host:
            return False
        return is_loopback_host(host) or _host_name(host) in self.allowed

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            host = Headers(scope=scope).get("host")
            if not self.allows(host):
                shown = "missing" if not host else repr(host[:80])
                detail = f"Host header {shown} is not allowed: use a loopback address, or start the server with --allowed-host NAME"
                await _error(400, detail)(scope, receive, send)
                return
        await self.app(scope, receive, send)


# ---------------------------------------------------------------- body size and time


class BodyTooLarge(StarletteHTTPException):
    """Raised from ``receive`` when the streamed body passes the limit; FastAPI re-raises it as a 413."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, _too_large_message(max_bytes), headers={"Connection": "close"})


def _too_large_message(max_bytes: int) -> str:
    return f"request body is larger than the limit of {max_bytes:,} bytes (--max-body-bytes)"


class BodyTimedOut(StarletteHTTPException):
    """Raised from ``receive`` when the body is not complete in time; answered 408, connection closed."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(408, _timeout_message(timeout_s), headers={"Connection": "close"})


def _timeout_message(timeout_s: float) -> str:
    return f"request body not received within {timeout_s:g} s (--body-timeout)"


async def _run_guarded(
    app: Any,
    scope: dict,
    receive: Any,
    send: Any,
    guarded_receive: Any,
    error: type[Exception],
    status: int,
    detail: str,
) -> None:
    """Run ``app`` with ``guarded_receive``; when it raises ``error`` before the response started, answer ``status``.

    The app's own HTTPException handler normally answers the error; this catches it when it
    escapes (raised outside a route, e.g. while Starlette reads the body for validation).
    """
    started = False

    async def tracking_send(message: dict) -> None:
        nonlocal started
        started = started or message["type"] == "http.response.start"
        await send(message)

    try:
        await app(scope, guarded_receive, tracking_send)
    except error:
        if started:
            raise
        await _error(status, detail)(scope, receive, send)


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

        async def limited_receive() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await _run_guarded(
            self.app, scope, receive, send, limited_receive, BodyTooLarge, 413, _too_large_message(self.max_bytes)
        )


class BodyReadTimeout:
    """ASGI middleware: 408 (and the connection closed) for a body not complete ``timeout_s`` after the head.

    A client that sends headers and then the body slowly, or not at all, would otherwise
    hold its connection (and a file descriptor) as long as it likes. The clock runs from the
    moment the request reaches the app; once the body is in, ``receive`` is passed through
    untouched (waiting for a disconnect has no deadline).
    """

    def __init__(self, app: Any, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        complete = False

        async def timed_receive() -> dict:
            nonlocal complete
            if complete:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise BodyTimedOut(self.timeout_s) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                complete = True
            return message

        await _run_guarded(
            self.app, scope, receive, send, timed_receive, BodyTimedOut, 408, _timeout_message(self.timeout_s)
        )


async def _disconnected(request: Request) -> None:
    """Return when the client has gone away (called once the body is read).

    After the body, ASGI's ``receive`` waits until the client disconnects; a server that
    answers otherwise is polled with `Request.is_disconnected` instead.
    """
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
        while not await request.is_disconnected():
            await asyncio.sleep(0.2)
        return


# ---------------------------------------------------------------- the app


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

    >>> from goemo import EmotionClassifier                                    # doctest: +SKIP
    >>> app = create_app(EmotionClassifier.load("runs/x/best"), ServeLimits(max_texts=16))  # doctest: +SKIP
    >>> import uvicorn; uvicorn.run(app, host="127.0.0.1", port=8000)          # doctest: +SKIP
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
    )
    started = time.time()
    body_model = request_model(limits, len(label_names))

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
    _install_error_handlers(app)

    async def predict(body: PredictRequest, request: Request) -> Any:
        """Probabilities of every label and the selected labels, per text, in input order."""
        texts = body.texts
        try:
            names = classifier.label_names_for(body.taxonomy) if body.taxonomy else label_names
        except GoemoError as e:  # e.g. sentiment asked of a model trained on Ekman groups
            raise HTTPException(422, f"taxonomy: {e}") from None
        top_k = body.top_k if body.top_k is None else min(body.top_k, len(names))  # groups: fewer than labels
        try:
            future = batcher.enqueue(texts)
        except QueueFullError as e:
            raise HTTPException(503, f"server busy: {e}", headers={"Retry-After": str(RETRY_AFTER_S)}) from None
        watcher = asyncio.ensure_future(_disconnected(request))
        try:
            await asyncio.wait((future, watcher), return_when=asyncio.FIRST_COMPLETED)
            if not future.done() and watcher.exception() is None:
                future.cancel()  # the client has gone: its texts leave the queue uncomputed
                return Response(status_code=499)  # nobody reads it
            probs = await future
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
            watcher.cancel()
            if not future.done():
                future.cancel()
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
        responses=_responses(400, 408, 413, 422, 503),
    )(predict)

    @app.get(
        "/labels",
        response_model=LabelsResponse,
        summary="Label names and their decision thresholds",
        responses=_responses(400, 503),
    )
    async def labels() -> dict[str, Any]:
        return {"labels": label_names, "thresholds": dict(zip(label_names, map(float, thresholds)))}

    @app.get(
        "/health",
        response_model=HealthResponse,
        summary="Liveness, model, limits, batching and connection counters",
        responses=_responses(400, 503),
    )
    async def health() -> dict[str, Any]:
        guard = app.state.connections
        return {
            "status": "ok",
            "model": model_name,
            "labels": len(label_names),
            "backend": getattr(classifier, "backend", None),
            "device": getattr(classifier, "device", None),
            "precision": getattr(classifier, "precision", None),
            "threads": model_threads,
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
