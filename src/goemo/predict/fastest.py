"""The fastest backend a model folder and this machine allow: what `goemo predict` and `goemo serve` run.

`choose_fastest` decides, in this order: a TF-IDF baseline or an ONNX export runs as itself; an
explicit ``precision``, or a CUDA or MPS device, runs torch as asked; on a CPU with the ONNX tools,
the folder's CPU export (`ensure_cpu_export`), made once: int8 when its dev macro-F1 at the
model's thresholds is within `INT8_MAX_F1_DROP` of the fp32 graph's, else fp32 (no dev split:
fp32); otherwise torch fp32.

The export lives in ``FOLDER/.onnx-cpu/`` (hidden, so ``goemo push`` leaves it out) or, for a
read-only folder, under ``~/.cache/goemo/exports/<fingerprint>/``; its ``goemo.json`` records the
source weights' fingerprint (retrained weights are exported again), the dev figures and the
verdict. A ``flock`` beside it makes two processes starting together export once.

Why int8: on a CPU it halves MiniLM's latency (docs/benchmarks.md); why the check: on a small or
unusual model quantisation can move decisions, and a service must not get worse for being faster.

    choose_fastest(ModelFolder.open("runs/x/best"), "cpu").note
    # -> 'int8 kept: dev macro-F1 0.531 vs fp32 0.533 (5426 texts)'
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from goemo.core.errors import GoemoError, ModelError, one_line
from goemo.core.fileio import atomic_directory
from goemo.core.folder import CPU_EXPORT_KEY, ONNX_FILE, ModelFolder
from goemo.core.run_settings import RunSettings
from goemo.core.thresholds import binarize
from goemo.data.batching import default_cache_dir
from goemo.data.source import model_source
from goemo.data.split import Split
from goemo.predict.runner import choose_max_length, probs_of_texts

log = logging.getLogger(__name__)

# The most dev macro-F1 int8 may lose against fp32 (at the model's own thresholds) and still be used.
INT8_MAX_F1_DROP = 0.005
EXPORT_DIR = ".onnx-cpu"  # inside the model folder; hidden: a cache, not part of the model
EXPORTS_CACHE = "exports"  # under the goemo cache dir, for read-only model folders
# Bumped when the way the CPU export is made or checked changes: older exports are made again.
EXPORT_VERSION = 1
DEV_BATCH_SIZE = 64
# What the first load of a model waits for, as its log line says (README, docs/predict-and-serve.md).
EXPORT_TIME = "about 1-2 min on a CPU"
ONNX_TOOLS = ("onnx", "onnxruntime", "onnxscript")


@dataclass(frozen=True)
class CpuExport:
    """A CPU export of a model folder, ready to load: where it is, its precision and why."""

    path: Path
    precision: str  # "int8" | "fp32"
    verdict: str  # one line: why this precision
    in_model_folder: bool  # False: under the goemo cache (the model folder is read-only)
    made: bool  # made by this call (False: reused)
    dev_check: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BackendChoice:
    """What `choose_fastest` picked: the backend, the folder it loads, the device and precision, and why."""

    backend: str  # "torch" | "onnx" | "tfidf"
    folder: ModelFolder  # the folder the backend loads (the CPU export for onnx from a torch folder)
    device: str
    precision: str  # what to ask the backend for ("auto" where it decides)
    note: str  # why, in a few words, for the first log line and /health
    export: CpuExport | None = None


def missing_onnx_tools() -> list[str]:
    """The packages a CPU export needs that are not installed (found without importing them)."""
    return [m for m in ONNX_TOOLS if importlib.util.find_spec(m) is None]


def cuda_available() -> bool:
    """Whether torch sees a CUDA GPU; with no NVIDIA driver, answered without importing torch
    (seconds and hundreds of MiB that a server worker running the ONNX export never needs)."""
    if sys.platform.startswith("linux"):  # elsewhere, only torch can tell
        driver = Path("/proc/driver/nvidia").exists() or any(Path("/dev").glob("nvidia*")) or Path("/dev/dxg").exists()
        if not driver:
            return False
    try:
        import torch  # noqa: PLC0415  (optional extra: torch, only to look for a GPU)
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


class UnusableSource(Exception):
    """The folder's weights do not load (under torch either): its own error, raised as it is, no fallback."""

    def __init__(self, error: GoemoError) -> None:
        super().__init__(str(error))
        self.error = error


def choose_fastest(
    folder: ModelFolder,
    settings: RunSettings | None = None,
    *,
    max_f1_drop: float = INT8_MAX_F1_DROP,
    cache_root: str | Path | None = None,
) -> BackendChoice:
    """The fastest backend ``folder`` and this machine allow (the module's docstring says the order).

    Making the CPU export is the only slow step (once per weights), logged as it goes; a failed
    export logs a warning and falls back to torch.
    """
    run = settings or RunSettings()
    device, precision, num_threads = run.device, run.precision or "auto", run.num_threads
    kind = folder.kind
    if kind == "tfidf":
        return BackendChoice("tfidf", folder, "cpu", "fp32", "a TF-IDF model")
    if kind == "onnx":
        return BackendChoice("onnx", folder, device, precision, "the folder is an ONNX export")
    if precision != "auto":
        return BackendChoice("torch", folder, device, precision, f"precision {precision} asked for")
    if device.startswith(("cuda", "mps")) or (device == "auto" and cuda_available()):
        where = "cuda" if device == "auto" else device
        note = "a CUDA GPU: torch in bf16" if where.startswith("cuda") else f"device {where}: torch"
        return BackendChoice("torch", folder, where, "auto", note)
    missing = missing_onnx_tools()
    if missing:
        note = f"{', '.join(missing)} not installed (pip install 'goemo[onnx]' for the int8 CPU export): torch fp32"
        log.info("%s: %s", folder.path, note)
        return BackendChoice("torch", folder, "cpu", "fp32", note)
    try:
        export = ensure_cpu_export(folder, max_f1_drop=max_f1_drop, cache_root=cache_root, num_threads=num_threads)
    except UnusableSource as e:
        raise e.error from None
    except (GoemoError, OSError) as e:
        note = f"no CPU export ({one_line(str(e))}): torch fp32"
        log.warning("%s: %s", folder.path, note)
        return BackendChoice("torch", folder, "cpu", "fp32", note)
    return BackendChoice("onnx", ModelFolder.open(export.path), "cpu", "auto", export.verdict, export)


# ---------------------------------------------------------------------------- the cached export


def export_locations(folder: ModelFolder, cache_root: str | Path | None = None) -> list[Path]:
    """Where a CPU export of ``folder`` may be: inside it, then under the goemo cache (by fingerprint)."""
    root = Path(cache_root) if cache_root is not None else default_cache_dir() / EXPORTS_CACHE
    return [folder.path / EXPORT_DIR, root / folder.fingerprint[:32]]


def read_cpu_export(location: Path, fingerprint: str) -> CpuExport | None:
    """The export at ``location`` when it is whole and was made from weights with ``fingerprint``, else None."""
    if not (location / ONNX_FILE).is_file():
        return None
    try:
        record = ModelFolder.open(location).cpu_export
    except ModelError as e:  # a damaged goemo.json: made again, like a damaged prediction cache
        log.warning("CPU export %s unreadable (%s); making it again", location, one_line(str(e)))
        return None
    if record.get("version") != EXPORT_VERSION or record.get("source_fingerprint") != fingerprint:
        log.info("CPU export %s was made from other weights (or by an older goemo); making it again", location)
        return None
    return CpuExport(
        location,
        str(record.get("precision") or "fp32"),
        str(record.get("verdict") or ""),
        location.name == EXPORT_DIR,
        False,
        dict(record.get("dev_check") or {}),
    )


@contextlib.contextmanager
def _exclusive(lock: Path, what: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock`` (created if needed); wait, saying so, while another process holds it."""
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("another process is making %s; waiting for it", what)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _writable(location: Path) -> bool:
    parent = location.parent
    if location.name != EXPORT_DIR:  # the goemo cache: made on demand
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError:
            return False
    return os.access(parent, os.W_OK | os.X_OK)


def ensure_cpu_export(
    folder: ModelFolder,
    *,
    max_f1_drop: float = INT8_MAX_F1_DROP,
    cache_root: str | Path | None = None,
    num_threads: int | None = None,
) -> CpuExport:
    """The CPU export of ``folder``: reused when one from these weights exists, else made once (locked),
    keeping int8 when it loses at most ``max_f1_drop`` dev macro-F1."""
    fingerprint = folder.fingerprint
    locations = export_locations(folder, cache_root)
    for location in locations:
        found = read_cpu_export(location, fingerprint)
        if found is not None:
            log.debug("reusing the CPU export %s (%s)", location, found.verdict)  # the load's own line says it
            return found
    for location in locations:
        if not _writable(location):
            log.info("%s is not writable; the CPU export goes under %s", location.parent, locations[-1].parent)
            continue
        try:
            with _exclusive(location.with_name(location.name + ".lock"), f"the CPU export {location}"):
                found = read_cpu_export(location, fingerprint)  # made by the process we waited for
                if found is not None:
                    log.info("reusing the CPU export %s, just made by another process (%s)", location, found.verdict)
                    return found
                return _make_cpu_export(folder, location, fingerprint, max_f1_drop, num_threads)
        except PermissionError:
            continue
    raise ModelError(f"nowhere to write a CPU export of {folder.path}: tried {', '.join(map(str, locations))}")


def _make_cpu_export(
    folder: ModelFolder, location: Path, fingerprint: str, max_f1_drop: float, num_threads: int | None
) -> CpuExport:
    from goemo.predict import onnx_export  # noqa: PLC0415  (optional extra: torch and onnx, only to make the export)
    from goemo.predict.onnx_backend import OnnxBackend  # noqa: PLC0415  (optional extra: onnxruntime)

    start = time.perf_counter()
    try:  # the weights as torch would load them: a damaged folder is the user's one-line error, not a fallback
        model, tokenizer = onnx_export.load_source(folder.path)
        max_length = choose_max_length(folder, tokenizer, None)
        folder.check_vocabulary(len(tokenizer))
    except GoemoError as e:
        raise UnusableSource(e) from e
    dev, dev_source = find_dev_split(folder)
    # Said before the slow part (the export, then the dev check), which is otherwise minutes of silence.
    log.info(
        "%s has no CPU export from these weights yet: building the int8 ONNX export once, in %s (%s; %s); "
        "later loads reuse it",
        folder.path,
        location,
        EXPORT_TIME,
        f"then checked against fp32 on {len(dev)} dev texts" if dev is not None else f"fp32 only: {dev_source}",
    )
    onnx_export.check_exportable(folder.path)
    thresholds = folder.thresholds()
    kind = "tuned" if folder.tuned is not None else "global"
    with atomic_directory(location) as tmp:
        work = Path(tempfile.mkdtemp(prefix="work-", dir=tmp))
        try:
            graphs = onnx_export.build_graphs(
                model, tokenizer, work, opset=None, max_fp32_diff=1e-4, int8=dev is not None, target=location
            )
            log.info(
                "ONNX graph ready in %.0f s (fp32 within %.1e of PyTorch on the probe texts)",
                time.perf_counter() - start,
                graphs.fp32_diff,
            )
            dev_check: dict[str, Any] = {}
            precision, graph = "fp32", graphs.fp32
            if dev is None or graphs.int8 is None:
                verdict = f"no dev split to check int8 against ({dev_source}): fp32 ONNX"
            else:
                f1 = {}
                log.info("checking the int8 graph against fp32 on %d dev texts", len(dev))
                with _check_progress(2 * len(dev)) as bar:
                    for name, path in (("fp32", graphs.fp32), ("int8", graphs.int8)):
                        probs = probs_of_texts(
                            _counted(OnnxBackend(path, "cpu", num_threads, name), bar),
                            tokenizer,
                            dev.texts,
                            max_length=max_length,
                            batch_size=DEV_BATCH_SIZE,
                            num_labels=folder.num_labels,
                            calibration=folder.calibration,
                        )
                        f1[name] = macro_f1(dev.labels, binarize(probs, thresholds))
                        log.info("dev macro-F1 of the %s graph: %.4f (%d texts)", name, f1[name], len(dev))
                drop = f1["fp32"] - f1["int8"]
                figures = f"dev macro-F1 {f1['int8']:.3f} vs fp32 {f1['fp32']:.3f}"
                if drop <= max_f1_drop:
                    precision, graph, verdict = "int8", graphs.int8, figures
                else:
                    verdict = f"int8 rejected, {figures} (drop {drop:.3f} > {max_f1_drop:g}): fp32 ONNX"
                dev_check = {
                    "split": dev_source,
                    "texts": len(dev),
                    "split_checksum": dev.checksum(),
                    "thresholds": kind,
                    "int8_macro_f1": f1["int8"],
                    "fp32_macro_f1": f1["fp32"],
                    "max_drop": max_f1_drop,
                }
            record = {
                "version": EXPORT_VERSION,
                "source": str(folder.path),
                "source_fingerprint": fingerprint,
                "precision": precision,
                "verdict": verdict,
                "dev_check": dev_check,
            }
            onnx_export.write_export_folder(
                tmp,
                graph,
                model,
                tokenizer,
                source=folder.path,
                quantize="int8" if precision == "int8" else None,
                diff=None if precision == "int8" else graphs.fp32_diff,
                model_ref=str(location),
                extra={CPU_EXPORT_KEY: record},
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)
    log.info("%s; CPU export written to %s in %.0f s", verdict, location, time.perf_counter() - start)
    return CpuExport(location, precision, verdict, location.name == EXPORT_DIR, True, dev_check)


# ---------------------------------------------------------------------------- the dev check


def _check_progress(total: int) -> tqdm:
    """A bar on stderr over the dev check's texts (both graphs), shown on a terminal only."""
    return tqdm(total=total, unit="texts", desc="int8 check", file=sys.stderr, disable=None, leave=False)


def _counted(backend: Callable[[np.ndarray, np.ndarray], np.ndarray], bar: tqdm) -> Callable[..., np.ndarray]:
    """``backend``, moving ``bar`` on by each batch's texts."""

    def run(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        out = backend(input_ids, attention_mask)
        bar.update(len(input_ids))
        return out

    return run


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Macro F1 over the labels with positives, as `goemo.scoring.metrics` reports it, in numpy so
    that serving never imports the scoring stack (scikit-learn)."""
    y, p = np.asarray(y_true).astype(bool), np.asarray(y_pred).astype(bool)
    tp = (y & p).sum(axis=0)
    fp = (~y & p).sum(axis=0)
    fn = (y & ~p).sum(axis=0)
    defined = y.sum(axis=0) > 0
    if not defined.any():
        return 0.0
    f1 = 2 * tp[defined] / np.maximum(2 * tp[defined] + fp[defined] + fn[defined], 1)
    return float(f1.mean())


def find_dev_split(folder: ModelFolder) -> tuple[Split | None, str]:
    """The dev split the model was trained with (`goemo.data.source.model_source`), and where it is;
    ``(None, why not)`` when it is unreadable, changed (checksum) or on the Hub: no guessing with other data."""
    source = model_source(folder).with_taxonomy(folder.taxonomy)
    where = source.describe()
    if source.is_hub_dataset:
        return None, f"the training dataset {source.dataset} is not a local folder or file"
    if source.kind == "folder" and not (Path(str(source.data_dir)) / "dev.tsv").is_file():
        return None, f"{Path(str(source.data_dir)) / 'dev.tsv'} is not there"
    try:
        split = source.split("dev", folder.label_names)
    except GoemoError as e:
        return None, f"cannot read the dev split of {where}: {one_line(str(e))}"
    where = str(split.source or where)
    if list(split.label_names) != list(folder.label_names):
        return None, f"{where} has other labels than the model"
    recorded = folder.data_checksums.get("dev")
    if recorded:
        config = folder.training_config
        candidates = [split]
        if config.get("max_eval_samples"):  # training scored a sample of it
            candidates.append(split.sample(int(config["max_eval_samples"]), seed=int(config.get("seed", 42))))
        if not any(c.checksum() == recorded for c in candidates):
            return None, f"{where} is not the dev split the model was trained with (its checksum differs)"
    return split, where
