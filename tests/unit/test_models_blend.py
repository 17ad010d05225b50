"""The blender: batch alone until the online model has a record, then weight toward the better model."""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest

from churnstream.errors import ModelIntegrityError
from churnstream.models.blend import Blender


def _feed(blender: Blender, n: int, *, online_noise: float, batch_noise: float, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    truth = rng.uniform(0.05, 0.95, n)
    labels = (rng.random(n) < truth).astype(int)
    online = np.clip(truth + rng.normal(0, online_noise, n), 0.01, 0.99)
    batch = np.clip(truth + rng.normal(0, batch_noise, n), 0.01, 0.99)
    for b, o, y in zip(batch, online, labels, strict=True):
        blender.observe(float(b), float(o), int(y))


def test_batch_only_while_the_online_model_has_no_probability() -> None:
    blender = Blender(min_pairs=10)
    _feed(blender, 500, online_noise=0.0, batch_noise=0.3)
    w = blender.weights()["online"]
    assert w > 0.5
    blended = blender.blend(np.array([0.2, 0.6, 0.9]), [None, 0.1, None])
    assert blended[0] == 0.2 and blended[2] == 0.9
    assert blended[1] == pytest.approx((1 - w) * 0.6 + w * 0.1)


def test_batch_only_until_enough_resolved_labels_with_both_predictions() -> None:
    blender = Blender(min_pairs=200)
    for _ in range(1000):
        blender.observe(0.5, None, 1)  # online model not ready yet: does not count
    _feed(blender, 150, online_noise=0.0, batch_noise=0.4)
    assert blender.weights()["online"] == 0.0
    np.testing.assert_array_equal(blender.blend(np.array([0.3, 0.7]), [0.9, 0.1]), [0.3, 0.7])
    _feed(blender, 100, online_noise=0.0, batch_noise=0.4, seed=1)
    assert blender.weights()["online"] > 0.5
    assert blender.weights()["pairs"] == 250 and blender.weights()["observed"] == 1250


@pytest.mark.parametrize(("online_noise", "batch_noise"), [(0.02, 0.35), (0.35, 0.02)])
def test_weights_move_toward_the_better_model(online_noise: float, batch_noise: float) -> None:
    blender = Blender(min_pairs=100, window=1000)
    _feed(blender, 1000, online_noise=online_noise, batch_noise=batch_noise)
    w = blender.weights()
    better_online = online_noise < batch_noise
    assert (w["online"] > 0.7) if better_online else (w["online"] < 0.3), w
    assert w["batch"] + w["online"] == pytest.approx(1.0)
    assert w["blend_log_loss"] <= min(w["batch_log_loss"], w["online_log_loss"])


def test_weights_follow_a_change_in_who_is_better() -> None:
    blender = Blender(min_pairs=100, window=500)
    _feed(blender, 500, online_noise=0.35, batch_noise=0.02)
    assert blender.weights()["online"] < 0.3
    _feed(blender, 500, online_noise=0.02, batch_noise=0.35, seed=3)  # e.g. the world drifted
    assert blender.weights()["online"] > 0.7


def test_checkpoint_roundtrip_through_json() -> None:
    blender = Blender(min_pairs=50, window=300)
    _feed(blender, 400, online_noise=0.1, batch_noise=0.2)
    restored = Blender.from_dict(json.loads(json.dumps(blender.to_dict())))
    assert restored.weights() == blender.weights()
    p = np.array([0.1, 0.5, 0.9])
    np.testing.assert_array_equal(restored.blend(p, [0.3, None, 0.2]), blender.blend(p, [0.3, None, 0.2]))
    with pytest.raises(ModelIntegrityError):
        Blender.from_dict({"format": 1, "window": 10})
    with pytest.raises(ModelIntegrityError):
        Blender.from_dict({"format": 2})


def test_a_restored_blender_blends_exactly_as_the_original_and_refits_on_the_same_label() -> None:
    rng = np.random.default_rng(7)
    original = Blender(min_pairs=50, refit_every=100)
    batch, online = rng.random(20), rng.random(20)
    for i in range(490):  # blending as a scorer does between labels: the weight in use is 90 labels old
        y = int(rng.random() < 0.3)
        if i < 400:  # the online model is right until label 400, then confidently wrong
            original.observe(0.3, float(0.8 * y + 0.1), y)
        else:
            original.observe(0.3, float(0.9 - 0.8 * y), y)
        original.blend(batch, online)
    before = original.blend(batch, online)
    restored = Blender.from_dict(orjson.loads(orjson.dumps(original.to_dict())))
    assert restored.blend(batch, online).tolist() == before.tolist()
    for _ in range(30):
        y = int(rng.random() < 0.3)
        p = (float(rng.random()), float(0.5 * y + 0.5 * rng.random()), y)
        original.observe(*p)
        restored.observe(*p)
        assert restored.blend(batch, online).tolist() == original.blend(batch, online).tolist()


def test_the_window_keeps_the_last_pairs_oldest_first_once_it_wraps() -> None:
    """The window is a ring: after more labels than it holds, the checkpoint lists exactly the last
    ``window`` pairs in the order they came, and the weight is the one the rule gives on those."""
    window = 300
    blender = Blender(min_pairs=50, window=window, refit_every=1)
    rng = np.random.default_rng(7)
    seen = []
    for i in range(window * 2 + 17):
        b, o, y = float(rng.uniform(0.05, 0.95)), float(rng.uniform(0.05, 0.95)), int(rng.random() < 0.5)
        if i > window:  # the online model turns better half-way: the weight must follow the recent pairs
            o = 0.9 if y else 0.1
        blender.observe(b, o, y)
        seen.append((b, o, y))
    assert [tuple(p) for p in blender.to_dict()["pairs"]] == seen[-window:]
    arr = np.array(seen[-window:])
    grid = np.round(np.arange(0.0, 1.0 + 0.05 / 2, 0.05), 10)
    blends = np.clip((1 - grid)[:, None] * arr[:, 0] + grid[:, None] * arr[:, 1], 1e-6, 1 - 1e-6)
    losses = -np.mean(arr[:, 2] * np.log(blends) + (1 - arr[:, 2]) * np.log(1 - blends), axis=1)
    assert blender.weights()["online"] == float(grid[int(np.argmin(losses))]) > 0.5
    assert blender.weights()["pairs"] == window
    with pytest.raises(ValueError, match="window"):
        Blender(window=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_refit_chooses_by_the_mean_log_loss_of_the_blend(seed: int) -> None:
    """The weight and losses a refit reports are those of the log-loss formula, to the bit: the mean of
    ``-(y log p + (1 - y) log(1 - p))`` of each blend on the grid, the first minimum chosen."""
    rng = np.random.default_rng(seed)
    blender = Blender(min_pairs=50, refit_every=10**6)
    n = 400
    batch, online = rng.random(n), rng.random(n)
    batch[:8], online[8:16] = 0.0, 1.0  # clipped to [1e-6, 1 - 1e-6]
    labels = (rng.random(n) < np.where(rng.random(n) < 0.5, batch, online)).astype(int)
    for b, o, y in zip(batch, online, labels, strict=True):
        blender.observe(float(b), float(o), int(y))
    weight = blender.online_weight()
    grid = np.round(np.arange(0.0, 1.0 + 0.05 / 2, 0.05), 10)
    y = labels.astype(np.float64)
    losses = []
    for w in grid:
        p = np.clip((1.0 - w) * batch + w * online, 1e-6, 1 - 1e-6)
        losses.append(float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))))
    best = int(np.argmin(losses))
    assert weight == grid[best]
    found = blender.weights()
    assert found["online"] == grid[best]
    logged = (found["batch_log_loss"], found["online_log_loss"], found["blend_log_loss"])
    assert logged == (losses[0], losses[-1], losses[best])

    early = Blender(min_pairs=10**6, refit_every=n)  # too few pairs to weigh: the two models' losses alone
    for b, o, y_ in zip(batch, online, labels, strict=True):
        early.observe(float(b), float(o), int(y_))
    found = early.weights()
    assert found["online"] == 0.0
    assert (found["batch_log_loss"], found["online_log_loss"], found["blend_log_loss"]) == (
        losses[0],
        losses[-1],
        None,
    )


def test_a_label_other_than_0_or_1_is_refused_live_and_in_a_checkpoint() -> None:
    """The refit's log-loss takes the log of the probability given to what happened, which holds for
    labels of 0 and 1 only: any other is refused, whether observed or read from a checkpoint."""
    blender = Blender(min_pairs=2)
    with pytest.raises(ValueError, match="0 or 1"):
        blender.observe(0.5, 0.5, 2)
    blender.observe(0.5, 0.6, 1)
    data = json.loads(json.dumps(blender.to_dict()))
    assert Blender.from_dict(data).to_dict() == blender.to_dict()
    data["pairs"][0][2] = 2
    with pytest.raises(ModelIntegrityError, match="0 or 1"):
        Blender.from_dict(data)
