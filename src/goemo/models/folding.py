"""Fold a per-label affine map of the logits into the classifier's last linear layer.

A calibration's affine part turns each label's logit ``z`` into ``a·z + b``
(`goemo.core.calibration`). The logits are the last layer's output ``z = W·h + c``, so the
same map is a new last layer: ``W' = a[:, None] · W`` and ``c' = a · c + b``, which every reader
of the folder's safetensors then applies with no calibration code.

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
from torch import nn

from goemo.core.errors import ModelError
from goemo.core.fileio import atomic_write_bytes
from goemo.core.folder import ModelFolder, is_output_layer

FOLDABLE_DTYPES = ("F32", "F64")


def fold_logit_affine(folder: str | Path, scale: np.ndarray, shift: np.ndarray) -> Path:
    """Rewrite ``folder``'s last layer so that it outputs ``scale * logits + shift`` (per label); the
    safetensors file holding it is replaced atomically. Returns that file.

    `ModelError` when the layer cannot take the map: not found, not float32, or a non-zero
    ``shift`` with no bias to put it in; nothing is written then.
    """
    opened = ModelFolder.open(folder)
    layer = opened.output_layer()
    a, b = _check_map(scale, shift, opened.num_labels)
    _check_layer(f"{layer.path}: {layer.weight}", layer.dtype, FOLDABLE_DTYPES, layer.bias is not None, b)
    with safe_open(str(layer.path), framework="pt") as f:
        metadata = f.metadata()
    tensors = load_file(str(layer.path))
    weight, bias = fold_tensors(tensors[layer.weight], tensors.get(layer.bias) if layer.bias else None, a, b)
    tensors[layer.weight] = weight
    if layer.bias is not None and bias is not None:
        tensors[layer.bias] = bias
    return atomic_write_bytes(layer.path, save_tensors(tensors, metadata=metadata))


def fold_into_module(model: nn.Module, scale: np.ndarray, shift: np.ndarray) -> str:
    """`fold_logit_affine` on a model in memory (its last layer's parameters replaced in place), with
    the same arithmetic, so the weights equal those of the folded file bit for bit. Returns the
    weight's name. Training folds its best model so that its final scores are the saved model's.
    """
    params = dict(model.named_parameters())
    names = [n for n, p in params.items() if is_output_layer(n) and p.ndim == 2 and p.shape[0] == len(scale)]
    if len(names) != 1:
        raise ModelError(f"{type(model).__name__}: {len(names)} classifier output layers with {len(scale)} rows")
    a, b = _check_map(scale, shift, len(scale))
    weight = params[names[0]]
    bias = params.get(names[0].removesuffix(".weight") + ".bias")
    _check_layer(names[0], weight.dtype, (torch.float32, torch.float64), bias is not None, b)
    new_weight, new_bias = fold_tensors(weight.detach(), None if bias is None else bias.detach(), a, b)
    with torch.no_grad():
        weight.copy_(new_weight)
        if bias is not None and new_bias is not None:
            bias.copy_(new_bias)
    return names[0]


def fold_tensors(
    weight: torch.Tensor, bias: torch.Tensor | None, scale: np.ndarray, shift: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(a[:, None] * W, a * c + b)`` computed in float64 and returned in the tensors' own dtype and device."""
    a = torch.from_numpy(np.asarray(scale, dtype=np.float64)).to(weight.device)
    new_weight = (weight.to(torch.float64) * a[:, None]).to(weight.dtype).contiguous()
    if bias is None:
        return new_weight, None
    b = torch.from_numpy(np.asarray(shift, dtype=np.float64)).to(bias.device)
    return new_weight, (bias.to(torch.float64) * a + b).to(bias.dtype).contiguous()


def _check_layer(name: str, dtype: object, foldable: tuple[object, ...], has_bias: bool, shift: np.ndarray) -> None:
    if dtype not in foldable:
        raise ModelError(f"{name} is {dtype}; only float32 weights are folded")
    if not has_bias and np.any(shift != 0):
        raise ModelError(f"{name} has no bias to hold the calibration's shift")


def _check_map(scale: np.ndarray, shift: np.ndarray, num_labels: int) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(scale, dtype=np.float64)
    b = np.asarray(shift, dtype=np.float64)
    if a.shape != (num_labels,) or b.shape != (num_labels,):
        raise ModelError(f"scale and shift must have one value per label ({num_labels})")
    if not np.all(np.isfinite(a)) or not np.all(a > 0) or not np.all(np.isfinite(b)):
        raise ModelError("scale must be finite and > 0, shift finite: a calibration must keep the labels' order")
    return a, b
