"""The online model: a River logistic regression that keeps learning from delayed (resolved) labels.

Feature dicts become a dense design matrix: ``sign(x)·log1p(|x|)`` of every feature with missing values
set to 0, plus a ``<name>__missing`` indicator per feature. A River pipeline
(``preprocessing.StandardScaler | linear_model.LogisticRegression``) learns from it in mini-batches
of exactly ``chunk_size`` rows (``learn_many``: one SGD step on the mean gradient per chunk), which keeps
learning at tens of thousands of labels per second; predictions are computed with numpy from the
pipeline's own means, variances and weights, identical to ``pipeline.predict_proba_one`` but vectorised.

Evaluation is prequential: each chunk is scored by the model as it was before learning that chunk, and
those scores feed a rolling ROC-AUC and log-loss over the last ``window`` labels.

Each partition's model lives in that partition's :class:`~churnstream.models.learner.Learner`, beside the
blender that weighs it against the batch model; the worker learns and checkpoints through the learner.
Both follow River's conventions (``learn_one`` / ``predict_proba_one``) beside their batch paths.

>>> m = OnlineModel(feature_names=["recency_days"], min_learned=2, chunk_size=50)
>>> m.predict_many([{"recency_days": 40.0}])
[None]
>>> m.learn_many([{"recency_days": 40.0}, {"recency_days": 2.0}] * 50, [1, 0] * 50)
>>> p = m.predict_many([{"recency_days": 40.0}, {"recency_days": 2.0}])
>>> m.n_learned, p[0] > 0.5 > p[1]
(100, True)
"""

from __future__ import annotations

import hashlib
import math
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import orjson

from churnstream.errors import ModelIntegrityError
from churnstream.models.batch import signed_log1p
from churnstream.models.evaluation import roc_auc

MAGIC = b"CSOM"
FORMAT_VERSION = 2  # 2: JSON payload (1 was a pickle)
_HEADER = len(MAGIC) + 1 + 32


def _default_features() -> list[str]:
    from churnstream.features.definitions import FEATURE_NAMES

    return list(FEATURE_NAMES)


def probabilities(
    D: np.ndarray, means: np.ndarray, stds: np.ndarray, weights: np.ndarray, intercept: float | np.ndarray
) -> np.ndarray:
    """The online model's P(churn) of design rows ``D`` (:meth:`OnlineModel.design`), as River computes
    it: standardise, weigh, add the intercept, sigmoid. The parameters are either one model's
    (:meth:`OnlineModel.parameters`) or stacked per row, so that rows of several partitions' models
    are scored at once, each row exactly as its own model alone would score it.
    """
    Z = np.divide(D - means, stds, out=np.zeros_like(D), where=stds > 0)
    z = np.clip(np.einsum("ij,ij->i", Z, np.broadcast_to(weights, Z.shape)) + intercept, -30.0, 30.0)
    out: np.ndarray = 1.0 / (1.0 + np.exp(-z))
    return out


class OnlineModel:
    """Online logistic regression over ``feature_names``; see the module docstring.

    ``min_learned``: labels to learn from before :meth:`predict_many` returns probabilities.
    ``learning_rate`` and ``l2``: of the SGD optimiser (one step per mini-batch of ``chunk_size`` rows).
    ``window``: resolved labels in the rolling prequential metrics.
    """

    def __init__(
        self,
        *,
        feature_names: Sequence[str] | None = None,
        min_learned: int = 200,
        learning_rate: float = 0.5,
        l2: float = 1e-4,
        chunk_size: int = 256,
        window: int = 2000,
    ) -> None:
        from river import linear_model, optim, preprocessing

        self.feature_names: list[str] = (
            list(feature_names) if feature_names is not None else _default_features()
        )
        self.min_learned = int(min_learned)
        self.learning_rate = float(learning_rate)
        self.l2 = float(l2)
        self.chunk_size = int(chunk_size)
        self.window = int(window)
        self.columns: list[str] = self.feature_names + [f"{n}__missing" for n in self.feature_names]
        self.pipeline = preprocessing.StandardScaler() | linear_model.LogisticRegression(
            optimizer=optim.SGD(self.learning_rate), intercept_lr=self.learning_rate, l2=self.l2
        )
        self.n_learned = 0  # labels taken in (see learn_matrix: up to chunk_size - 1 wait in a buffer)
        self.n_evaluated = 0
        self._params: tuple[np.ndarray, np.ndarray, np.ndarray, float] | None = None
        # labels taken in but not learned yet: raw feature rows and labels (fewer than chunk_size)
        self._buffer_X = np.empty((0, len(self.feature_names)), dtype=np.float64)
        self._buffer_y = np.empty(0, dtype=np.int64)
        self._recent: deque[tuple[int, float]] = deque(maxlen=self.window)
        self._frozen = False  # see frozen(): predicts only

    # -- scoring ---------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self.n_learned - self.n_waiting >= self.min_learned

    @classmethod
    def frozen(
        cls, feature_names: Sequence[str], parameters: tuple[Any, Any, Any, float], *, ready: bool
    ) -> OnlineModel:
        """A model that predicts with ``parameters`` (as :meth:`parameters` gives them) and learns
        nothing: a past learner's online model (:meth:`churnstream.models.learner.Learner.serving_only`).
        ``ready``: whether it answers at all (None for every row when not)."""
        model = cls(feature_names=feature_names, min_learned=0 if ready else 1)
        means, stds, weights, intercept = parameters
        model._params = (
            np.asarray(means, dtype=np.float64),
            np.asarray(stds, dtype=np.float64),
            np.asarray(weights, dtype=np.float64),
            float(intercept),
        )
        model._frozen = True
        return model

    def vectorize(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Feature dicts to a float64 matrix in ``feature_names`` order, NaN for None or absent."""
        names = self.feature_names
        return np.array([[row.get(n) for n in names] for row in rows], dtype=np.float64).reshape(
            len(rows), len(names)
        )

    def design(self, X: np.ndarray) -> np.ndarray:
        """The model's input columns (:attr:`columns`) from a raw feature matrix."""
        missing = np.isnan(X)
        values = np.where(missing, 0.0, signed_log1p(np.where(missing, 0.0, X)))
        return np.hstack([values, missing.astype(np.float64)])

    def parameters(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """The scaler's means and standard deviations and the weights, per column of :attr:`columns`, and
        the intercept: what :func:`probabilities` needs."""
        if self._params is None:  # the pipeline's numbers change only when a chunk is learned
            scaler, lr = self._steps()
            means = np.array([scaler.means.get(c, 0.0) for c in self.columns])
            stds = np.sqrt(np.array([scaler.vars.get(c, 0.0) for c in self.columns]))
            weights = np.array([lr._weights.get(c, 0.0) for c in self.columns])
            self._params = (means, stds, weights, float(lr.intercept))
        return self._params

    def predict_matrix(self, X: np.ndarray) -> np.ndarray:
        """P(churn) for a raw feature matrix (columns in ``feature_names`` order), whether ready or not."""
        return probabilities(self.design(np.asarray(X, dtype=np.float64)), *self.parameters())

    def predict_many(self, rows: Sequence[Mapping[str, Any]]) -> list[float | None]:
        """P(churn) per feature dict; None for every row until ``min_learned`` labels were learned."""
        if not self.ready:
            return [None] * len(rows)
        return [float(p) for p in self.predict_matrix(self.vectorize(rows))]

    def predict_proba_one(self, x: Mapping[str, Any]) -> dict[int, float]:
        """River's ``predict_proba_one``: ``{0: P(stays), 1: P(churns)}`` for one feature dict; empty
        until the model is ready (River's models answer ``{}`` before they have learned).

        >>> model = OnlineModel(feature_names=["recency_days"], min_learned=2, chunk_size=2)
        >>> model.predict_proba_one({"recency_days": 3.0})
        {}
        >>> model.learn_one({"recency_days": 40.0}, 1); model.learn_one({"recency_days": 1.0}, 0)
        >>> p = model.predict_proba_one({"recency_days": 40.0})
        >>> sorted(p), round(p[0] + p[1], 6), p[1] > 0.5
        ([0, 1], 1.0, True)
        """
        (p,) = self.predict_many([x])
        return {} if p is None else {0: 1.0 - p, 1: p}

    # -- learning --------------------------------------------------------------------------------

    def learn_one(self, x: Mapping[str, Any], y: int) -> None:
        """River's ``learn_one``: learn from one resolved label (:meth:`learn_many` is the batch path)."""
        self.learn_many([x], [y])

    def learn_many(self, rows: Sequence[Mapping[str, Any]], labels: Sequence[int]) -> None:
        """Learn from resolved labels; the model's prior predictions on them update the metrics first."""
        if len(rows) != len(labels):
            raise ValueError(f"{len(rows)} rows but {len(labels)} labels")
        if not rows:
            return
        self.learn_matrix(self.vectorize(rows), np.asarray(labels, dtype=np.int64))

    def learn_matrix(self, X: np.ndarray, y: np.ndarray) -> None:
        """:meth:`learn_many` for a raw feature matrix in ``feature_names`` order.

        Labels are taken in at once (:attr:`n_learned`) and learned in chunks of exactly ``chunk_size``
        rows; the rest waits in a buffer that is part of the checkpoint. So what the model learns does not
        depend on how a stream was cut into micro-batches (a rebuild learns exactly what the live worker
        did), and a stream of small batches does not pay River's per-call cost for every few labels.
        """
        if self._frozen:
            raise TypeError("a frozen online model (a past learner's) predicts only; it learns nothing")
        X = np.asarray(X, dtype=np.float64).reshape(len(y), len(self.feature_names))
        buffer_X = np.concatenate([self._buffer_X, X])
        buffer_y = np.concatenate([self._buffer_y, np.asarray(y, dtype=np.int64).reshape(len(y))])
        self.n_learned += len(y)
        size = self.chunk_size
        start = 0
        while len(buffer_y) - start >= size:
            self._learn_chunk(buffer_X[start : start + size], buffer_y[start : start + size])
            start += size
        self._buffer_X, self._buffer_y = buffer_X[start:].copy(), buffer_y[start:].copy()

    @property
    def n_waiting(self) -> int:
        """Labels taken in but not learned yet (fewer than ``chunk_size``)."""
        return len(self._buffer_y)

    def _learn_chunk(self, X: np.ndarray, y: np.ndarray) -> None:
        import pandas as pd

        if self.ready:
            prior = self.predict_matrix(X)
            for label, p in zip(y.tolist(), prior.tolist(), strict=True):
                self._recent.append((int(label), float(p)))
            self.n_evaluated += len(prior)
        chunk = pd.DataFrame(self.design(X), columns=self.columns)
        self.pipeline.learn_many(chunk, pd.Series(y == 1))
        self._params = None

    def metrics(self) -> dict[str, Any]:
        """Prequential metrics over the last ``window`` resolved labels scored while ready."""
        labels = np.array([label for label, _ in self._recent], dtype=np.int64)
        probs = np.clip(np.array([p for _, p in self._recent], dtype=np.float64), 1e-6, 1 - 1e-6)
        auc = log_loss = None
        if len(labels):
            log_loss = float(-np.mean(labels * np.log(probs) + (1 - labels) * np.log(1 - probs)))
            auc = roc_auc(labels, probs)
        return {
            "n_learned": self.n_learned,
            "n_waiting": self.n_waiting,
            "n_evaluated": self.n_evaluated,
            "window_rows": int(len(labels)),
            "roc_auc": auc,
            "log_loss": log_loss,
        }

    # -- checkpointing ---------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """A versioned checkpoint: ``CSOM`` + format version + sha256(payload) + JSON payload.

        Plain JSON of the River pipeline's numbers (scaler counts, means and variances; weights,
        intercept, SGD step count), never a pickle: whoever can write to Redis must not be able to run
        code in the scorers by forging a checkpoint.
        """
        scaler, lr = self._steps()
        payload = orjson.dumps(
            {
                "format": FORMAT_VERSION,
                "params": {
                    "feature_names": self.feature_names,
                    "min_learned": self.min_learned,
                    "learning_rate": self.learning_rate,
                    "l2": self.l2,
                    "chunk_size": self.chunk_size,
                    "window": self.window,
                },
                "scaler": {
                    "counts": dict(scaler.counts),
                    "means": dict(scaler.means),
                    "vars": dict(scaler.vars),
                },
                "logistic": {
                    "weights": lr._weights.to_dict(),
                    "intercept": float(lr.intercept),
                    "n_iterations": int(lr.optimizer.n_iterations),
                },
                "n_learned": self.n_learned,
                "n_evaluated": self.n_evaluated,
                "recent": list(self._recent),
                "buffer": [self._buffer_X, self._buffer_y],
            },
            option=orjson.OPT_SERIALIZE_NUMPY,
        )
        return MAGIC + bytes([FORMAT_VERSION]) + hashlib.sha256(payload).digest() + payload

    def _steps(self) -> tuple[Any, Any]:
        return self.pipeline.steps["StandardScaler"], self.pipeline.steps["LogisticRegression"]

    @classmethod
    def from_bytes(cls, data: bytes) -> OnlineModel:
        """Restore a checkpoint; :class:`ModelIntegrityError` when it is not one or was corrupted."""
        from river import utils

        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ModelIntegrityError(f"online checkpoint must be bytes, got {type(data).__name__}")
        data = bytes(data)
        if len(data) < _HEADER or data[: len(MAGIC)] != MAGIC:
            raise ModelIntegrityError("not an online-model checkpoint (bad magic bytes)")
        version = data[len(MAGIC)]
        if version != FORMAT_VERSION:
            raise ModelIntegrityError(
                f"online checkpoint format {version} is not supported (expected {FORMAT_VERSION})"
            )
        digest, payload = data[len(MAGIC) + 1 : _HEADER], data[_HEADER:]
        if hashlib.sha256(payload).digest() != digest:
            raise ModelIntegrityError("online checkpoint is corrupted: sha256 of the payload does not match")
        try:
            state = orjson.loads(payload)
            model = cls(**state["params"])
            scaler, lr = model._steps()
            scaler.counts.update({str(k): int(v) for k, v in state["scaler"]["counts"].items()})
            scaler.means.update({str(k): float(v) for k, v in state["scaler"]["means"].items()})
            scaler.vars.update({str(k): float(v) for k, v in state["scaler"]["vars"].items()})
            logistic = state["logistic"]
            lr._weights = utils.VectorDict({str(k): float(v) for k, v in logistic["weights"].items()})
            lr.intercept = float(logistic["intercept"])
            lr.optimizer.n_iterations = int(logistic["n_iterations"])
            model.n_learned = int(state["n_learned"])
            model.n_evaluated = int(state["n_evaluated"])
            model._recent.extend((int(y), float(p)) for y, p in state["recent"])
            buffer_X, buffer_y = state["buffer"]
            model._buffer_X = np.array(buffer_X, dtype=np.float64).reshape(
                len(buffer_X), len(model.feature_names)
            )
            model._buffer_y = np.array([int(y) for y in buffer_y], dtype=np.int64)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ModelIntegrityError(f"online checkpoint payload has an unexpected shape: {exc!r}") from None
        return model

    def __repr__(self) -> str:
        return f"OnlineModel(features={len(self.feature_names)}, n_learned={self.n_learned})"


def log_loss_of(label: int, p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return -math.log(p) if label == 1 else -math.log(1 - p)
