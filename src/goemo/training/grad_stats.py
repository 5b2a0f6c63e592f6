"""Gradient norms per layer group, logged every ``log_every`` steps (the ``grad_norms`` event).

Vanishing gradients in the lower layers or an exploding head show up here before they show in the
loss; this is what ``wandb.watch`` would log, for every tracker and for ``metrics.jsonl``.
"""

from __future__ import annotations

from torch import nn

from goemo.models.modeling import layer_index


def grad_norms(model: nn.Module) -> dict[str, float]:
    """L2 norm of the gradients per layer group (``grad_norm/embeddings``, ``grad_norm/layer_i``, ``grad_norm/head``).

    >>> import torch
    >>> head = nn.Linear(2, 1)
    >>> head(torch.ones(1, 2)).sum().backward()
    >>> grad_norms(head)  # weight gradient (1, 1), bias gradient 1
    {'grad_norm/head': 1.7320508075688772}
    """
    base = getattr(model, "base_model_prefix", "") + "."
    num_layers = getattr(getattr(model, "config", None), "num_hidden_layers", None) or 0
    sums: dict[str, float] = {}
    for name, p in model.named_parameters():
        if p.grad is None:
            continue
        if name.startswith(base) and ".pooler." not in name:
            depth = layer_index(name[len(base) :], num_layers or 10**6)
            key = (
                "embeddings"
                if depth == 0
                else f"layer_{depth - 1}"
                if depth <= (num_layers or 10**6)
                else "encoder_top"
            )
        else:
            key = "head"
        sums[key] = sums.get(key, 0.0) + float(p.grad.detach().float().pow(2).sum())
    return {f"grad_norm/{k}": v**0.5 for k, v in sums.items()}
