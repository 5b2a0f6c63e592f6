"""Integrated gradients on a torch model's word embeddings (captum), summed into the words of the text.

Kept apart from occlusion, and from the serving path, for its extra (``goemo[explain]``). Per
(text, label): captum's `LayerIntegratedGradients` integrates the gradient of the label's logit
from a baseline (the same ids, every non-special token the padding token) to the text, in the
embedding layer's output space. A token's attribution is the sum over embedding dimensions; a
word's, over the tokens that start inside it, so ``unbelievable``'s sub-word pieces add up to
one number. By completeness they sum to the logit on the text less the logit on the baseline.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from goemo.core.errors import GoemoError

try:
    from captum.attr import LayerIntegratedGradients
except ImportError:  # the `explain` extra; reported when the method is asked for
    LayerIntegratedGradients = None

IG_STEPS = 16  # Gauss-Legendre points of the path integral (captum's default method)
ROWS_PER_CALL = 8  # (text, label) pairs per captum call: IG_STEPS forward and backward passes each


def integrated_gradients(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    spans: Sequence[Sequence[tuple[int, int]]],
    labels: Sequence[Sequence[int]],
    *,
    max_length: int,
    n_steps: int = IG_STEPS,
) -> list[list[np.ndarray]]:
    """Per text, per label of ``labels[i]``: the attribution of each word, the words being ``spans[i]``.

    Words past the ``max_length`` tokens the model reads get 0.
    """
    if LayerIntegratedGradients is None:
        raise GoemoError("method integrated-gradients needs captum: pip install 'goemo[explain]'")
    enc = tokenizer(
        list(texts),
        truncation=True,
        max_length=max_length,
        padding=False,
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
        return_token_type_ids=False,
    )
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    rows = [(i, j) for i, labs in enumerate(labels) for j in labs]
    token_scores: dict[tuple[int, int], np.ndarray] = {}

    def forward(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return model(input_ids=input_ids, attention_mask=attention_mask).logits.float()

    lig = LayerIntegratedGradients(forward, model.get_input_embeddings())
    for at in range(0, len(rows), ROWS_PER_CALL):
        chunk = rows[at : at + ROWS_PER_CALL]
        width = max(len(enc["input_ids"][i]) for i, _ in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        base = ids.clone()
        for r, (i, _) in enumerate(chunk):
            row_ids = enc["input_ids"][i]
            special = torch.tensor(enc["special_tokens_mask"][i], dtype=torch.bool)
            ids[r, : len(row_ids)] = torch.tensor(row_ids)
            mask[r, : len(row_ids)] = 1
            base[r, : len(row_ids)] = torch.where(special, torch.tensor(row_ids), torch.tensor(pad))
        target = [j for _, j in chunk]
        with torch.autocast(device_type=device.type, enabled=False), torch.enable_grad():
            attr = lig.attribute(
                inputs=ids.to(device),
                baselines=base.to(device),
                additional_forward_args=(mask.to(device),),
                target=target,
                n_steps=n_steps,
            )
        summed = attr.sum(dim=-1).detach().float().cpu().numpy()
        for r, key in enumerate(chunk):
            token_scores[key] = summed[r, : len(enc["input_ids"][key[0]])]

    out: list[list[np.ndarray]] = []
    for i, text in enumerate(texts):
        owner = _word_of_tokens(text, spans[i], enc["offset_mapping"][i], enc["special_tokens_mask"][i])
        per_label = []
        for j in labels[i]:
            scores = np.zeros(len(spans[i]), dtype=np.float64)
            np.add.at(scores, owner[owner >= 0], token_scores[(i, j)][owner >= 0])
            per_label.append(scores)
        out.append(per_label)
    return out


def _word_of_tokens(
    text: str, spans: Sequence[tuple[int, int]], offsets: Sequence[tuple[int, int]], special: Sequence[int]
) -> np.ndarray:
    """For each token, the index of the word its first written character falls in (-1: special, or none)."""
    char_word = np.full(len(text) + 1, -1, dtype=np.int64)
    for w, (s, e) in enumerate(spans):
        char_word[s:e] = w
    owner = np.full(len(offsets), -1, dtype=np.int64)
    for t, ((s, e), sp) in enumerate(zip(offsets, special)):
        if sp or e <= s:
            continue
        inside = char_word[s:e]
        hits = inside[inside >= 0]
        if len(hits):
            owner[t] = hits[0]
    return owner
