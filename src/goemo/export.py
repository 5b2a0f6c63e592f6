"""``goemo export``: an ONNX model folder (optionally int8-quantised) for fast CPU serving without PyTorch.

The export itself lives in `goemo.predict.onnx_export`, below the predictor, because the
predictor makes a CPU export by itself when `goemo predict` and `goemo serve` pick the fastest
backend (`goemo.predict.fastest`); this app-layer module is the command's entry point and
keeps the names it has always offered.

    result = export_onnx("runs/goemo/best", quantize="int8")
    result.path
    # -> PosixPath('runs/goemo/best-onnx-int8')
"""

from __future__ import annotations

from goemo.predict.onnx_export import (
    PROBE_TEXTS,
    QUANTIZE_CHOICES,
    ExportResult,
    LogitsOnly,
    default_output,
    export_onnx,
)

__all__ = ["PROBE_TEXTS", "QUANTIZE_CHOICES", "ExportResult", "LogitsOnly", "default_output", "export_onnx"]
