"""The paper's label-relation regularisers: relation matrices, the penalty, and the loss wiring."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from goemo.core.config import TrainConfig
from goemo.core.errors import ConfigError
from goemo.data.taxonomy import load_taxonomy
from goemo.training.label_relations import correlation_relations, relation_penalty, sentiment_relations
from goemo.training.losses import loss_function

LABELS = load_taxonomy("goemotions").labels


def test_sentiment_relations_follow_the_sentiment_groups() -> None:
    rel = sentiment_relations(LABELS)
    i = {name: k for k, name in enumerate(LABELS)}
    assert rel[i["joy"], i["love"]] == 1  # both positive
    assert rel[i["joy"], i["anger"]] == -1  # positive vs negative
    assert rel[i["surprise"], i["confusion"]] == 1  # both ambiguous
    assert rel[i["surprise"], i["grief"]] == -1
    assert not rel[i["neutral"]].any() and not rel[:, i["neutral"]].any()
    assert not np.diag(rel).any()
    np.testing.assert_array_equal(rel, rel.T)
    # 12 positive, 11 negative, 4 ambiguous: same-group ordered pairs without the diagonal.
    assert (rel == 1).sum() == 12 * 11 + 11 * 10 + 4 * 3


def test_sentiment_relations_refuse_labels_outside_goemotions() -> None:
    with pytest.raises(ConfigError, match="sentiment_reg"):
        sentiment_relations(["spam", "ham", "joy"])


def test_correlation_relations_are_pearson_without_neutral_or_diagonal() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random((500, 4)) < [0.3, 0.2, 0.5, 0.4]).astype(np.uint8)
    y[:, 1] |= y[:, 0]  # labels 0 and 1 co-occur: a clearly positive correlation
    names = ["a", "b", "c", "neutral"]
    rel = correlation_relations(y, names)
    expected = np.corrcoef(y.T.astype(float))
    np.testing.assert_allclose(rel[:3, :3][~np.eye(3, dtype=bool)], expected[:3, :3][~np.eye(3, dtype=bool)], atol=1e-6)
    assert rel[0, 1] > 0.3
    assert not rel[3].any() and not rel[:, 3].any() and not np.diag(rel).any()


def test_a_label_that_never_occurs_relates_to_nothing() -> None:
    y = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0]], dtype=np.uint8)
    rel = correlation_relations(y, ["a", "b", "c"])
    assert np.isfinite(rel).all() and not rel[2].any() and not rel[:, 2].any()


def test_penalty_is_the_mean_weighted_squared_gap() -> None:
    rng = np.random.default_rng(1)
    p = rng.random((3, 4))
    r = rng.normal(size=(4, 4))
    brute = np.mean([[[r[i, j] * (p[b, i] - p[b, j]) ** 2 for j in range(4)] for i in range(4)] for b in range(3)])
    got = relation_penalty(torch.tensor(p), torch.tensor(r))
    assert float(got) == pytest.approx(brute)


def test_penalty_gradient_pulls_related_labels_together_and_pushes_opposed_apart() -> None:
    probs = torch.tensor([[0.9, 0.2]], requires_grad=True)
    relation_penalty(probs, torch.tensor([[0.0, 1.0], [1.0, 0.0]])).backward()
    assert probs.grad[0, 0] > 0 > probs.grad[0, 1]  # descent lowers the high one, raises the low one
    probs.grad = None
    relation_penalty(probs, torch.tensor([[0.0, -1.0], [-1.0, 0.0]])).backward()
    assert probs.grad[0, 0] < 0 < probs.grad[0, 1]


@pytest.mark.parametrize("field", ["sentiment_reg", "correlation_reg"])
def test_loss_adds_the_weighted_penalty(field) -> None:
    rng = np.random.default_rng(2)
    train_labels = (rng.random((200, len(LABELS))) < 0.1).astype(np.uint8)
    logits = torch.tensor(rng.normal(size=(8, len(LABELS))), dtype=torch.float32)
    targets = torch.tensor(rng.random((8, len(LABELS))) < 0.1, dtype=torch.float32)
    plain = loss_function(TrainConfig(loss="focal"), train_labels, LABELS)
    regularised = loss_function(TrainConfig(loss="focal", **{field: 0.5}), train_labels, LABELS)
    rel = sentiment_relations(LABELS) if field == "sentiment_reg" else correlation_relations(train_labels, LABELS)
    penalty = relation_penalty(torch.sigmoid(logits), torch.from_numpy(rel))
    assert float(regularised(logits, targets)) == pytest.approx(float(plain(logits, targets) + 0.5 * penalty), rel=1e-5)
    assert float(penalty) != 0


def test_negative_weights_are_refused() -> None:
    with pytest.raises(ConfigError, match="correlation_reg"):
        TrainConfig(correlation_reg=-1)
