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
- the encoder: that it is there (hub cache or folder), and that ``max_length`` fits its positions
  and its tokenizer's own limit (`check_encoder`);
- the data source: read and checked as the run will use it (`goemo.training.data`).

Each failure is one `GoemoError` line; nothing is written to the run folder.
"""

from __future__ import annotations

from goemo.core.config import TrainConfig
from goemo.core.errors import ConfigError
from goemo.core.folder import encoder_positions
from goemo.models.modeling import encoder_settings, load_tokenizer
from goemo.predict.runner import tokenizer_limit


def check_encoder(config: TrainConfig) -> None:
    """Refuse a ``max_length`` the encoder cannot take, from its ``config.json`` and tokenizer (no weights loaded).

    The limit is the encoder's positions (``max_position_embeddings``, less RoBERTa's offset) and,
    when smaller, the tokenizer's ``model_max_length``: the same limits a saved model folder is
    held to, so a run that passes here leaves a ``best/`` that ``goemo predict`` takes.

    >>> check_encoder(TrainConfig(model="tiny-random-bert", max_length=4000))
    Traceback (most recent call last):
    ...
    goemo.core.errors.ConfigError: max_length=4000: tiny-random-bert takes at most 512 tokens (its config.json max_position_embeddings 512); give --max-length 512 or less
    """
    settings = encoder_settings(config.model, config.trust_remote_code)
    positions = encoder_positions(settings, f"{config.model}: config.json max_position_embeddings")
    limits: list[tuple[int, str]] = []
    if positions is not None:
        value, offset = positions
        limits.append(
            (value - offset, f"its config.json max_position_embeddings {value}" + (f" less {offset}" if offset else ""))
        )
    tokenizer = load_tokenizer(config.model, config.trust_remote_code)
    most = tokenizer_limit(tokenizer, f"{config.model}: tokenizer_config.json")
    if most is not None:
        limits.append((most, f"its tokenizer's model_max_length {most}"))
    if not limits:
        return
    limit, source = min(limits)
    if config.max_length > limit:
        raise ConfigError(
            f"max_length={config.max_length}: {config.model} takes at most {limit} tokens ({source}); "
            f"give --max-length {limit} or less"
        )
