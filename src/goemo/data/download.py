"""Fetch the official GoEmotions files, or a mirror or local copy of them, and prove they are intact.

Every file is checked against the sha256 of the official release before it is written, and
written atomically, so the data folder only ever holds complete, verified files: a run that
is interrupted, or a mirror serving a damaged file, leaves nothing half-right behind.
Only the standard library talks to the network (``urllib``), so no extra dependency is needed.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from tqdm.auto import tqdm

from goemo.core.errors import DownloadError
from goemo.core.fileio import atomic_write_bytes

logger = logging.getLogger(__name__)

OFFICIAL_BASE_URL = "https://raw.githubusercontent.com/google-research/google-research/master/goemotions/data/"

# sha256 of the files as published in google-research/goemotions/data. Small files come first
# so that a missing network shows up after one tiny request, not after a 3.5 MB one.
CHECKSUMS: dict[str, str] = {
    "emotions.txt": "45c3ef86782d2a4d7fedcd6d8c111aa0d0e94720689bd164fac94fefb4495a89",
    "ekman_mapping.json": "d6b1fea382917c1685c42e1324a0344106be9390f52a3850ce032656d103a328",
    "sentiment_dict.json": "801f6f028082141bd38541a4b14d65b33bdc55d29c7b2aaa029fefecf206f76b",
    "train.tsv": "1c254a142be5c00e80d819b9ae1bbd36d94b2eeb8f4b1271846508d57e57d9c5",
    "dev.tsv": "575489c079c9de1097062a01738f998590d6b7ead66dd1c9fd1d2ba01fd8bc62",
    "test.tsv": "0587b2dd8b27b97352adbfc3fb083d46005c8946657fdc2b1ca8b1cc7f1f8be4",
}
# Their sizes in bytes: a source may send at most this plus `SIZE_MARGIN`, so a mirror that
# streams an endless body (or a local path that is a device) cannot fill memory or the disk.
SIZES: dict[str, int] = {
    "emotions.txt": 248,
    "ekman_mapping.json": 396,
    "sentiment_dict.json": 367,
    "train.tsv": 3_519_053,
    "dev.tsv": 439_059,
    "test.tsv": 436_706,
}
# Room for a slightly different copy to reach the checksum check, whose message says more.
SIZE_MARGIN = 64 * 1024
FILES = tuple(CHECKSUMS)
DEFAULT_DEST = Path("data/goemotions")

OFFLINE_HINT = "without network, copy from a local folder or mirror: goemo download --from /path/to/goemotions"
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_PROGRESS_MIN_BYTES = 1 << 20


@dataclass
class DownloadResult:
    """What a download did: which files it fetched and which were already present and valid."""

    dest: Path
    fetched: list[Path] = field(default_factory=list)
    valid: list[Path] = field(default_factory=list)

    @property
    def paths(self) -> list[Path]:
        """Every file of the dataset at the destination, in `FILES` order."""
        return [self.dest / name for name in FILES]


class _Transient(Exception):
    """A failure worth retrying (server error, reset connection, timeout)."""


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in chunks so large files need little memory.

    sha256_file("data/goemotions/emotions.txt")
    # -> '45c3ef86782d2a4d7fedcd6d8c111aa0d0e94720689bd164fac94fefb4495a89'
    """
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def download(
    dest: str | Path = DEFAULT_DEST,
    source: str | Path | None = None,
    retries: int = 3,
    timeout: float = 30,
    *,
    backoff: float = 1.0,
) -> list[Path]:
    """Make ``dest`` hold the six verified GoEmotions files; return their paths.

    ``source`` is None for the official URL, another base URL (a mirror) or a local folder
    holding the files (for machines without network). Files already present with the right
    checksum are not fetched again, so calling this before every run costs nothing.
    Transient HTTP failures (5xx, reset connections, timeouts) are retried ``retries`` times,
    waiting ``backoff`` seconds, then twice as long, and so on.

        paths = download("data/goemotions")
        paths = download("data/goemotions", source="../shared/goemotions")
    """
    return fetch(dest, source, retries=retries, timeout=timeout, backoff=backoff).paths


def fetch(
    dest: str | Path = DEFAULT_DEST,
    source: str | Path | None = None,
    *,
    retries: int = 3,
    timeout: float = 30,
    backoff: float = 1.0,
) -> DownloadResult:
    """`download`, reporting which files were fetched and which were already valid (for the CLI).

    result = fetch("data/goemotions", source="../shared/goemotions")
    len(result.fetched) + len(result.valid)
    # -> 6
    """
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise DownloadError(f"destination {dest} exists and is not a folder")
    where, get = _opener(source, retries, timeout, backoff)
    result = DownloadResult(dest)
    for name, expected in CHECKSUMS.items():
        target = dest / name
        if _is_valid(target, expected):
            logger.debug("%s: already present and valid", target)
            result.valid.append(target)
            continue
        data = get(name)
        _verify(name, data, expected, where)
        _write(target, data)
        logger.info("fetched %s (%d bytes) from %s", name, len(data), where)
        result.fetched.append(target)
    return result


def _is_valid(target: Path, expected: str) -> bool:
    if not target.is_file():
        return False
    if sha256_file(target) == expected:
        return True
    logger.warning("%s: checksum does not match the official file; fetching it again", target)
    return False


def _verify(name: str, data: bytes, expected: str, where: str) -> None:
    got = hashlib.sha256(data).hexdigest()
    if got != expected:
        raise DownloadError(
            f"{name} from {where}: checksum mismatch: expected sha256 {expected}, got {got}; the file was not saved"
        )


def _write(target: Path, data: bytes) -> None:
    try:
        atomic_write_bytes(target, data)
    except OSError as e:
        raise DownloadError(f"cannot write {target}: {e.strerror or e}") from None


# ----------------------------------------------------------------------------- sources


def _opener(
    source: str | Path | None, retries: int, timeout: float, backoff: float
) -> tuple[str, Callable[[str], bytes]]:
    """``(description, function name -> bytes)`` for the official URL, a mirror URL or a folder."""
    if source is None or (isinstance(source, str) and _URL.match(source)):
        base = OFFICIAL_BASE_URL if source is None else str(source)
        base = base if base.endswith("/") else base + "/"
        return base, lambda name: _get_url(base + name, retries, timeout, backoff)
    folder = Path(source)
    if not folder.is_dir():
        raise DownloadError(
            f"--from {source}: no such folder (expected a folder holding {', '.join(FILES)}, or an http(s) URL)"
        )
    return str(folder), lambda name: _read_local(folder, name)


def _too_large(name: str, where: str, limit: int) -> DownloadError:
    return DownloadError(
        f"{where}: more than {limit:,} bytes for {name}, whose official file has {SIZES[name]:,} bytes; "
        "stopped reading, nothing was saved"
    )


def _limit(name: str) -> int:
    return SIZES[name] + SIZE_MARGIN


def _read_local(folder: Path, name: str) -> bytes:
    try:
        with open(folder / name, "rb") as f:  # read bounded: the path may be a huge file or a device
            data = f.read(_limit(name) + 1)
    except FileNotFoundError:
        raise DownloadError(f"{folder}: no {name} there (expected all of {', '.join(FILES)})") from None
    except OSError as e:
        raise DownloadError(f"cannot read {folder / name}: {e.strerror or e}") from None
    if len(data) > _limit(name):
        raise _too_large(name, str(folder / name), _limit(name))
    return data


def _get_url(url: str, retries: int, timeout: float, backoff: float) -> bytes:
    """Fetch ``url``, retrying transient failures with exponential backoff."""
    attempts = retries + 1
    for attempt in range(1, attempts + 1):
        try:
            return _get_once(url, timeout)
        except _Transient as e:
            if attempt == attempts:
                raise DownloadError(f"{url}: {e} (tried {attempts} times); {OFFLINE_HINT}") from None
            wait = backoff * 2 ** (attempt - 1)
            logger.warning("%s: %s; retrying in %.2g s (%d/%d)", url, e, wait, attempt, retries)
            time.sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover


def _get_once(url: str, timeout: float) -> bytes:
    """One request; sorts failures into retryable (`_Transient`) and final (`DownloadError`)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return _read_body(response, url.rsplit("/", 1)[-1], url)
    except urllib.error.HTTPError as e:
        if e.code >= 500 or e.code == 429:
            raise _Transient(f"HTTP {e.code} {e.reason}") from None
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}; check the URL, or {OFFLINE_HINT}") from None
    except urllib.error.URLError as e:
        if isinstance(e.reason, (ConnectionResetError, TimeoutError)):
            raise _Transient(str(e.reason) or type(e.reason).__name__) from None
        raise DownloadError(f"cannot reach {url} ({e.reason}); {OFFLINE_HINT}") from None
    except (ConnectionResetError, TimeoutError, http.client.HTTPException) as e:
        raise _Transient(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__) from None
    except OSError as e:
        raise DownloadError(f"cannot reach {url} ({e}); {OFFLINE_HINT}") from None


def _read_body(response: BinaryIO, name: str, url: str = "") -> bytes:
    """Read the whole body (with a progress bar for large files) and insist on its full length.

    Reading stops once the body passes the file's known size plus `SIZE_MARGIN`: a server
    that sends more (an endless stream, a wrong file) is refused, whatever its Content-Length.
    """
    limit = _limit(name) if name in SIZES else None
    length = response.headers.get("Content-Length")  # type: ignore[attr-defined]
    total = int(length) if length and length.isdigit() else None
    if limit is not None and total is not None and total > limit:
        raise _too_large(name, url or name, limit)
    quiet = total is None or total < _PROGRESS_MIN_BYTES
    chunks: list[bytes] = []
    size = 0
    with tqdm(total=total, desc=name, unit="B", unit_scale=True, leave=False, disable=True if quiet else None) as bar:
        while chunk := response.read(1 << 16):
            chunks.append(chunk)
            size += len(chunk)
            if limit is not None and size > limit:
                raise _too_large(name, url or name, limit)
            bar.update(len(chunk))
    data = b"".join(chunks)
    if total is not None and len(data) != total:
        raise http.client.IncompleteRead(data, total - len(data))
    return data
