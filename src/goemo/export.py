"""``goemo export``: an ONNX model folder (optionally int8) for CPU serving without PyTorch.

The export lives in `goemo.predict.onnx_export`, below the predictor, which makes CPU exports
by itself; this is the command's public face.
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
