"""The PyTorch backend: logits of a transformers model for padded token-id batches; training's live
model runs through it too, so its per-epoch scores and ``goemo predict`` run the same code."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch

from goemo.core.errors import GoemoError, ModelError
from goemo.core.folder import ModelFolder
from goemo.core.run_settings import RunSettings
from goemo.models.modeling import load_model
from goemo.predict.device import autocast_dtype, resolve_device, resolve_precision


class TorchBackend:
    """Logits from a PyTorch model in eval mode under ``torch.inference_mode`` and optional autocast."""

    name = "torch"
    takes_tokens = True

    def __init__(self, model: Any, device: str, precision: str) -> None:
        self.model = model
        self.device = device
        self.precision = precision
        self._dtype = autocast_dtype(precision)

    @property
    def num_threads(self) -> int:
        """torch's intra-op CPU threads now (process-wide)."""
        return int(torch.get_num_threads())

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        autocast: Any = contextlib.nullcontext()
        if self._dtype is not None:
            autocast = torch.autocast(device_type=self.device.split(":")[0], dtype=self._dtype)
        with torch.inference_mode(), autocast:
            logits = self.model(
                input_ids=torch.from_numpy(input_ids).to(self.device, non_blocking=True),
                attention_mask=torch.from_numpy(attention_mask).to(self.device, non_blocking=True),
            ).logits
        return logits.float().cpu().numpy()


def load_torch_backend(folder: ModelFolder, settings: RunSettings) -> tuple[TorchBackend, Any]:
    """The torch backend and tokenizer of a model folder, on the settings' device in eval mode."""
    dev = resolve_device(settings.device)
    if settings.num_threads:  # else torch's default, all cores
        torch.set_num_threads(settings.num_threads)
    folder.check_weights()  # truncated files, config.json edited against the weights: one clear line
    folder.check_tokenizer()
    try:
        loaded = load_model(folder.path, device=dev)
    except GoemoError:
        raise
    except Exception as e:  # transformers, safetensors and torch raise their own types for bad folders
        raise ModelError(
            f"{folder.path}: cannot load the model: {type(e).__name__}: {' '.join(str(e).split())}"
        ) from None
    folder.check_vocabulary(len(loaded.tokenizer))
    if loaded.label_names != folder.label_names:
        raise ModelError(f"{folder.path}: goemo.json label_names disagree with the model's id2label")
    return TorchBackend(loaded.model, dev, resolve_precision(settings.precision or "auto", dev)), loaded.tokenizer
