"""The model card: ``README.md`` of every ``best/`` and every export, a Hugging Face Hub model card.

Built with huggingface_hub's public API (`ModelCardData`, `EvalResult`, `ModelCard`) and written
atomically. The YAML metadata says what the Hub needs (``library_name``, ``pipeline_tag``,
``base_model``, ``datasets``, ``license``, ``tags``, and a ``model-index`` with the measured dev
and test numbers); the text says how to load the model with plain transformers (applying
``config.thresholds``) and with goemo, the per-label precision / recall / F1 / ROC-AUC at the
tuned thresholds, how the thresholds and the epoch were chosen, the data, the configuration,
the hardware and time, and the limitations.

The builder takes plain data: a `ModelFolder` (labels, thresholds, training config, checksums,
headline metrics), optionally a run's ``summary.json`` (as a dict) and `CardFacts` (per-label
rows, split sizes, training label counts, resources), which training computes
(`goemo.training.card_facts`) and keeps in ``goemo.json`` (``card``) so that an export can
describe its source. Nothing here computes a metric.

    card = build_model_card(ModelFolder.open("runs/reproduce/best"), summary)
    write_model_card("runs/reproduce/best", card)
    # -> PosixPath('runs/reproduce/best/README.md')
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from goemo.core.errors import ModelError
from goemo.core.fileio import atomic_write_text
from goemo.core.folder import CARD_FILE, ModelFolder
from goemo.core.thresholds import PAPER_THRESHOLD
from goemo.data.taxonomy import labels_said

# The hub model each offline alias is a copy of; the tiny random model has none.
BASE_MODELS = {
    "minilm": "sentence-transformers/all-MiniLM-L6-v2",
    "all-minilm-l6-v2": "sentence-transformers/all-MiniLM-L6-v2",
}
NO_BASE_MODEL = {"tiny-random-bert"}
GOEMOTIONS_DATASET = "go_emotions"
GOEMOTIONS_IDS = frozenset({GOEMOTIONS_DATASET, "google-research-datasets/go_emotions"})  # its Hub ids
HUB_DATASETS = "https://huggingface.co/datasets/"
DATA_FILE_SUFFIXES = (".parquet", ".csv", ".json", ".jsonl", ".arrow", ".tsv", ".txt")
DEFAULT_LICENSE = "apache-2.0"
RARE_LABEL_EXAMPLES = 100  # labels with fewer training examples than this are listed as rare
# (summary key, metric_type, name, config): the model-index entries, per split.
INDEX_METRICS = (
    ("f1_macro", "f1", "Macro F1 @ {t:g}", "macro, threshold {t:g}"),
    ("f1_macro_tuned", "f1", "Macro F1 @ dev-tuned thresholds", "macro, per-label thresholds tuned on dev"),
    ("f1_micro", "f1", "Micro F1 @ {t:g}", "micro, threshold {t:g}"),
    ("auc_macro", "roc_auc", "Macro ROC-AUC", "macro"),
)
HUB_SPLITS = {"dev": "validation", "test": "test"}  # goemo's split names -> the Hub dataset's
CONFIG_KEYS = tuple(
    "model pooling max_length epochs batch_size grad_accum lr head_lr layer_decay weight_decay warmup_ratio dropout "
    "loss focal_gamma pos_weight label_smoothing ema_decay max_grad_norm threshold threshold_shrink select_metric "
    "precision seed taxonomy max_train_samples max_eval_samples preset".split()
)  # the training options the card's configuration table shows, in this order
EXAMPLE_TEXT = "Thank you so much, this made my day!"


@dataclass(frozen=True)
class LabelRow:
    """One label's scores at its decision threshold on one split (None: undefined there)."""

    label: str
    threshold: float
    precision: float | None
    recall: float | None
    f1: float | None
    auc: float | None
    support: int


@dataclass
class CardFacts:
    """What a card says beyond ``goemo.json``: measured by training, kept in ``goemo.json`` ``card``.

    ``per_label_split`` is the split the rows were scored on (test when it was evaluated, else
    dev) with the dev-tuned thresholds; ``selection`` holds ``best_epoch``, ``epochs_run``,
    ``select_metric`` and ``best_metric``; ``resources`` is ``summary.json``'s.
    """

    per_label: list[LabelRow] = field(default_factory=list)
    per_label_split: str | None = None
    split_sizes: dict[str, int] = field(default_factory=dict)
    train_label_counts: dict[str, int] = field(default_factory=dict)
    selection: dict[str, Any] = field(default_factory=dict)
    resources: dict[str, Any] = field(default_factory=dict)
    data_origin: dict[str, Any] | None = None  # `DataOrigin` as training saw it (a local path may not exist later)
    intervals: dict[str, Any] | None = None  # `goemo.scoring.bootstrap.BootstrapScores.to_dict` of the per-label rows

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CardFacts:
        """Read back `to_dict`; malformed entries raise `ModelError`."""
        try:
            rows = [LabelRow(**row) for row in data.get("per_label") or []]
            return cls(
                per_label=rows,
                per_label_split=data.get("per_label_split"),
                split_sizes={str(k): int(v) for k, v in (data.get("split_sizes") or {}).items()},
                train_label_counts={str(k): int(v) for k, v in (data.get("train_label_counts") or {}).items()},
                selection=dict(data.get("selection") or {}),
                resources=dict(data.get("resources") or {}),
                data_origin=dict(data["data_origin"]) if data.get("data_origin") else None,
                intervals=dict(data["intervals"]) if data.get("intervals") else None,
            )
        except (TypeError, ValueError, AttributeError) as e:
            raise ModelError(f"goemo.json card: malformed ({e})") from None


@dataclass(frozen=True)
class ExportInfo:
    """What an ONNX export's card says about the export."""

    quantize: str | None
    opset: int | None
    max_abs_prob_diff: float
    source: str


def base_model(model: str | None) -> str | None:
    """The Hub id of the encoder a run started from, or None (a local folder, the tiny test model).

    >>> base_model("minilm"), base_model("roberta-base"), base_model("runs/x/best"), base_model("tiny-random-bert")
    ('sentence-transformers/all-MiniLM-L6-v2', 'roberta-base', None, None)
    """
    if not model or model.lower() in NO_BASE_MODEL:
        return None
    if model.lower() in BASE_MODELS:
        return BASE_MODELS[model.lower()]
    looks_local = model.startswith((".", "/", "~")) or model.count("/") > 1 or Path(model).exists()
    return None if looks_local else model


@dataclass(frozen=True)
class DataOrigin:
    """Where a model's training data came from, as its card names it.

    ``kind``: ``goemotions`` (a GoEmotions folder, ``--data-dir``), ``hub`` (a Hugging Face
    dataset id, ``--dataset ID``), ``local`` (a local dataset folder or file, ``--dataset PATH``)
    or ``files`` (``--train``/``--dev``/``--test``). ``name`` is the folder, id, path or training
    file; ``config`` the dataset's configuration. Only a Hub dataset is linked to the Hub.
    """

    kind: str
    name: str
    config: str | None = None

    @property
    def goemotions(self) -> bool:
        """Whether the data is GoEmotions itself (a GoEmotions folder, or the Hub's go_emotions)."""
        return self.kind == "goemotions" or (self.kind == "hub" and self.name in GOEMOTIONS_IDS)

    @property
    def hub_id(self) -> str | None:
        """The dataset's Hub id, for the card's ``datasets`` and links; None for local data."""
        if self.kind == "hub":
            return self.name
        return GOEMOTIONS_DATASET if self.kind == "goemotions" else None


def data_origin(training_config: Mapping[str, Any]) -> DataOrigin:
    """Where the run in ``training_config`` read its data, judged from its options (`DataOrigin`).

    ``--dataset`` names a local dataset when it is an existing path, or looks like one (``./x``,
    ``/x``, ``~/x``, more than one ``/``, a data file's suffix); otherwise a Hub id.

    >>> data_origin({"data_dir": "data/goemotions"})
    DataOrigin(kind='goemotions', name='data/goemotions', config='simplified')
    >>> data_origin({"dataset": "./my-data"}).kind, data_origin({"dataset": "dair-ai/emotion"}).hub_id
    ('local', 'dair-ai/emotion')
    """
    dataset = training_config.get("dataset")
    config = training_config.get("dataset_config")
    if dataset:
        name = str(dataset)
        local = (
            name.startswith((".", "/", "~"))
            or name.count("/") > 1
            or "\\" in name
            or name.lower().endswith(DATA_FILE_SUFFIXES)
            or Path(name).expanduser().exists()
        )
        return DataOrigin("local" if local else "hub", name, str(config) if config else None)
    if training_config.get("train_file"):
        return DataOrigin("files", str(training_config["train_file"]))
    return DataOrigin("goemotions", str(training_config.get("data_dir") or "data/goemotions"), "simplified")


def build_model_card(
    folder: ModelFolder | str | Path,
    summary: Mapping[str, Any] | None = None,
    facts: CardFacts | None = None,
    *,
    export: ExportInfo | None = None,
    license: str = DEFAULT_LICENSE,  # noqa: A002 - the Hub's own name for it
    model_name: str | None = None,
    model_ref: str | None = None,
) -> ModelCard:
    """The Hub model card of a model folder, from plain data (see the module docstring).

    ``summary`` (a run's ``summary.json``) gives the headline numbers, the selection and the
    resources; without it they come from ``goemo.json`` (``metrics``, ``card``). ``facts``
    defaults to the folder's ``goemo.json`` ``card`` entry. ``model_ref`` is the path or Hub id
    the snippets load (default: the folder's path).
    """
    folder = folder if isinstance(folder, ModelFolder) else ModelFolder.open(folder)
    if facts is None:
        facts = CardFacts.from_dict(folder.card_facts)
    cfg = folder.training_config
    summary = dict(summary or {})
    metrics: dict[str, dict[str, Any]] = {
        k: summary[k] for k in ("dev", "test") if isinstance(summary.get(k), dict)
    } or {k: v for k, v in folder.metrics.items() if k in ("dev", "test") and isinstance(v, dict)}
    selection: dict[str, Any] = {
        **facts.selection,
        **{k: summary[k] for k in ("best_epoch", "select_metric", "best_metric") if k in summary},
    }
    if isinstance(summary.get("epochs"), list):
        selection["epochs_run"] = len(summary["epochs"])
    resources = summary.get("resources") or facts.resources
    threshold = float(cfg.get("threshold", summary.get("threshold", folder.global_threshold)))
    origin = DataOrigin(**facts.data_origin) if facts.data_origin else data_origin(cfg)
    goemotions = origin.goemotions
    name = model_name or default_model_name(folder.path, export)
    data = ModelCardData(
        language="en" if goemotions else None,
        license=license,
        library_name="onnx" if export else "transformers",
        pipeline_tag="text-classification",
        base_model=base_model(_encoder_name(folder, cfg)),
        datasets=[origin.hub_id] if origin.hub_id else None,
        tags=_tags(folder, goemotions, export),
        metrics=["f1", "roc_auc"],
        model_name=name,
        eval_results=_eval_results(metrics, threshold, origin) or None,
    )
    ref = model_ref or str(folder.path)
    body = "\n\n".join(
        part
        for part in (
            _title(name, folder, cfg, export, origin),
            _usage(folder, ref, export),
            _results(metrics, threshold),
            _per_label(facts),
            _choices(folder, selection, threshold),
            _data_section(folder, facts, origin, cfg),
            _config_section(cfg),
            _resources_section(resources),
            _limitations(facts, goemotions),
        )
        if part
    )
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}\n")


def write_model_card(folder: str | Path, card: ModelCard) -> Path:
    """Write ``card`` as ``folder/README.md``, atomically."""
    return atomic_write_text(Path(folder) / CARD_FILE, str(card))


# --------------------------------------------------------------------------- metadata


def default_model_name(path: str | Path, export: ExportInfo | None = None) -> str:
    """``goemo-RUN`` for ``runs/RUN/best`` (``goemo-RUN-onnx-int8`` for its int8 export), else ``goemo-FOLDER``.

    >>> default_model_name("runs/reproduce/best"), default_model_name("models/x", ExportInfo("int8", 17, 0.0, "y"))
    ('goemo-reproduce', 'goemo-x-onnx-int8')
    """
    folder = Path(path).resolve()
    stem = folder.parent.name if folder.name == "best" or folder.name.startswith("best-onnx") else folder.name
    name = f"goemo-{stem}"
    if export is not None:
        name += "-onnx" + (f"-{export.quantize}" if export.quantize else "")
    return name


def _goemo_pooling(folder: ModelFolder) -> str | None:
    """``mean`` or ``cls`` for goemo's own head (custom code), ``None`` for the family's own head.

    goemo's head also pools the first token (``cls``) for families whose own head has no
    classifier-dropout setting (SqueezeBERT, MPNet; `goemo.models.modeling.CLS_HEAD_DROPOUT`).
    """
    if folder.config.get("model_type") != "goemo-mean-pool":
        return None
    return str(folder.config.get("pooling", "mean"))


def _tags(folder: ModelFolder, goemotions: bool, export: ExportInfo | None) -> list[str]:
    tags = ["goemo", "text-classification", "multi-label-classification", "emotion-classification"]
    if goemotions:
        tags.append("go_emotions")
    if folder.config.get("model_type") == "goemo-mean-pool":
        tags += ["custom_code"] + (["mean-pooling"] if _goemo_pooling(folder) == "mean" else [])
    if export is not None:
        tags += ["onnx"] + ([export.quantize] if export.quantize else [])
    return tags


def _eval_results(metrics: Mapping[str, Mapping[str, Any]], threshold: float, origin: DataOrigin) -> list[EvalResult]:
    on_data = partial(
        EvalResult,
        task_type="text-classification",
        task_name="Multi-label emotion classification",
        dataset_type=origin.hub_id or "custom",
        dataset_name="GoEmotions"
        if origin.goemotions
        else origin.hub_id or Path(origin.name.rstrip("/\\")).name or origin.name,
        dataset_config=origin.config if origin.hub_id else None,
    )
    return [
        on_data(
            dataset_split=HUB_SPLITS.get(split, split),
            metric_type=metric_type,
            metric_value=float(values[key]),
            metric_name=metric_name.format(t=threshold),
            metric_config=metric_config.format(t=threshold),
        )
        for split, values in metrics.items()
        for key, metric_type, metric_name, metric_config in INDEX_METRICS
        if _finite(values.get(key))
    ]


# --------------------------------------------------------------------------- text


def _encoder_name(folder: ModelFolder, cfg: Mapping[str, Any]) -> str | None:
    """The encoder a model was trained from: ``--model``, or for ``--init-from`` the source's own."""
    init = folder.init_from
    if init is not None:
        return init.get("model")
    return cfg.get("model")


def _title(
    name: str, folder: ModelFolder, cfg: Mapping[str, Any], export: ExportInfo | None, origin: DataOrigin
) -> str:
    head = {
        "mean": "goemo's mean-pooling head",
        "cls": "goemo's classification head (the encoder's pooler, dropout, linear)",
    }.get(_goemo_pooling(folder) or "", "its own classification head")
    encoder = base_model(_encoder_name(folder, cfg)) or _encoder_name(folder, cfg) or "a transformer encoder"
    if origin.goemotions:
        data = "GoEmotions (58k English Reddit comments, 27 emotions + neutral)"
    elif origin.kind == "hub":
        data = f"the Hugging Face dataset `{origin.name}`"
    elif origin.kind == "local":
        data = f"a local dataset (`{origin.name}`)"
    else:
        data = "its own data"
    lines = [
        f"# {name}",
        "",
        f"A multi-label emotion classifier ({folder.num_labels} labels, {labels_said(folder.taxonomy, code=True)}): "
        f"`{encoder}` with {head}, fine-tuned on {data} with goemo. Each label "
        f"gets its own sigmoid probability; a label is predicted when its probability is above its "
        f"threshold (`config.json` `thresholds`, tuned on the dev split).",
    ]
    init = folder.init_from
    if init is not None:
        kept = "its classification head continued (the same labels)"
        head = kept if init.get("labels_kept") else "a new classification head for these labels"
        lines += ["", f"Fine-tuned from `{init['path']}`: its encoder, with {head}."]
    if export is not None:
        kind = "int8 (dynamically quantised weights)" if export.quantize == "int8" else "fp32"
        lines += [
            "",
            f"**This is an ONNX export, {kind}**, of `{export.source}` (opset {export.opset}): it runs with "
            f"ONNX Runtime alone, without PyTorch. Largest probability difference from the PyTorch "
            f"model on goemo's probe texts: {export.max_abs_prob_diff:.1e}. The numbers below were "
            f"measured on the PyTorch model it was exported from.",
        ]
    return "\n".join(lines)


def _usage(folder: ModelFolder, ref: str, export: ExportInfo | None) -> str:
    max_length = folder.max_length or 512
    if export is not None:
        return "\n".join(
            [
                "## How to use",
                "",
                "With ONNX Runtime and the tokenizer (no PyTorch, no goemo):",
                "",
                "```python",
                "import json",
                "import numpy as np",
                "import onnxruntime as ort",
                "from tokenizers import Tokenizer",
                "",
                f'folder = "{ref}"',
                'cfg = json.load(open(f"{folder}/config.json"))',
                'tok = Tokenizer.from_file(f"{folder}/tokenizer.json")',
                f"tok.enable_truncation({max_length})",
                "tok.enable_padding()",
                'session = ort.InferenceSession(f"{folder}/model.onnx")',
                f'enc = tok.encode_batch(["{EXAMPLE_TEXT}"])',
                'feed = {"input_ids": np.array([e.ids for e in enc], dtype=np.int64),',
                '        "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64)}',
                'probs = 1 / (1 + np.exp(-session.run(["logits"], feed)[0]))',
                'names = [cfg["id2label"][str(i)] for i in range(len(cfg["thresholds"]))]',
                'print([[n for n, p, t in zip(names, row, cfg["thresholds"]) if p > t] for row in probs])',
                "```",
                "",
                "With goemo (`pip install goemo`):",
                "",
                "```python",
                "from goemo import EmotionClassifier",
                "",
                f'clf = EmotionClassifier.load("{ref}")   # picks ONNX Runtime by itself',
                f'clf.predict(["{EXAMPLE_TEXT}"])',
                "```",
            ]
        )
    remote = folder.config.get("model_type") == "goemo-mean-pool"
    trust = ", trust_remote_code=True" if remote else ""
    lines = [
        "## How to use",
        "",
        "With plain transformers (no goemo), applying the per-label thresholds from `config.json`:",
        "",
        "```python",
        "from transformers import pipeline",
        "",
        f'clf = pipeline("text-classification", model="{ref}", top_k=None{trust})',
        "cfg = clf.model.config",
        "thresholds = {cfg.id2label[i]: t for i, t in enumerate(cfg.thresholds)}",
        f'scores = clf(["{EXAMPLE_TEXT}"], truncation=True, max_length={max_length})[0]',
        'print([s["label"] for s in scores if s["score"] > thresholds[s["label"]]])',
        "```",
        "",
        "The pipeline applies a sigmoid per label (`problem_type: multi_label_classification`); "
        f"`config.thresholds` are in `id2label` order and a label is predicted when its score is above "
        f"its threshold (`threshold_convention`). Texts were truncated to {max_length} tokens in training.",
    ]
    if remote:
        lines += [
            "",
            "The mean-pooling head is goemo's own code: `modeling_goemo.py` in this folder (torch and "
            "transformers only), which `trust_remote_code=True` lets transformers run, as for any Hub model "
            "with custom code. goemo itself loads the folder without it.",
        ]
    lines += [
        "",
        "With goemo (`pip install goemo`), which applies the same thresholds:",
        "",
        "```python",
        "from goemo import EmotionClassifier",
        "",
        f'clf = EmotionClassifier.load("{ref}")  # a local folder (snapshot_download a Hub repo first)',
        f'clf.predict(["{EXAMPLE_TEXT}"])  # labels above their thresholds, highest score first',
        "```",
        "",
        f"or `goemo predict --model {ref} --all-scores 'some text'`.",
    ]
    return "\n".join(lines)


def _results(metrics: Mapping[str, Mapping[str, Any]], threshold: float) -> str:
    if not metrics:
        return ""
    splits = [s for s in ("test", "dev") if s in metrics]
    header = "| metric | " + " | ".join(splits) + " |"
    lines = ["## Results", "", header, "|---|" + "---:|" * len(splits)]
    for key, _, metric_name, _ in INDEX_METRICS:
        cells = [_num(metrics[s].get(key)) for s in splits]
        lines.append(f"| {metric_name.format(t=threshold)} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "On dev, the macro F1 at the dev-tuned thresholds is scored on the split they were tuned on, so it "
        "flatters; the test numbers are the honest ones."
        + (f" Threshold {threshold:g} is the GoEmotions paper's." if threshold == PAPER_THRESHOLD else ""),
    ]
    return "\n".join(lines)


def _per_label(facts: CardFacts) -> str:
    if not facts.per_label:
        return ""
    split = facts.per_label_split or "dev"
    counts = facts.train_label_counts
    bands = facts.intervals or {}
    per_label = bands.get("f1_per_label") or {}
    lines = [
        "## Per-label results",
        "",
        f"On the {split} split, at the per-label thresholds tuned on dev ({len(facts.per_label)} labels):",
        "",
        "| label | threshold | precision | recall | F1 |"
        + (" F1, 95% interval |" if bands else "")
        + " ROC-AUC | support | train examples |",
        "|---|---:|---:|---:|---:|" + ("---:|" if bands else "") + "---:|---:|---:|",
    ]
    for r in facts.per_label:
        train = f"{counts[r.label]:,}" if r.label in counts else "–"
        band = f" {_span(per_label.get(r.label))} |" if bands else ""
        lines.append(
            f"| {r.label} | {r.threshold:.3f} | {_num(r.precision)} | {_num(r.recall)} | {_num(r.f1)} |{band} "
            f"{_num(r.auc)} | {r.support:,} | {train} |"
        )
    lines += ["", "–: undefined on this split (no positive example)."]
    if bands:
        lines += [
            "",
            f"Macro F1 {_num(bands['f1_macro'].get('estimate'))} ({_span(bands['f1_macro'])}), macro ROC-AUC "
            f"{_num(bands['auc_macro'].get('estimate'))} ({_span(bands['auc_macro'])}): "
            f"{bands['confidence']:.0%} intervals of a percentile bootstrap, {bands['n_resamples']:,} resamples "
            f"of the {bands['texts']:,} texts (seed {bands['seed']}).",
        ]
    return "\n".join(lines)


def _span(interval: Mapping[str, Any] | None) -> str:
    """``0.505–0.556`` from a bootstrap interval's dict, ``–`` where undefined."""
    if not interval or not _finite(interval.get("low")) or not _finite(interval.get("high")):
        return "–"
    return f"{interval['low']:.3f}–{interval['high']:.3f}"


def _choices(folder: ModelFolder, selection: Mapping[str, Any], threshold: float) -> str:
    lines = ["## How the thresholds and the epoch were chosen", ""]
    best, run = selection.get("best_epoch"), selection.get("epochs_run")
    metric = selection.get("select_metric")
    if best is not None:
        of = f" of {run}" if run else ""
        by = f" by `{metric}` on the dev split" if metric else " on the dev split"
        score = f" ({_num(selection.get('best_metric'))})" if _finite(selection.get("best_metric")) else ""
        lines.append(f"- **Epoch**: the weights of epoch {best}{of}, chosen{by}{score}; test was not looked at.")
    tuned = folder.tuned
    if tuned is not None:
        lo, hi, n = tuned.grid
        shrink = (
            f", then pulled {tuned.shrink:.0%} of the way towards the best single threshold" if tuned.shrink else ""
        )
        fallback = (
            f" Labels with too few dev examples to tune ({', '.join(tuned.fallback_labels)}) keep {tuned.fallback:g}."
            if tuned.fallback_labels
            else ""
        )
        lines.append(
            f"- **Thresholds**: one per label, each maximising that label's F1 on the {tuned.split} split over "
            f"{n} values from {lo:g} to {hi:g}{shrink}.{fallback} Never tuned on test."
        )
    else:
        lines.append(f"- **Thresholds**: no per-label tuning; every label uses {threshold:g}.")
    lines.append("- A label is predicted when its probability is strictly above its threshold (`prob > threshold`).")
    return "\n".join(lines)


def _data_section(folder: ModelFolder, facts: CardFacts, origin: DataOrigin, cfg: Mapping[str, Any]) -> str:
    lines = ["## Training data", ""]
    configuration = f", configuration `{origin.config}`" if origin.config else ""
    about = "English Reddit comments, each labelled by 3 or more raters with any of 27 emotions or neutral."
    if origin.kind == "goemotions":
        link = f"[GoEmotions]({HUB_DATASETS}{GOEMOTIONS_DATASET})"
        lines.append(f"{link} (Demszky et al., 2020), the simplified train / dev / test split: {about}")
    elif origin.kind == "hub":
        lines.append(f"The Hugging Face dataset [`{origin.name}`]({HUB_DATASETS}{origin.name}){configuration}.")
        if origin.goemotions:
            lines.append(f"GoEmotions (Demszky et al., 2020): {about}")
    elif origin.kind == "local":
        lines.append(f"A local dataset: `{origin.name}`{configuration} (not from the Hugging Face Hub).")
    else:
        files = ", ".join(f"`{cfg[k]}`" for k in ("train_file", "dev_file", "test_file") if cfg.get(k))
        lines.append(f"Files: {files or 'given from Python'}.")
    sampled = [k for k in ("max_train_samples", "max_eval_samples") if cfg.get(k)]
    if sampled:
        lines.append(
            "Sampled: " + ", ".join(f"`{k}` {cfg[k]:,}" for k in sampled) + " (a seeded random sample; a quick run)."
        )
    cleaning = folder.meta.get("cleaning")
    if isinstance(cleaning, dict):
        lines.append(_cleaning_line(cleaning))
    checksums = folder.data_checksums
    splits = [s for s in ("train", "dev", "test") if s in checksums or s in facts.split_sizes]
    if splits:
        lines += ["", "| split | texts | sha256 of the texts and labels |", "|---|---:|---|"]
        for s in splits:
            size = facts.split_sizes.get(s)
            lines.append(f"| {s} | {'' if size is None else f'{size:,}'} | `{checksums.get(s, '')}` |")
    return "\n".join(lines)


def _cleaning_line(cleaning: Mapping[str, Any]) -> str:
    """What ``--exclude`` / ``--corrections`` did to the training split (``goemo.json`` ``cleaning``).

    >>> _cleaning_line({"texts_excluded": 3, "labels_changed": 1, "added": 1, "removed": 0,
    ...                 "corrections": {"file": "/data/fix.csv", "sha256": "ab"}})
    'Cleaned with: 3 texts excluded, 1 labels changed (1 added, 0 removed), from `/data/fix.csv` sha256 `ab`. Dev and test were not changed.'
    """
    files = [
        f"`{entry.get('file')}` sha256 `{entry.get('sha256')}`"
        for entry in (cleaning.get("exclude"), cleaning.get("corrections"))
        if isinstance(entry, Mapping)
    ]

    def count(key: str) -> str:
        value = cleaning.get(key)
        return f"{value:,}" if isinstance(value, int) else "?"

    return (
        f"Cleaned with: {count('texts_excluded')} texts excluded, {count('labels_changed')} labels changed "
        f"({count('added')} added, {count('removed')} removed), from {' and '.join(files) or 'unnamed files'}. "
        "Dev and test were not changed."
    )


def _config_section(cfg: Mapping[str, Any]) -> str:
    rows = [(k, cfg[k]) for k in CONFIG_KEYS if cfg.get(k) is not None]
    if cfg.get("loss") != "focal":  # the focal exponent means nothing for another loss
        rows = [(k, v) for k, v in rows if k != "focal_gamma"]
    if not rows:
        return ""
    lines = ["## Training configuration", "", "| setting | value |", "|---|---|"]
    lines += [f"| `{k}` | {_cfg(v)} |" for k, v in rows]
    lines += ["", "The whole configuration is `training_config` in `goemo.json`."]
    return "\n".join(lines)


def _resources_section(resources: Mapping[str, Any]) -> str:
    if not resources:
        return ""
    hw = resources.get("hardware") or {}
    gpus = resources.get("gpu_memory") or []
    lines = ["## Hardware and time", ""]
    machine = [
        f"{hw['cpu']}" if hw.get("cpu") else None,
        f"{hw['cpu_cores']} CPU cores" if hw.get("cpu_cores") else None,
    ]
    if gpus:
        names = sorted({str(g.get("name", "GPU")) for g in gpus if isinstance(g, dict)}) or ["GPU"]
        machine.append(f"{len(gpus)} x {', '.join(names)}")
    lines.append("- Machine: " + (", ".join(m for m in machine if m) or "unknown"))
    if resources.get("num_processes") or resources.get("precision"):
        precision = resources.get("precision") or "?"
        precision = "fp32" if precision == "no" else precision  # Accelerate's name for no mixed precision
        lines.append(f"- Processes: {resources.get('num_processes', 1)}, precision {precision}")
    if resources.get("wall_time_s") is not None:
        epochs = resources.get("epoch_time_s") or []
        per_epoch = f" (epochs: {', '.join(_duration(t) for t in epochs)})" if epochs else ""
        lines.append(f"- Wall time: {_duration(resources['wall_time_s'])}{per_epoch}")
    if resources.get("peak_rss_mb") is not None:
        lines.append(f"- Peak memory (RSS): {resources['peak_rss_mb']:,.0f} MB")
    versions = [f"{k} {hw[k]}" for k in ("python", "torch", "transformers") if hw.get(k)]
    if versions:
        lines.append("- Software: " + ", ".join(versions))
    return "\n".join(lines)


def _limitations(facts: CardFacts, goemotions: bool) -> str:
    lines = ["## Limitations", ""]
    if goemotions:
        lines += [
            "- Trained on English Reddit comments (2005-2019, curated to remove offensive content): other "
            "languages, domains and registers (news, reviews, speech transcripts) will score worse.",
            "- GoEmotions labels are noisy: raters often disagree on which emotions a comment expresses, and "
            "subtle or sarcastic comments are hard even for people, so F1 well below 1 partly reflects the labels.",
        ]
    else:
        lines.append("- The model knows only what its training files show; check it on your own texts.")
    rare = sorted((n, c) for n, c in facts.train_label_counts.items() if c < RARE_LABEL_EXAMPLES)
    if rare:
        listed = ", ".join(f"{n} ({c})" for n, c in sorted(rare, key=lambda x: x[1]))
        lines.append(
            f"- Rare labels, under {RARE_LABEL_EXAMPLES} training examples: {listed}. Their scores and "
            f"thresholds rest on few examples and vary most between runs."
        )
    lines.append(
        "- Predictions are probabilities from one model; do not use them to make decisions about people "
        "without human review."
    )
    return "\n".join(lines)


# --------------------------------------------------------------------------- formatting


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _num(value: Any, digits: int = 3) -> str:
    return f"{float(value):.{digits}f}" if _finite(value) else "–"


def _cfg(value: Any) -> str:
    if isinstance(value, Sequence) and not isinstance(value, str):
        return ", ".join(map(str, value)) or "none"
    return str(value)


def _duration(seconds: Any) -> str:
    if not _finite(seconds):
        return "?"
    s = float(seconds)
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"
