"""`ServeLimits`: every size, wait and connection setting of the server, checked once.

Kept apart from the app so that the command line and the process manager (`goemo.serve`)
can build and check them without importing FastAPI.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from goemo.core.errors import ConfigError

RETRY_AFTER_S = 1  # what a 503 tells the client to wait
# An allowed Host: "*", a name or IPv4 address ("*." before it: every subdomain), or an IPv6 address in brackets;
# no port or scheme (Starlette's TrustedHostMiddleware compares the name alone).
_HOST_PATTERN = re.compile(r"\*|(?:\*\.)?[a-z0-9_~-]+(?:\.[a-z0-9_~-]+)*\.?|\[[0-9a-f:.]+\]", re.IGNORECASE)


@dataclass(frozen=True)
class ServeLimits:
    """Per-request limits, batching, and connection settings; every limit answers with a message naming it.

    Per request: ``max_texts``, ``max_chars`` (per text), ``max_tokens`` (all its texts together,
    as the model's tokenizer counts them, special tokens included: a long text is scored whole,
    in pieces, so its cost grows with its length), ``max_body_bytes``, ``body_timeout_s`` (the
    whole body must arrive within it: 408). Batching: ``max_batch`` (texts per model call; a call
    also holds at most ``max_tokens`` tokens, the requests that would go over it waiting for the
    next call: the work of one call, and so any request's wait, stays bounded), ``max_wait_ms``, ``max_queue`` (texts waiting; 503
    beyond). Connections (applied by
    `goemo.serve.run_server` and `background_server`, which run uvicorn):
    ``header_timeout_s`` (a request head must arrive within it), ``max_connections`` (open at
    once; None: from the open-file limit, see `goemo.serve.connections.resolve_connections`;
    JSON 503 beyond), ``limit_concurrency`` (uvicorn's own limit: a plain-text 503 beyond it;
    None: off), ``timeout_keep_alive_s`` (an idle connection is closed after it),
    ``backlog`` (connections the kernel queues before they are accepted, and how many are
    accepted at once; None: from the open-file limit), ``drain_timeout_s`` (on SIGTERM or
    Ctrl-C, how long requests already in may take to be answered before the server stops).
    ``allowed_hosts``: Host names accepted besides loopback, without a port
    (``"*.example.com"``: its subdomains; ``"*"``: any).

    >>> ServeLimits(max_texts=16).max_texts
    16
    """

    max_texts: int = 64
    max_chars: int = 10_000
    max_tokens: int = 8192
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
    drain_timeout_s: float = 10.0
    allowed_hosts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        positive = ["max_texts", "max_chars", "max_tokens", "max_body_bytes", "max_batch", "max_queue"]
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
        for name in ("body_timeout_s", "header_timeout_s", "drain_timeout_s"):
            value = getattr(self, name)
            low_ok = name == "drain_timeout_s"  # 0: stop without waiting
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not (0 <= value <= 3600 if low_ok else 0 < value <= 3600)
            ):
                exclusive = "" if low_ok else " (exclusive of 0)"
                raise ConfigError(f"{name} must be between 0 and 3600 seconds{exclusive}, got {value!r}")
        hosts = (self.allowed_hosts,) if isinstance(self.allowed_hosts, str) else tuple(self.allowed_hosts)
        for h in hosts:
            if not isinstance(h, str) or not _HOST_PATTERN.fullmatch(h):
                raise ConfigError(
                    f"allowed_hosts: {h!r} is not a host name: give a name or address without a port or scheme "
                    "('mybox', '192.168.1.20', '[fe80::1]'), '*.example.com' for its subdomains, or '*' for any"
                )
        object.__setattr__(self, "allowed_hosts", hosts)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
