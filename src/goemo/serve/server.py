"""`DrainingServer`: uvicorn's server, which answers the requests in flight before it stops.

Needs the ``serve`` extra (uvicorn); `goemo.serve` imports this module only when it serves.
"""

from __future__ import annotations

import asyncio
import socket

import uvicorn

from goemo.serve.connections import ConnectionGuard


class DrainingServer(uvicorn.Server):
    """``uvicorn.Server`` whose shutdown first drains the requests in flight.

    Uvicorn, told to stop, first closes its listening socket and every connection not in the
    middle of a request: a request still in the kernel's queues, or whose head is half read, is
    cut off unanswered (44 of 390 in flight under load). This runs the guard's drain
    (`goemo.serve.connections.ConnectionGuard.drain`) first, then uvicorn's shutdown within
    what is left of ``drain_timeout_s``. The guard is the one `goemo.serve.uvicorn_config` wraps the HTTP protocol with
    (``config.http.guard``); without one this is uvicorn's server unchanged.

        DrainingServer(uvicorn_config(app, limits)).run(sockets=[sock])
    """

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        guard = getattr(self.config.http, "guard", None)
        if not isinstance(guard, ConnectionGuard):
            await super().shutdown(sockets)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + guard.drain_timeout_s
        await guard.drain(abandon=lambda: self.force_exit)  # a second Ctrl-C stops waiting
        # what is left of the drain bounds uvicorn's own wait for answers still being written
        self.config.timeout_graceful_shutdown = max(1, round(deadline - loop.time()))
        await super().shutdown(sockets)
        await guard.lingered()  # the 503s of connections refused while draining are read before the exit
