import numpy as np
import pytest

from goemo.data.batching import LengthBucketBatches, collate, encode_split, eval_batches
from goemo.models.modeling import load_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("minilm")


def test_token_cache_hit_and_key(tmp_path, goemotions_splits, tokenizer) -> None:
    dev = goemotions_splits["dev"].sample(500, seed=0)
    first = encode_split(dev, tokenizer, 32, tmp_path)
    files = list((tmp_path / "tokens").glob("*.npz"))
    assert len(files) == 1
    again = encode_split(dev, tokenizer, 32, tmp_path)
    assert np.array_equal(first.flat_ids, again.flat_ids)
    # the cache is keyed by max length and data: both make new entries
    encode_split(dev, tokenizer, 16, tmp_path)
    encode_split(dev.sample(100, seed=1), tokenizer, 32, tmp_path)
    assert len(list((tmp_path / "tokens").glob("*.npz"))) == 3
    # ids match a direct tokenisation, truncated to max_length
    direct = tokenizer(dev.texts[:5], truncation=True, max_length=32)["input_ids"]
    assert [list(first.ids(i)) for i in range(5)] == direct
    assert first.lengths.max() <= 32


def test_buckets_cover_each_example_once_and_reduce_padding() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 60, size=1000)
    s = LengthBucketBatches(lengths, 32, seed=7)
    s.set_epoch(0)
    batches = list(s)
    assert len(batches) == len(s)
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    padded = sum(len(b) * lengths[b].max() for b in batches)
    random_batches = np.array_split(rng.permutation(1000), len(batches))
    padded_random = sum(len(b) * lengths[b].max() for b in random_batches)
    assert padded < 0.8 * padded_random


def test_order_is_a_function_of_seed_and_epoch_and_resume_skips() -> None:
    lengths = np.arange(200) % 17 + 1
    a = LengthBucketBatches(lengths, 8, seed=1)
    b = LengthBucketBatches(lengths, 8, seed=1)
    a.set_epoch(3)
    b.set_epoch(3, start=5)
    full = [x.tolist() for x in a]
    assert [x.tolist() for x in b] == full[5:]
    a.set_epoch(4)
    assert [x.tolist() for x in a] != full  # a new epoch reshuffles


def test_sharding_gives_equal_counts_and_covers_all() -> None:
    lengths = np.arange(101) % 9 + 1
    shards = []
    for rank in range(2):
        s = LengthBucketBatches(lengths, 10, seed=0, rank=rank, world_size=2)
        s.set_epoch(0)
        shards.append(list(s))
    assert len(shards[0]) == len(shards[1])
    covered = np.concatenate([np.concatenate(x) for x in shards])
    assert set(covered.tolist()) == set(range(101))


def test_eval_batches_partition_without_duplicates() -> None:
    lengths = np.arange(103) % 11
    parts = [np.concatenate(eval_batches(lengths, 8, r, 2)) for r in range(2)]
    both = np.concatenate(parts)
    assert len(both) == 103 and len(set(both.tolist())) == 103


def test_collate_pads_to_batch_max(goemotions_splits, tokenizer, tmp_path) -> None:
    enc = encode_split(goemotions_splits["dev"].sample(50, seed=0), tokenizer, 64, tmp_path)
    idx = np.array([0, 1, 2])
    batch = collate(enc, idx)
    width = int(enc.lengths[idx].max())
    assert batch["input_ids"].shape == (3, width)
    assert batch["attention_mask"].sum().item() == int(enc.lengths[idx].sum())
    assert batch["labels"].shape == (3, 28)


def _damaged_caches(good: bytes) -> dict[str, bytes]:
    """Ways a cache file gets damaged: cut short (a full disk, a killed copy), emptied, overwritten."""
    import io

    bad_offsets = io.BytesIO()
    np.savez(bad_offsets, flat_ids=np.zeros(3, np.int32), offsets=np.array([0, 5, 2], np.int64))
    return {
        "half": good[: len(good) // 2],
        "header only": good[:40],
        "last byte gone": good[:-1],
        "empty": b"",
        "not a zip": b"garbage" * 50,
        "offsets that cut nothing": bad_offsets.getvalue(),
    }


def test_damaged_token_cache_is_rebuilt_with_one_warning(tmp_path, goemotions_splits, tokenizer, caplog, monkeypatch):
    import goemo.data.batching as batching

    dev = goemotions_splits["dev"].sample(200, seed=0)
    fresh = encode_split(dev, tokenizer, 32, tmp_path)
    (path,) = (tmp_path / "tokens").glob("*.npz")
    good = path.read_bytes()
    for name, damaged in _damaged_caches(good).items():
        path.write_bytes(damaged)
        caplog.clear()
        with caplog.at_level("WARNING", logger="goemo.data.batching"):
            rebuilt = encode_split(dev, tokenizer, 32, tmp_path)
        warnings = [r for r in caplog.records if r.levelname == "WARNING"]
        assert len(warnings) == 1 and "token cache" in warnings[0].getMessage(), name
        assert "\n" not in warnings[0].getMessage()
        assert np.array_equal(rebuilt.flat_ids, fresh.flat_ids) and np.array_equal(rebuilt.offsets, fresh.offsets)
        assert path.read_bytes() == good, name  # repaired in place
    # and the repaired file is what the next run reads: no tokenising, no warning
    monkeypatch.setattr(batching, "tokenize_texts", lambda *a, **k: pytest.fail("the cache was not read"))
    caplog.clear()
    again = encode_split(dev, tokenizer, 32, tmp_path)
    assert np.array_equal(again.flat_ids, fresh.flat_ids) and not caplog.records
