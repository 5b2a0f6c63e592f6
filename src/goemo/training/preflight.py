"""What can be known wrong about a training run before its first step, checked before its folder is touched.

Otherwise ``--max-length 4000`` on a 512-position encoder trains happily on short texts and
only the saved ``best/`` is refused, a whole run (or sweep) spent. `goemo.training.loop.train`
checks, in order, the trackers, the folder, ``--init-from`` (`check_init_from`), the encoder
(`check_encoder`) and the data; each failure is one `GoemoError` line.
"""

from __future__ import annotations

from pathlib import Path

from goemo.core.config import TrainConfig
from goemo.core.errors import ConfigError, ModelError
from goemo.core.folder import CONFIG_FILE, ModelFolder, encoder_positions
from goemo.models.modeling import encoder_settings, load_tokenizer
from goemo.predict.runner import tokenizer_limit


def check_init_from(config: TrainConfig) -> None:
    """Refuse an ``--init-from`` folder that is not a trained classifier (weights, labels, tokenizer); no weights loaded.

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
    """Refuse a ``max_length`` the encoder (``--init-from``'s, else ``--model``'s) cannot take: the limits a saved
    folder is held to (positions less RoBERTa's offset, the tokenizer's ``model_max_length``).

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
