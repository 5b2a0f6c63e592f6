"""Download: checksums, skipping, retries and the offline message, against a local HTTP server."""

from __future__ import annotations

import hashlib
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from goemo.core.errors import DownloadError
from goemo.data import download as dl

FAST = {"retries": 2, "timeout": 5, "backoff": 0.001}


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass


@contextmanager
def serve(folder: Path, handler: type[SimpleHTTPRequestHandler] = QuietHandler) -> Iterator[str]:
    """Serve ``folder`` on 127.0.0.1 at an ephemeral port; yield the base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def failing_once(fail: str, target: str = "/dev.tsv") -> tuple[type[SimpleHTTPRequestHandler], list[str]]:
    """A handler that fails the first request of ``target`` the way ``fail`` names; logs every request."""
    seen: list[str] = []

    class Handler(QuietHandler):
        def do_GET(self) -> None:
            first = self.path not in seen
            seen.append(self.path)
            if fail == "none" or not first or self.path != target:
                return super().do_GET()
            if fail in ("500", "503"):
                self.send_error(int(fail), "server trouble")
            elif fail == "truncate":  # promise more bytes than sent, then hang up
                self.send_response(200)
                self.send_header("Content-Length", "100000")
                self.end_headers()
                self.wfile.write(b"partial")
                self.close_connection = True
            elif fail == "reset":  # hang up without any response
                self.close_connection = True
            elif fail == "slow":  # answer after the client has given up
                time.sleep(0.5)
                try:
                    self.send_error(504, "too late")
                except (BrokenPipeError, ConnectionResetError):  # expected: the client has gone
                    pass

    return Handler, seen


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests to 127.0.0.1 must not go through a proxy configured on the test machine."""
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


def test_checksums_in_the_module_match_the_official_list(shared_data: Path) -> None:
    official = dict(line.split()[::-1] for line in (shared_data / "SHA256SUMS").read_text().splitlines() if line)
    assert dl.CHECKSUMS == official
    assert dl.OFFICIAL_BASE_URL.startswith("https://raw.githubusercontent.com/google-research/google-research/")


def test_full_download_then_second_run_skips(shared_data: Path, tmp_path: Path) -> None:
    dest = tmp_path / "data"
    handler, seen = failing_once("none")
    with serve(shared_data, handler) as url:
        first = dl.fetch(dest, url, **FAST)
        requests_after_first = len(seen)
        second = dl.fetch(dest, url, **FAST)
    assert [p.name for p in first.fetched] == list(dl.FILES) and first.valid == []
    for name in dl.FILES:
        assert (dest / name).read_bytes() == (shared_data / name).read_bytes()
    assert second.fetched == [] and len(second.valid) == 6
    assert len(seen) == requests_after_first == 6  # the second run asked the server nothing
    assert sorted(p.name for p in dest.iterdir()) == sorted(dl.FILES)  # no temporary files left


def test_download_returns_paths_and_refetches_a_damaged_local_file(shared_data: Path, tmp_path: Path) -> None:
    paths = dl.download(tmp_path, str(shared_data), **FAST)
    assert paths == [tmp_path / name for name in dl.FILES]
    (tmp_path / "dev.tsv").write_text("damaged")
    again = dl.fetch(tmp_path, shared_data, **FAST)
    assert [p.name for p in again.fetched] == ["dev.tsv"]
    assert dl.sha256_file(tmp_path / "dev.tsv") == dl.CHECKSUMS["dev.tsv"]


def test_corrupted_file_is_rejected_and_not_saved(shared_data: Path, tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    shutil.copytree(shared_data, mirror)
    (mirror / "dev.tsv").chmod(0o644)
    with open(mirror / "dev.tsv", "ab") as f:
        f.write(b"tampered\t0\tx\n")
    got = hashlib.sha256((mirror / "dev.tsv").read_bytes()).hexdigest()
    dest = tmp_path / "dest"
    with serve(mirror) as url, pytest.raises(DownloadError) as info:
        dl.fetch(dest, url, **FAST)
    message = str(info.value)
    assert "dev.tsv" in message and dl.CHECKSUMS["dev.tsv"] in message and got in message
    assert not (dest / "dev.tsv").exists()
    assert not (dest / "test.tsv").exists()  # stopped at the first bad file
    assert all(not p.name.startswith(".") for p in dest.iterdir())  # no temporary leftovers


@pytest.mark.parametrize("fail", ["500", "503", "truncate", "reset", "slow"])
def test_transient_failure_is_retried(shared_data: Path, tmp_path: Path, fail: str) -> None:
    handler, seen = failing_once(fail, target="/dev.tsv")
    with serve(shared_data, handler) as url:
        result = dl.fetch(tmp_path, url, retries=1, timeout=0.25, backoff=0.001)
    assert len(result.fetched) == 6
    assert seen.count("/dev.tsv") == 2 and len(seen) == 7  # dev.tsv failed once, then came
    assert dl.sha256_file(tmp_path / "dev.tsv") == dl.CHECKSUMS["dev.tsv"]


def test_without_retries_a_transient_failure_is_final(shared_data: Path, tmp_path: Path) -> None:
    handler, seen = failing_once("503", target="/emotions.txt")
    with serve(shared_data, handler) as url:
        with pytest.raises(DownloadError, match=r"emotions.txt: HTTP 503.*tried 1 times"):
            dl.fetch(tmp_path, url, retries=0, timeout=5)
    assert seen == ["/emotions.txt"]


def test_retries_are_bounded(shared_data: Path, tmp_path: Path) -> None:
    seen: list[str] = []

    class AlwaysBusy(QuietHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            self.send_error(503, "busy")

    with serve(shared_data, AlwaysBusy) as url, pytest.raises(DownloadError, match=r"HTTP 503.*tried 3 times.*--from"):
        dl.fetch(tmp_path, url, **FAST)
    assert len(seen) == 3


def test_client_error_is_not_retried(tmp_path: Path) -> None:
    handler, seen = failing_once("none")
    with serve(tmp_path / "nothing-here", handler) as url, pytest.raises(DownloadError, match="HTTP 404"):
        dl.fetch(tmp_path / "dest", url, **FAST)
    assert len(seen) == 1


def test_local_folder_source(shared_data: Path, tmp_path: Path) -> None:
    result = dl.fetch(tmp_path, shared_data)
    assert len(result.fetched) == 6
    assert (tmp_path / "train.tsv").read_bytes() == (shared_data / "train.tsv").read_bytes()


def test_local_folder_missing_a_file(shared_data: Path, tmp_path: Path) -> None:
    partial_copy = tmp_path / "partial"
    partial_copy.mkdir()
    shutil.copy(shared_data / "emotions.txt", partial_copy)
    with pytest.raises(DownloadError, match="no ekman_mapping.json there"):
        dl.fetch(tmp_path / "dest", partial_copy)
    with pytest.raises(DownloadError, match="no such folder"):
        dl.fetch(tmp_path / "dest", tmp_path / "absent")


def test_unreachable_url_says_how_to_use_from(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError) as info:
        dl.fetch(tmp_path / "dest", f"http://127.0.0.1:{port}/", **FAST)
    message = str(info.value)
    assert "--from" in message and f"127.0.0.1:{port}" in message
    assert "\n" not in message
    assert not (tmp_path / "dest").exists()


# ----------------------------------------------------------------------------- bounded downloads


def test_sizes_in_the_module_match_the_official_files(shared_data: Path) -> None:
    assert dl.SIZES == {name: (shared_data / name).stat().st_size for name in dl.FILES}


def endless(
    content_length: str | None = None, cap: int = 64 * 2**20
) -> tuple[type[SimpleHTTPRequestHandler], list[int]]:
    """A mirror whose emotions.txt never ends: it streams zeros until the client hangs up (or ``cap`` bytes)."""
    sent = [0]

    class Handler(QuietHandler):
        def do_GET(self) -> None:
            if self.path != "/emotions.txt":
                return super().do_GET()
            self.send_response(200)
            if content_length is not None:
                self.send_header("Content-Length", content_length)
            self.end_headers()
            chunk = b"\0" * 65536
            try:
                while sent[0] < cap:  # the test's own bound, so a regression fails instead of hanging
                    self.wfile.write(chunk)
                    sent[0] += len(chunk)
            except (BrokenPipeError, ConnectionResetError):  # expected: the client stopped reading
                pass
            self.close_connection = True

    return Handler, sent


@pytest.mark.parametrize(
    ("content_length", "problem"),
    [
        (None, "whose official file has 248 bytes; stopped reading, nothing was saved"),
        (str(10**12), "whose official file has 248 bytes; stopped reading, nothing was saved"),
        ("248", "checksum mismatch"),  # http.client itself reads no more than Content-Length
    ],
)
def test_an_endless_body_is_refused_at_the_expected_size(
    shared_data: Path, tmp_path: Path, content_length: str | None, problem: str
) -> None:
    handler, sent = endless(content_length)
    dest = tmp_path / "dest"
    with serve(shared_data, handler) as url, pytest.raises(DownloadError) as info:
        dl.fetch(dest, url, **FAST)
    message = str(info.value)
    assert "emotions.txt" in message and problem in message and "\n" not in message
    assert sent[0] < 16 * 2**20  # stopped near 248 bytes + the margin (socket buffers aside), not at the cap
    assert not dest.exists() or not list(dest.iterdir())


def test_a_local_source_larger_than_the_file_is_refused_without_reading_it_all(
    shared_data: Path, tmp_path: Path
) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    with open(mirror / "emotions.txt", "wb") as f:  # a 1 GiB sparse file: costs no disk
        f.truncate(2**30)
    with pytest.raises(DownloadError, match=r"more than 65,784 bytes for emotions.txt"):
        dl.fetch(tmp_path / "dest", mirror)


def test_the_folder_may_be_given_positionally(shared_data: Path, tmp_path: Path) -> None:
    """The cluster guide's `download_data.py DIR` habit: `goemo download DIR` works like --dest DIR."""
    from typer.testing import CliRunner

    from goemo.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["download", str(tmp_path / "data"), "--from", str(shared_data)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "data" / "train.tsv").read_bytes() == (shared_data / "train.tsv").read_bytes()
    clash = runner.invoke(
        app, ["download", str(tmp_path / "a"), "--dest", str(tmp_path / "b"), "--from", str(shared_data)]
    )
    assert clash.exit_code == 1 and "download folder given twice" in clash.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
