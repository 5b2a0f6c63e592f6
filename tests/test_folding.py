"""Folding a per-label affine map of the logits into the last layer (`goemo.models.folding`), per family.

Each family's own ``*ForSequenceClassification`` head (and goemo's) is saved with random weights;
after folding ``a·z + b`` into its safetensors, plain transformers must return exactly ``a·z + b``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModelForSequenceClassification

from goemo.core.errors import ModelError
from goemo.core.folder import ModelFolder
from goemo.models.folding import fold_logit_affine
from goemo.models.modeling import GoemoConfig, GoemoForSequenceClassification

LABELS = {0: "joy", 1: "anger", 2: "fear"}
SMALL = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 37}
FAMILIES = {
    "bert": SMALL,  # classifier
    "roberta": SMALL,  # classifier.dense, classifier.out_proj
    "electra": {**SMALL, "embedding_size": 16},  # classifier.out_proj
    "distilbert": {"dim": 32, "n_layers": 1, "n_heads": 2, "hidden_dim": 37},  # pre_classifier, classifier
    "albert": {**SMALL, "embedding_size": 16},
    "deberta-v2": SMALL,
}
SCALE = np.array([0.5, 1.7, 1.0])
SHIFT = np.array([-1.0, 0.25, 2.0])


def _saved(family: str, root: Path) -> Path:
    torch.manual_seed(0)
    if family == "goemo-mean":
        encoder = AutoConfig.for_model("bert", vocab_size=100, max_position_embeddings=64, **SMALL)
        model = GoemoForSequenceClassification(GoemoConfig(encoder=encoder.to_dict(), id2label=LABELS))
    else:
        config = AutoConfig.for_model(
            family, vocab_size=100, max_position_embeddings=64, id2label=LABELS, **FAMILIES[family]
        )
        model = AutoModelForSequenceClassification.from_config(config)
    model.save_pretrained(root / family)
    return root / family


def _logits(folder: Path) -> np.ndarray:
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    ids = torch.tensor([[5, 17, 42, 8, 3], [9, 23, 4, 1, 1]])
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.tensor([[1] * 5, [1, 1, 1, 0, 0]])).logits.double().numpy()


@pytest.mark.parametrize("family", [*FAMILIES, "goemo-mean"])
def test_folded_weights_output_the_affine_map(family: str, tmp_path: Path) -> None:
    folder = _saved(family, tmp_path)
    before = _logits(folder)
    layer = ModelFolder.open(folder).output_layer()
    assert layer.bias is not None and layer.dtype == "F32"
    fold_logit_affine(folder, SCALE, SHIFT)
    after = _logits(folder)
    assert np.allclose(after, before * SCALE + SHIFT, atol=1e-5)


def test_only_float32_weights_are_folded(tmp_path: Path) -> None:
    folder = _saved("bert", tmp_path)
    path = folder / "model.safetensors"
    tensors = {k: v.to(torch.bfloat16) for k, v in load_file(str(path)).items()}
    save_file(tensors, str(path), metadata={"format": "pt"})
    before = path.read_bytes()
    with pytest.raises(ModelError, match="BF16; only float32 weights are folded"):
        fold_logit_affine(folder, SCALE, SHIFT)
    assert path.read_bytes() == before


def test_a_map_that_would_reverse_the_order_is_refused(tmp_path: Path) -> None:
    folder = _saved("bert", tmp_path)
    with pytest.raises(ModelError, match="scale must be finite and > 0"):
        fold_logit_affine(folder, np.array([1.0, -1.0, 1.0]), SHIFT)
