"""Blending the batch and the online model into the one probability that decisions use.

The rule, precisely:

1. While a row has no online probability (the online model has learned from fewer than its
   ``min_learned`` labels), the blend is the batch probability.
2. Otherwise ``p = (1 - w) * p_batch + w * p_online``. The online weight ``w`` is chosen from the grid
   ``0, step, 2*step, ..., 1`` as the one whose blend had the lowest mean log-loss on the last ``window``
   resolved labels for which both probabilities were known at prediction time (ties go to the smaller
   ``w``). With fewer than ``min_pairs`` such labels, ``w = 0``. ``w`` is chosen again after every
   ``refit_every`` such labels (100 by default: a 2,000-label window barely moves in fewer).

So the online model earns weight only by having been right on recent outcomes, the weights move toward
whichever model has lately predicted better, and on the recent window the blend is never worse than either
model alone. ``observe`` is called once per resolved label with the probabilities the prediction carried.

3. The pairs are of one batch model: ``version``, the model of the latest prediction observed. A label of a
   prediction by another model, made later than every pair's, starts the window over on that model (the
   weight chosen on the old model's probabilities says nothing of the new one's); one made earlier (the
   old model's predictions labelled after a promotion) is left out. While another batch model serves
   than the pairs' (``serving``, set by whoever serves), the blend is its batch probability alone: after a
   promotion the new model serves alone until ``min_pairs`` labels of its own predictions are known.

>>> b = Blender(min_pairs=2, refit_every=1)
>>> for as_of in (1, 2, 3):
...     b.observe(0.5, 0.9, 1, version="v1", as_of=as_of)
>>> b.serving = "v1"; b.online_weight()
1.0
>>> b.serving = "v2"; b.online_weight()  # promoted: v2 serves alone
0.0
>>> b.observe(0.5, 0.9, 1, version="v1", as_of=4)  # v1's, labelled late: still v1's window
>>> b.observe(0.2, 0.9, 0, version="v2", as_of=5)  # v2's first: the window starts over
>>> b.version, b.weights()["pairs"], b.online_weight()
('v2', 1, 0.0)
>>> b.observe(0.5, 0.9, 1, version="v1", as_of=3)  # v1's, made before v2's first: left out
>>> b.weights()["pairs"]
1

>>> b = Blender(min_pairs=10)
>>> b.blend(np.array([0.2, 0.8]), [None, None]).tolist()
[0.2, 0.8]
>>> for _ in range(50):
...     b.observe(0.5, 0.9, 1)
...     b.observe(0.5, 0.1, 0)
>>> b.weights()["online"]
1.0
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from churnstream.errors import ModelIntegrityError

_EPS = 1e-6


def blend(batch: np.ndarray, online: np.ndarray, weight: float | np.ndarray) -> np.ndarray:
    """``(1 - w) * batch + w * online`` per row, the batch probability where ``online`` is NaN; ``weight``
    is one online weight or one per row (rows of several partitions' blenders at once).

    >>> blend(np.array([0.2, 0.4]), np.array([0.6, np.nan]), np.array([0.5, 1.0])).tolist()
    [0.4, 0.4]
    """
    out: np.ndarray = np.where(
        np.isnan(online), batch, (1.0 - weight) * batch + weight * np.nan_to_num(online)
    )
    return out


class Blender:
    """Batch/online blend with weights from recent log-loss; see the module docstring for the rule."""

    def __init__(
        self, *, window: int = 2000, min_pairs: int = 200, step: float = 0.05, refit_every: int = 100
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        if not 0 < step <= 1:
            raise ValueError(f"step must be in (0, 1], got {step}")
        self.window = int(window)
        self.min_pairs = int(min_pairs)
        self.step = float(step)
        self.refit_every = max(1, int(refit_every))
        self._since_fit = 0
        # the last ``window`` pairs (batch p, online p, label), a ring: row ``_next`` is written next.
        # An array, not a deque of tuples: a refit reads them all, and converting 2,000 tuples took
        # 30% of learning in the scorer's benchmark.
        self._ring = np.empty((self.window, 3), dtype=np.float64)
        self._count = 0
        self._next = 0
        self.n_observed = 0
        self._w: float | None = 0.0
        self._losses: dict[str, float | None] = {"batch": None, "online": None, "blend": None}
        self.version: str | None = None  # the batch model of the pairs (rule 3)
        self._latest: int | None = None  # the latest as_of of its predictions observed
        self.serving: str | None = None  # the batch model serving now, when known: not checkpointed

    def observe(
        self,
        batch_p: float,
        online_p: float | None,
        label: int,
        *,
        version: str | None = None,
        as_of: int | None = None,
    ) -> None:
        """Record a resolved label (0 or 1) with the probabilities its prediction carried, and the batch
        model (``version``) that made the prediction at ``as_of`` (rule 3; None: not known)."""
        if label not in (0, 1):
            raise ValueError(f"a label is 0 or 1, got {label!r}")
        self.n_observed += 1
        if version is not None and version != self.version:
            earlier = as_of is not None and self._latest is not None and as_of <= self._latest
            if self.version is not None and earlier:
                return  # made by a model served before the pairs': nothing on the current one
            self._start_over(version)
        if as_of is not None and (self._latest is None or as_of > self._latest):
            self._latest = as_of
        if online_p is None:
            return
        self._add(float(batch_p), float(online_p), int(label))
        self._since_fit += 1
        if self._since_fit >= self.refit_every or self._count == self.min_pairs:
            self._w = None

    def _start_over(self, version: str) -> None:
        """The pairs of ``version`` from now on: the window empties, the weight is 0 until ``min_pairs``
        of them are known (a blender that never knew its pairs' model keeps them: rule 3 starts there)."""
        known = self.version is not None
        self.version = version
        self._latest = None
        if known:
            self._count = self._next = self._since_fit = 0
            self._w = None

    @property
    def refit_due(self) -> bool:
        """Whether the weight will be chosen again at the next blend (labels since the last choice)."""
        return self._w is None

    def _add(self, batch_p: float, online_p: float, label: int) -> None:
        row = self._ring[self._next]
        row[0], row[1], row[2] = batch_p, online_p, label
        self._next = (self._next + 1) % self.window
        self._count = min(self._count + 1, self.window)

    def _pairs(self) -> np.ndarray:
        """The pairs, oldest first (the order losses are summed in: a refit answers the same as ever)."""
        if self._count < self.window:
            return self._ring[: self._count]
        return np.concatenate((self._ring[self._next :], self._ring[: self._next]))

    def chosen_weight(self) -> float:
        """The online weight chosen on the pairs (rules 1-2), whichever batch model serves now."""
        if self._w is None:
            self._refit()
        assert self._w is not None
        return self._w

    def online_weight(self) -> float:
        """The online model's weight in the blend served now: 0 while another batch model serves than
        the pairs' (rule 3)."""
        w = self.chosen_weight()
        if self.serving is not None and self.version is not None and self.serving != self.version:
            return 0.0
        return w

    @classmethod
    def fixed(cls, weight: float, version: str | None) -> Blender:
        """A blender that blends with ``weight`` chosen on pairs of batch model ``version`` and observes
        nothing more: a past learner's blend (:meth:`churnstream.models.learner.Learner.serving_only`)."""
        blender = cls(window=1)  # it keeps no pairs
        blender._w, blender.version = float(weight), version
        return blender

    def blend(self, batch_p: np.ndarray, online_p: Sequence[float | None] | np.ndarray) -> np.ndarray:
        """Blended P(churn) per row: batch alone where ``online_p`` is None, else the weighted mean."""
        batch = np.asarray(batch_p, dtype=np.float64)
        if isinstance(online_p, np.ndarray) and online_p.dtype != object:
            online = online_p.astype(np.float64)
        else:
            online = np.array([np.nan if p is None else p for p in online_p], dtype=np.float64)
        if online.shape != batch.shape:
            raise ValueError(
                f"batch and online probabilities differ in shape: {batch.shape} vs {online.shape}"
            )
        w = self.online_weight()
        if w == 0.0:
            return batch.copy()
        return blend(batch, online, w)

    def weights(self) -> dict[str, Any]:
        """Current weights and the recent log-losses they were chosen by."""
        w = self.online_weight()
        return {
            "batch": 1.0 - w,
            "online": w,
            "pairs": self._count,
            "observed": self.n_observed,
            "batch_log_loss": self._losses["batch"],
            "online_log_loss": self._losses["online"],
            "blend_log_loss": self._losses["blend"],
        }

    def _refit(self) -> None:
        self._since_fit = 0
        arr = self._pairs()
        if self._count < self.min_pairs:
            self._w = 0.0
            self._losses = {"batch": None, "online": None, "blend": None}
            if self._count:
                y = arr[:, 2]
                self._losses["batch"] = float(_log_loss(np.clip(arr[:, 0], _EPS, 1 - _EPS), y))
                self._losses["online"] = float(_log_loss(np.clip(arr[:, 1], _EPS, 1 - _EPS), y))
            return
        pb, po, y = arr[:, 0], arr[:, 1], arr[:, 2]
        grid = np.round(np.arange(0.0, 1.0 + self.step / 2, self.step), 10)
        blends = np.clip((1.0 - grid)[:, None] * pb[None, :] + grid[:, None] * po[None, :], _EPS, 1 - _EPS)
        losses = _log_loss(blends, y, axis=1)
        best = int(np.argmin(losses))  # first minimum: the smallest online weight among ties
        self._w = float(grid[best])
        self._losses = {"batch": float(losses[0]), "online": float(losses[-1]), "blend": float(losses[best])}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable checkpoint."""
        return {
            "format": 1,
            "window": self.window,
            "min_pairs": self.min_pairs,
            "step": self.step,
            "n_observed": self.n_observed,
            "pairs": [(b, o, int(y)) for b, o, y in self._pairs().tolist()],
            # the weight in use and when it is chosen again: a restored blender blends exactly the same
            "w": self._w,
            "since_fit": self._since_fit,
            "losses": self._losses,
            "version": self.version,
            "latest": self._latest,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Blender:
        """Restore :meth:`to_dict` output."""
        if not isinstance(data, dict) or data.get("format") != 1:
            raise ModelIntegrityError("not a blender checkpoint (format 1)")
        try:
            blender = cls(
                window=int(data["window"]), min_pairs=int(data["min_pairs"]), step=float(data["step"])
            )
            blender.n_observed = int(data["n_observed"])
            for b, o, y in data["pairs"]:
                if y not in (0, 1):  # the refit's loss holds for these two only
                    raise ValueError(f"a pair's label is 0 or 1, got {y!r}")
                blender._add(float(b), float(o), int(y))
            blender._w = None if data.get("w") is None else float(data["w"])
            blender._since_fit = int(data.get("since_fit", 0))
            blender._losses = dict(data.get("losses") or blender._losses)
            blender.version = None if data.get("version") is None else str(data["version"])
            blender._latest = None if data.get("latest") is None else int(data["latest"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelIntegrityError(f"blender checkpoint is malformed: {exc!r}") from None
        return blender

    def __repr__(self) -> str:
        return f"Blender(online_weight={self.online_weight():.2f}, pairs={self._count})"


def _log_loss(p: np.ndarray, y: np.ndarray, axis: int | None = None) -> Any:
    """The mean log-loss of probabilities ``p`` (clipped away from 0 and 1) for labels ``y`` of 0 and 1,
    along ``axis``: the log of the probability given to what happened, which is
    ``y * log(p) + (1 - y) * log(1 - p)`` to the bit, with one log a pair instead of two."""
    return -np.mean(np.log(np.where(y == 1.0, p, 1 - p)), axis=axis)
