"""goemo's classification head as a Hugging Face custom model: this file needs torch and transformers only.

The head is encoder + pooling + dropout + linear, with ``pooling`` in its config: ``"mean"``
(masked mean of the last hidden states, for sentence-embedding encoders such as MiniLM) or
``"cls"`` (the encoder's pooler output where it has a pooler, as BERT's and SqueezeBERT's own
heads use, else the first token's hidden state). goemo uses ``cls`` for encoder families whose
own ``*ForSequenceClassification`` head has no dropout setting of its own (SqueezeBERT, MPNet:
theirs reuse the encoder's ``hidden_dropout_prob``), so that ``--dropout`` reaches the classifier.
The ``model_type`` stays ``goemo-mean-pool`` for both, so folders saved before ``cls`` existed load
unchanged.

``save_pretrained`` copies this very file into every model folder with this head (it is
registered with ``register_for_auto_class``) and writes ``auto_map`` into ``config.json``, so
the folder loads anywhere, without goemo, the way Hub models with custom code do::

    from transformers import AutoModelForSequenceClassification, pipeline

    model = AutoModelForSequenceClassification.from_pretrained("runs/NAME/best", trust_remote_code=True)
    clf = pipeline("text-classification", model="runs/NAME/best", top_k=None, trust_remote_code=True)

goemo itself never runs a folder's copy: `goemo.models.modeling` imports the classes from here
and registers them with the Auto classes (``AutoConfig.register``), which transformers prefers
over a folder's ``auto_map``, so goemo loads these folders with ``trust_remote_code=False``.

Keep this file self-contained: no import of goemo (it must run where goemo is not installed),
nothing beyond torch and transformers.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

POOLINGS = ("mean", "cls")


class GoemoConfig(PretrainedConfig):
    """Config of goemo's classifier: the encoder's own config nested as a plain dict, and the pooling."""

    model_type = "goemo-mean-pool"

    def __init__(
        self,
        encoder: dict[str, Any] | None = None,
        pooling: str = "mean",
        classifier_dropout: float = 0.1,
        **kwargs: Any,
    ) -> None:
        self.encoder = dict(encoder or {})
        self.pooling = pooling
        self.classifier_dropout = classifier_dropout
        super().__init__(**kwargs)

    def encoder_config(self) -> PretrainedConfig:
        """The nested encoder's config object (`AutoConfig.for_model` of its ``model_type``)."""
        values = dict(self.encoder)
        model_type = values.pop("model_type", None)
        if model_type is None:
            raise ValueError("goemo model config has no encoder model_type")
        return AutoConfig.for_model(model_type, **values)


class NoPooler(nn.Module):
    """Stands in for an encoder's pooler that mean pooling never uses: no weights, outputs None."""

    def forward(self, *args: Any, **kwargs: Any) -> None:
        return None


class GoemoForSequenceClassification(PreTrainedModel):
    """Encoder + pooling (masked mean, or pooler / first token) + dropout + linear, trained with BCE on logits."""

    config_class = GoemoConfig
    base_model_prefix = "encoder"
    supports_gradient_checkpointing = True
    _supports_sdpa = True

    def __init__(self, config: GoemoConfig, encoder: PreTrainedModel | None = None) -> None:
        if config.pooling not in POOLINGS:
            raise ValueError(f"goemo model config: pooling {config.pooling!r} is not one of {POOLINGS}")
        super().__init__(config)
        self.encoder = encoder if encoder is not None else AutoModel.from_config(config.encoder_config())
        if config.pooling == "mean" and getattr(self.encoder, "pooler", None) is not None:
            # Unused by mean pooling; dropping it keeps DDP from waiting on gradients that never come.
            # A stub rather than None: some encoders (SqueezeBERT) call their pooler unconditionally.
            # cls pooling keeps it: its output is what BERT-style heads classify.
            self.encoder.pooler = NoPooler()
        hidden = self.encoder.config.hidden_size
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(hidden, len(config.id2label or {}))
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        if module is getattr(self, "classifier", None):
            module.weight.data.normal_(0.0, 0.02)
            module.bias.data.zero_()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> SequenceClassifierOutput:
        extra = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **extra)
        hidden = out.last_hidden_state
        if self.config.pooling == "cls":
            pooler_output = getattr(out, "pooler_output", None)  # None where the encoder has no pooler
            pooled = pooler_output if pooler_output is not None else hidden[:, 0]
        elif attention_mask is None:
            pooled = hidden.mean(dim=1)
        else:
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        logits = self.classifier(self.dropout(pooled))
        loss = None
        if labels is not None:
            loss = nn.functional.binary_cross_entropy_with_logits(logits.float(), labels.float())
        return SequenceClassifierOutput(loss=loss, logits=logits)
