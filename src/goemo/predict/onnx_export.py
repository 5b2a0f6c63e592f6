"""Export a model folder to ONNX (optionally int8-quantised) for fast CPU serving without PyTorch.

The core of ``goemo export`` and of the CPU export the predictor makes itself
(`goemo.predict.fastest`), hence in the predict layer. The graph comes from torch's own exporter
(``dynamo=True``, needs ``onnxscript``) with dynamic batch and sequence axes: inputs
``input_ids`` and ``attention_mask`` (int64), output ``logits`` (float32). ``quantize="int8"``
is ONNX Runtime's dynamic quantisation: no calibration data, and roughly half the CPU latency
(docs/benchmarks.md). The exported folder is a complete model folder: ``model.onnx``, tokenizer,
``config.json``, ``goemo.json`` (with an ``onnx`` entry: opset, quantisation, and the largest
probability difference from PyTorch on probe texts) and a model card.

    result = export_onnx("runs/goemo/best", quantize="int8")
    result.path
    # -> PosixPath('runs/goemo/best-onnx-int8')
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from goemo.core.errors import ConfigError, ModelError, RunFolderError
from goemo.core.fileio import atomic_directory
from goemo.core.folder import ONNX_FILE, ModelFolder, write_calibration, write_meta
from goemo.models.card import ExportInfo, build_model_card, default_model_name, write_model_card
from goemo.models.modeling import load_model, write_config_thresholds
from goemo.predict.onnx_backend import OnnxBackend
from goemo.predict.runner import probs_of_texts
from goemo.predict.torch_backend import TorchBackend

log = logging.getLogger(__name__)

QUANTIZE_CHOICES = ("int8",)
ONNX_TOOLS = ("onnx", "onnxruntime", "onnxscript")  # as `goemo.predict.fastest`, which imports this module
# Varied lengths and content: the parity check must cover padding inside a batch.
PROBE_TEXTS = (
    "I love this so much, thank you!",
    "What?",
    "This is the worst thing that has happened to me all year and I am furious about it.",
    "",
    "Not sure how I feel about that, honestly. Maybe a bit sad, maybe relieved.",
    "lol",
    "I'm scared it won't work out.",
    "Congratulations!! So proud of you",
)
PROBE_MAX_LENGTH = 128


@dataclass
class ExportResult:
    """Where the export went and how close it is to the PyTorch model."""

    path: Path
    quantize: str | None
    size_bytes: int
    max_abs_prob_diff: float
    seconds: float


@dataclass
class Graphs:
    """The ONNX graphs of one model, in a scratch folder: fp32 (checked against PyTorch) and maybe int8."""

    fp32: Path
    fp32_diff: float
    int8: Path | None = None


class LogitsOnly(torch.nn.Module):
    """A classifier seen as (input_ids, attention_mask) -> logits: the exported graph's signature."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.inner = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.inner(input_ids=input_ids, attention_mask=attention_mask).logits


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's notes and deprecation warnings, which say nothing about this export."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "onnxscript", "onnx_ir", "torch._dynamo")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _export_graph(model: Any, tokenizer: Any, path: Path, opset: int | None) -> None:
    wrapper = LogitsOnly(model).eval()
    # Two texts of different lengths: a batch of 2 with padding, so neither axis is specialised.
    sample = tokenizer(["an example text to trace", "hi"], padding=True, return_tensors="pt")
    args = (sample["input_ids"], sample["attention_mask"])
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    try:
        with _quiet_exporter(), torch.inference_mode(False), torch.no_grad():
            program = torch.onnx.export(
                wrapper,
                args,
                input_names=["input_ids", "attention_mask"],
                output_names=["logits"],
                dynamic_shapes={"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}},
                opset_version=opset,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
            if program is None:  # only the legacy exporter (dynamo=False) returns None
                raise RuntimeError("torch.onnx.export returned no ONNX program")
            program.save(str(path), external_data=False)
    except Exception as e:  # the exporter raises many types; the user needs the model and the reason
        raise ModelError(f"ONNX export of {type(model).__name__} failed: {type(e).__name__}: {e}") from None


def _quantize_int8(src: Path, dst: Path) -> None:
    """Dynamic int8 quantisation with one scale per output channel, after ONNX Runtime's pre-processing.

    Per-channel scales halve per-tensor ones' probability error on MiniLM (mean |Δp| 0.012 vs
    0.025; macro-F1 moved under 0.006 vs up to 0.018) at no measured speed cost. Symbolic shape
    inference cannot follow the exporter's ``Min(512, sequence)`` slicing, so it is skipped.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic  # noqa: PLC0415  (optional extra: onnx)
    from onnxruntime.quantization.shape_inference import quant_pre_process  # noqa: PLC0415  (optional extra: onnx)

    pre = src.with_name("pre.onnx")
    with _quiet_exporter():
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            source = pre
        except Exception as e:  # pre-processing is an optimisation, not a requirement
            log.info("quantisation pre-processing skipped: %s", e)
            source = src
        quant_logger = logging.getLogger()  # quantize_dynamic warns through the root logger
        level = quant_logger.level
        quant_logger.setLevel(logging.ERROR)
        try:
            quantize_dynamic(str(source), str(dst), weight_type=QuantType.QInt8, per_channel=True)
        finally:
            quant_logger.setLevel(level)
    pre.unlink(missing_ok=True)


def _max_prob_diff(model: Any, tokenizer: Any, onnx_path: Path) -> float:
    """Largest |p_onnx - p_torch| over the probe texts, batched together (so padded), as the predictor runs them."""
    labels = int(model.config.num_labels)
    size = len(PROBE_TEXTS)
    options: dict[str, Any] = {"max_length": PROBE_MAX_LENGTH, "batch_size": size, "num_labels": labels}
    ref = probs_of_texts(TorchBackend(model, "cpu", "fp32"), tokenizer, PROBE_TEXTS, **options)
    got = probs_of_texts(OnnxBackend(onnx_path, "cpu", None, "fp32"), tokenizer, PROBE_TEXTS, **options)
    return float(np.abs(got - ref).max())


def default_output(model_dir: str | Path, quantize: str | None = None) -> Path:
    """``runs/X/best`` -> ``runs/X/best-onnx`` (``best-onnx-int8`` when quantised)."""
    model_dir = Path(model_dir)
    return model_dir.with_name(model_dir.name + "-onnx" + (f"-{quantize}" if quantize else ""))


def check_exportable(model_dir: Path) -> None:
    """Refuse what cannot be exported (no model folder, already an export), before anything loads."""
    if not (model_dir / "config.json").is_file():
        raise ModelError(f"{model_dir} is not a model folder (no config.json)")
    if (model_dir / ONNX_FILE).is_file():
        raise ModelError(f"{model_dir} is already an ONNX export; export the PyTorch folder it came from")


def load_source(model_dir: Path) -> tuple[Any, Any]:
    """The fp32 PyTorch model (eval mode, CPU) and tokenizer to export."""
    loaded = load_model(model_dir, device="cpu")
    return loaded.model.float().eval(), loaded.tokenizer


def build_graphs(
    model: Any, tokenizer: Any, work: Path, *, opset: int | None, max_fp32_diff: float, int8: bool, target: Path
) -> Graphs:
    """Write the fp32 graph (and with ``int8``, its quantised copy) into the scratch folder ``work``,
    refusing one more than ``max_fp32_diff`` from PyTorch on the probe texts: an exporter bug that
    would silently change predictions."""
    fp32 = work / ONNX_FILE
    _export_graph(model, tokenizer, fp32, opset)
    diff32 = _max_prob_diff(model, tokenizer, fp32)
    if diff32 > max_fp32_diff:
        raise ModelError(
            f"exported graph disagrees with PyTorch by {diff32:.2e} in probability (> {max_fp32_diff:g}); "
            f"not writing {target}"
        )
    graphs = Graphs(fp32, diff32)
    if int8:
        graphs.int8 = work / "int8.onnx"
        _quantize_int8(fp32, graphs.int8)
    return graphs


def write_export_folder(
    tmp: Path,
    graph: Path,
    model: Any,
    tokenizer: Any,
    *,
    source: Path,
    quantize: str | None,
    diff: float | None,
    model_ref: str,
    extra: dict[str, Any] | None = None,
) -> float:
    """Fill the (temporary) export folder ``tmp`` around ``graph``. Returns the graph's probe
    difference from PyTorch (``diff`` when already measured).

    Nine parameters: the two export paths (`export_onnx`, `goemo.predict.fastest`) each hold
    these in different shapes, and this is the one place they become a folder.
    """
    shutil.move(str(graph), tmp / ONNX_FILE)
    if diff is None:
        diff = _max_prob_diff(model, tokenizer, tmp / ONNX_FILE)
    folder = ModelFolder.open(source)
    meta = dict(folder.meta)
    meta.setdefault("label_names", folder.label_names)
    model.config.save_pretrained(tmp)
    write_calibration(tmp, folder.calibration)  # the graph holds the folded weights; the rest is the predictor's
    tokenizer.save_pretrained(tmp)
    import onnx  # noqa: PLC0415  (optional extra: onnx)

    graph_opsets = onnx.load(str(tmp / ONNX_FILE), load_external_data=False).opset_import
    opset_used = next((o.version for o in graph_opsets if o.domain in ("", "ai.onnx")), None)
    meta["onnx"] = {
        "source": str(source),
        "opset": opset_used,
        "quantize": quantize,
        "inputs": ["input_ids", "attention_mask"],
        "outputs": ["logits"],
        "max_abs_prob_diff_vs_torch": diff,
        "probe_texts": len(PROBE_TEXTS),
    }
    meta.update(extra or {})
    write_meta(tmp, meta)
    write_config_thresholds(tmp)
    info = ExportInfo(quantize, opset_used, diff, str(source))
    card = build_model_card(tmp, export=info, model_name=default_model_name(source, info), model_ref=model_ref)
    write_model_card(tmp, card)
    return diff


def export_onnx(
    model_dir: str | Path,
    out_dir: str | Path | None = None,
    *,
    quantize: str | None = None,
    opset: int | None = None,
    overwrite: bool = False,
    max_fp32_diff: float = 1e-4,
) -> ExportResult:
    """Write an ONNX model folder next to (or at ``out_dir``) a goemo model folder; refused as
    `build_graphs` says (nothing is written).

        export_onnx("runs/goemo/best", "models/goemo-onnx")
        # -> ExportResult(path=PosixPath('models/goemo-onnx'), ..., max_abs_prob_diff=3.1e-07, ...)
    """
    if quantize is not None and quantize not in QUANTIZE_CHOICES:
        raise ConfigError(f"quantize={quantize!r}: expected one of {', '.join(QUANTIZE_CHOICES)} or none")
    missing = []
    for module in ONNX_TOOLS:
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise ModelError(f"ONNX export needs {', '.join(missing)}: pip install 'goemo[onnx]'")
    model_dir = Path(model_dir)
    check_exportable(model_dir)
    out = Path(out_dir) if out_dir is not None else default_output(model_dir, quantize)
    if out.resolve() == model_dir.resolve():
        raise ConfigError("the export folder must differ from the model folder")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise RunFolderError(f"{out} exists and is not empty; pass --overwrite to replace it")
    start = time.perf_counter()
    model, tokenizer = load_source(model_dir)
    with atomic_directory(out) as tmp:
        work = Path(tempfile.mkdtemp(prefix="goemo-export-"))
        try:
            graphs = build_graphs(
                model, tokenizer, work, opset=opset, max_fp32_diff=max_fp32_diff, int8=quantize == "int8", target=out
            )
            graph = graphs.int8 if graphs.int8 is not None else graphs.fp32
            diff = write_export_folder(
                tmp,
                graph,
                model,
                tokenizer,
                source=model_dir,
                quantize=quantize,
                diff=None if quantize else graphs.fp32_diff,
                model_ref=str(out),
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return ExportResult(out, quantize, (out / ONNX_FILE).stat().st_size, diff, time.perf_counter() - start)
