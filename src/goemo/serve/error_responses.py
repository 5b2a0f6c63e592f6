"""Every error as ``{"detail": "<one line>"}``: validation errors named by item, limits by option.

A script (or the web page) shows the line as it is; `install_error_handlers` makes FastAPI's
and Starlette's own errors answer the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException


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


def install_error_handlers(app: FastAPI) -> None:
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


def error_response(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """An error answered before the app sees the request; the connection is not reused."""
    return JSONResponse(
        {"detail": _clean(detail)}, status_code=status, headers={"Connection": "close", **(headers or {})}
    )
