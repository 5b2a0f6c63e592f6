"""Fold a per-label affine map of the logits into the classifier's last linear layer.

A calibration's affine part turns each label's logit ``z`` into ``a·z + b``
(`goemo.core.calibration`). The logits are the last layer's output ``z = W·h + c``, so the
same map is a new last layer: ``W' = a[:, None] · W`` and ``c' = a · c + b``. Written into the
folder's safetensors, every reader of the weights (plain transformers, the
``text-classification`` pipeline, an ONNX export, goemo's backends) returns calibrated logits
with no calibration code at all.

The layer is found by name in the safetensors headers (`goemo.core.folder.ModelFolder.output_layer`):
``classifier`` for BERT, DistilBERT, ALBERT, DeBERTa and goemo's own head, ``classifier.out_proj``
for RoBERTa, XLM-R and ELECTRA, ``score`` for decoder heads. Only float32 weights are folded: in
bf16 or fp16 the product would be rounded to 8 or 11 bits and move decisions.

    fold_logit_affine("runs/x/best", scale=np.array([1.3] * 28), shift=np.zeros(28))
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from safetensors.torch import save as save_tensors

from goemo.core.errors import ModelError
from goemo.core.fileio import atomic_write_bytes
from goemo.core.folder import ModelFolder

FOLDABLE_DTYPES = ("F32", "F64")


def fold_logit_affine(folder: str | Path, scale: np.ndarray, shift: np.ndarray) -> Path:
    """Rewrite ``folder``'s last layer so that it outputs ``scale * logits + shift`` (per label); the
    safetensors file holding it is replaced atomically. Returns that file.

    `ModelError` when the layer cannot take the map: not found, not float32, or a non-zero
    ``shift`` with no bias to put it in; nothing is written then.
    """
    opened = ModelFolder.open(folder)
    layer = opened.output_layer()
    a = np.asarray(scale, dtype=np.float64)
    b = np.asarray(shift, dtype=np.float64)
    if a.shape != (opened.num_labels,) or b.shape != (opened.num_labels,):
        raise ModelError(f"scale and shift must have one value per label ({opened.num_labels})")
    if not np.all(np.isfinite(a)) or not np.all(a > 0) or not np.all(np.isfinite(b)):
        raise ModelError("scale must be finite and > 0, shift finite: a calibration must keep the labels' order")
    if layer.dtype not in FOLDABLE_DTYPES:
        raise ModelError(f"{layer.path}: {layer.weight} is {layer.dtype}; only float32 weights are folded")
    if layer.bias is None and np.any(b != 0):
        raise ModelError(f"{layer.path}: {layer.weight} has no bias to hold the calibration's shift")
    with safe_open(str(layer.path), framework="pt") as f:
        metadata = f.metadata()
    tensors = load_file(str(layer.path))
    weight = tensors[layer.weight]
    at = torch.from_numpy(a)
    tensors[layer.weight] = (weight.to(torch.float64) * at[:, None]).to(weight.dtype).contiguous()
    if layer.bias is not None:
        bias = tensors[layer.bias]
        tensors[layer.bias] = (bias.to(torch.float64) * at + torch.from_numpy(b)).to(bias.dtype).contiguous()
    return atomic_write_bytes(layer.path, save_tensors(tensors, metadata=metadata))
