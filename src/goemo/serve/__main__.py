"""One worker of ``goemo serve --workers N``: ``python -m goemo.serve``, started by `goemo.serve.workers`.

Not a command for people: it reads its settings (`goemo.serve.WorkerSpec`, JSON) and the
inherited listening socket's descriptor from the environment, which `run_workers` sets, and
serves until SIGTERM. Errors are one log line and exit status 1, as the CLI's are.
"""

from __future__ import annotations

import logging
import os
import socket
import sys

from goemo.core.errors import GoemoError
from goemo.serve import WorkerSpec, serve_on
from goemo.serve.workers import FD_ENV, SPEC_ENV


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", force=True)
    spec_text, fd = os.environ.get(SPEC_ENV), os.environ.get(FD_ENV)
    if not spec_text or not fd:
        print(
            f"goemo: error: this is a worker of goemo serve --workers ({SPEC_ENV} and {FD_ENV} unset)", file=sys.stderr
        )
        return 2
    sock = socket.socket(fileno=int(fd))
    try:
        serve_on(sock, WorkerSpec.from_json(spec_text))
    except GoemoError as e:
        print(f"goemo: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C reaches every worker; while the model loads, uvicorn is not there to take it
        return 130
    finally:
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
