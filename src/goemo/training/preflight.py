"""What can be known wrong about a training run before its first step, checked before its folder is touched.

A setting the encoder cannot take used to surface only at the end: ``--max-length 4000`` on a
512-position encoder trains happily on short texts, then the saved ``best/`` is refused (by the
model card, by ``goemo predict``), so a whole run, or every trial of a sweep, is spent for a
folder that cannot be used. `goemo.training.loop.train`, which the sweep runner also calls for
each trial, checks the run's configuration before it takes the folder, in this order:

- the option values themselves (`TrainConfig.validate`, on construction: metric names, ranges);
- the trackers' names and packages (`goemo.training.tracking.check_trackers`);
- the folder: in use by another run, or holding one without ``--resume``/``--overwrite``
  (`goemo.core.run_folder.RunFolder.check_start`; ``goemo train`` asks before importing torch);
- the folder of ``--init-from``: a trained classifier with PyTorch weights, labels and a
  tokenizer (`check_init_from`);
- the encoder: that it is there (hub cache or folder), and that ``max_length`` fits its positions
  and its tokenizer's own limit (`check_encoder`);
- the data source: read and checked as the run will use it (`goemo.training.data`).

Each failure is one `GoemoError` line; nothing is written to the run folder.
"""

from __future__ import annotations

from pathlib import Path

from goemo.core.config import TrainConfig
from goemo.core.errors import ConfigError, ModelError
from goemo.core.folder import CONFIG_FILE, ModelFolder, encoder_positions
from goemo.models.modeling import encoder_settings, load_tokenizer
from goemo.predict.runner import tokenizer_limit


def check_init_from(config: TrainConfig) -> None:
    """Refuse an ``--init-from`` folder that is not a trained classifier goemo can continue from.

    It must be a folder with ``config.json``, PyTorch weights (safetensors, whole and fitting
    ``config.json``), label names (``id2label``) and a tokenizer: what ``goemo train`` writes as
    ``runs/NAME/best``, or any Hugging Face classification checkpoint. An ONNX export, a TF-IDF
    model or a bare encoder is refused with one line saying what to use instead. Reads headers
    and JSON only (no weights loaded).

    >>> check_init_from(TrainConfig(init_from="runs/no-such-run/best"))
    Traceback (most recent call last):
    ...
    goemo.core.errors.ModelError: --init-from runs/no-such-run/best: no such folder (expected a trained model folder, e.g. runs/NAME/best)
    """
    if not config.init_from:
        return
    where = f"--init-from {config.init_from}"
    path = Path(config.init_from)
    if not path.is_dir():
        raise ModelError(f"{where}: no such folder (expected a trained model folder, e.g. runs/NAME/best)")
    if not (path / CONFIG_FILE).is_file() and (path / "best" / CONFIG_FILE).is_file():
        raise ModelError(f"{where}: a run folder; give its model folder, --init-from {path / 'best'}")
    try:
        folder = ModelFolder.open(path)
        if not (path / CONFIG_FILE).is_file():
            raise ModelError(f"no {CONFIG_FILE}: not a goemo or Hugging Face model folder")
        kind = folder.kind
        if kind != "transformer":
            what = "an ONNX export" if kind == "onnx" else "a TF-IDF model"
            raise ModelError(f"{what}, not PyTorch weights; start from the folder it was made from")
        archs = folder.config.get("architectures") or []
        if folder.config.get("model_type") != "goemo-mean-pool" and not any(
            str(a).endswith("ForSequenceClassification") for a in archs
        ):
            raise ModelError(
                f"not a trained classifier (config.json architectures: {', '.join(map(str, archs)) or 'none'}); "
                f"to start from a plain encoder give --model {config.init_from}"
            )
        _ = folder.label_names
        folder.check_tokenizer()
        folder.check_weights()
    except ModelError as e:
        message = str(e)
        if message.startswith(str(path)):  # the folder's own errors name it first: name it once
            message = message[len(str(path)) :].lstrip(": ")
        raise ModelError(f"{where}: {message}") from None


def check_encoder(config: TrainConfig) -> None:
    """Refuse a ``max_length`` the encoder cannot take, from its ``config.json`` and tokenizer (no weights loaded).

    The encoder is ``--init-from``'s when given (checked first, `check_init_from`), else ``--model``'s.

    The limit is the encoder's positions (``max_position_embeddings``, less RoBERTa's offset) and,
    when smaller, the tokenizer's ``model_max_length``: the same limits a saved model folder is
    held to, so a run that passes here leaves a ``best/`` that ``goemo predict`` takes.

    >>> check_encoder(TrainConfig(model="tiny-random-bert", max_length=4000))
    Traceback (most recent call last):
    ...
    goemo.core.errors.ConfigError: max_length=4000: tiny-random-bert takes at most 512 tokens (its config.json max_position_embeddings 512); give --max-length 512 or less
    """
    check_init_from(config)
    source = config.encoder_source
    settings = encoder_settings(source, config.trust_remote_code)
    positions = encoder_positions(settings, f"{source}: config.json max_position_embeddings")
    limits: list[tuple[int, str]] = []
    if positions is not None:
        value, offset = positions
        limits.append(
            (value - offset, f"its config.json max_position_embeddings {value}" + (f" less {offset}" if offset else ""))
        )
    tokenizer = load_tokenizer(source, config.trust_remote_code)
    most = tokenizer_limit(tokenizer, f"{source}: tokenizer_config.json")
    if most is not None:
        limits.append((most, f"its tokenizer's model_max_length {most}"))
    if not limits:
        return
    limit, reason = min(limits)
    if config.max_length > limit:
        raise ConfigError(
            f"max_length={config.max_length}: {source} takes at most {limit} tokens ({reason}); "
            f"give --max-length {limit} or less"
        )
