"""ASGI middlewares that guard every request before the app sees it: its Host, its body's framing, size and time.

- `HostCheck`: 400 for a Host header that is not loopback or allowed (against DNS rebinding);
- `BodySizeLimit`: 400 (connection closed) for a body framed both by Content-Length and
  Transfer-Encoding; 413 for a body over the limit, from Content-Length and while it streams in;
- `BodyReadTimeout`: 408 for a body not received in time, in any ASGI server.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from typing import Any

from fastapi import Request
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import Message, Receive, Scope, Send

from goemo.serve.error_responses import error_response

# Host names Starlette's TrustedHostMiddleware accepts besides ``allowed_hosts``: loopback ones
# (with the trailing dot of a fully qualified name). The rest of 127.0.0.0/8 is `_LOOPBACK_IPV4`.
LOOPBACK_HOSTS = ("localhost", "*.localhost", "localhost.", "*.localhost.", "127.0.0.1", "[::1]")
# A whole Host header that is an IPv4 address in 127.0.0.0/8, with an optional port, and nothing else:
# a range, which Starlette's patterns (a name, or "*." and a suffix) cannot state.
_LOOPBACK_IPV4 = re.compile(r"127(?:\.(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}(?::[0-9]{1,5})?")


class _Withheld:
    """The ``send`` handed to Starlette's middleware: its own plain-text refusal is withheld, for goemo's JSON one.

    The app behind the middleware (`HostCheck._admitted`) takes the real ``send`` back out.
    """

    def __init__(self, send: Send) -> None:
        self.send = send
        self.refused = False

    async def __call__(self, message: Message) -> None:
        self.refused = True


class HostCheck:
    """ASGI middleware: 400 unless the Host header names loopback or one of ``allowed_hosts``.

    A web page on another site can make a browser send requests to 127.0.0.1 by pointing
    its own name at that address (DNS rebinding); such requests carry the page's name in
    Host, so refusing unknown names keeps other sites' pages away from the API.

    The check is Starlette's `TrustedHostMiddleware` (which parses the header strictly: a
    value such as ``127.0.0.1:80@evil.example`` is no host at all), given `LOOPBACK_HOSTS`
    and ``allowed_hosts`` (names, ``*.example.com`` for every subdomain, ``*`` for any).
    Two things are goemo's own: any address in 127.0.0.0/8 is loopback too (a range
    Starlette's patterns cannot state, matched by a strict pattern of the whole header),
    and the refusal is goemo's JSON ``{"detail": ...}``, not Starlette's plain text.
    """

    def __init__(self, app: Any, allowed_hosts: Sequence[str] = ()) -> None:
        self.app = app
        self.trusted = TrustedHostMiddleware(
            self._admitted, allowed_hosts=[*LOOPBACK_HOSTS, *allowed_hosts], www_redirect=False
        )

    async def _admitted(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send.send if isinstance(send, _Withheld) else send)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = Headers(scope=scope).get("host")
        if host is not None and _LOOPBACK_IPV4.fullmatch(host):
            await self.app(scope, receive, send)
            return
        withheld = _Withheld(send)
        await self.trusted(scope, receive, withheld)
        if withheld.refused:
            shown = "missing" if not host else repr(host[:80])
            detail = f"Host header {shown} is not allowed: use a loopback address, or start the server with --allowed-host NAME"
            await error_response(400, detail)(scope, receive, send)


class BodyTooLarge(StarletteHTTPException):
    """Raised from ``receive`` when the streamed body passes the limit; FastAPI re-raises it as a 413."""

    def __init__(self, max_bytes: int) -> None:
        detail = f"request body is larger than the limit of {max_bytes:,} bytes (--max-body-bytes)"
        super().__init__(413, detail, headers={"Connection": "close"})


_TWICE_FRAMED = (
    "request has both Content-Length and Transfer-Encoding: its body's length is ambiguous "
    "(RFC 9112 section 6.1); send one of them"
)


class BodyTimedOut(StarletteHTTPException):
    """Raised from ``receive`` when the body is not complete in time; answered 408, connection closed."""

    def __init__(self, timeout_s: float) -> None:
        detail = f"request body not received within {timeout_s:g} s (--body-timeout)"
        super().__init__(408, detail, headers={"Connection": "close"})


async def _run_guarded(
    app: Any, scope: dict, receive: Any, send: Any, guarded_receive: Any, error: type[StarletteHTTPException]
) -> None:
    """Run ``app`` with ``guarded_receive``; when it raises ``error`` before the response started, answer it.

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
    except error as e:
        if started:
            raise
        await error_response(e.status_code, e.detail)(scope, receive, send)


class BodySizeLimit:
    """ASGI middleware: 413 for a body over ``max_bytes``, however it is sent; 400 for a body framed twice.

    A declared Content-Length over the limit is refused before a byte of the body is read;
    a body without one (chunked) is counted as it arrives and refused the moment it passes
    the limit, so a client cannot make the server buffer more than ``max_bytes``.

    A request with both Content-Length and Transfer-Encoding is refused and its connection
    closed (RFC 9112 section 6.1): a proxy in front may read the body by the other header, and
    the bytes they disagree about would otherwise be read here as a second request (request
    smuggling). The HTTP parser (h11) reads such a body by Transfer-Encoding and lets the
    connection live on, so the refusal is here, where any ASGI server's requests pass.

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
        headers = Headers(scope=scope)
        declared = headers.get("content-length")
        if declared is not None and "transfer-encoding" in headers:
            await error_response(400, _TWICE_FRAMED)(scope, receive, send)  # Connection: close
            return
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                await error_response(400, f"Content-Length is not a number: {declared[:40]!r}")(scope, receive, send)
                return
            if size > self.max_bytes:
                await error_response(413, BodyTooLarge(self.max_bytes).detail)(scope, receive, send)
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

        await _run_guarded(self.app, scope, receive, send, limited_receive, BodyTooLarge)


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

        await _run_guarded(self.app, scope, receive, send, timed_receive, BodyTimedOut)


async def disconnected(request: Request) -> None:
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
