"""Device and precision: one vocabulary (auto | fp32 | bf16 | fp16) for training and prediction."""

from __future__ import annotations

import torch

from goemo.core.errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve_device(device: str) -> str:
    """``auto`` -> cuda when available, else cpu; a device that is not there is a clear error."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' asked for, but CUDA is not available (CPU-only PyTorch build or no GPU)")
    if device == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ConfigError("device 'mps' asked for, but the MPS backend is not available")
    if device != "cpu" and not device.startswith(("cuda", "mps")):
        raise ConfigError(f"device={device!r}: expected auto, cpu, cuda, cuda:N or mps")
    return device


def cpu_has_bf16() -> bool:
    """Whether this CPU runs bf16 matrix products natively (AVX512-BF16 / AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device: str, *, training: bool = False) -> str:
    """``fp32`` | ``bf16`` | ``fp16`` for ``device``; ``auto`` picks the fastest that is safe.

    On CUDA, bf16 (fp16 without bf16). On a CPU, bf16 for training where the CPU has it natively
    (1.6x faster), fp32 for prediction: there bf16 autocast measured *slower*, the weights' casts
    costing more than the products save (docs/benchmarks.md, "Inference speed").
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision={precision!r}: expected {', '.join(PRECISIONS)}")
    kind = device.split(":")[0]
    if precision != "auto":
        if precision == "fp16" and kind != "cuda":
            raise ConfigError("precision 'fp16' needs a CUDA device; use bf16 or fp32 on CPU")
        return precision
    if kind == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if kind == "cpu" and training and cpu_has_bf16():
        return "bf16"
    return "fp32"


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a resolved precision (None: no autocast)."""
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
