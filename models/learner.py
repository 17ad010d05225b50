"""What one partition learns from its resolved labels: the online model and the blender, checkpointed
as a snapshot plus a log of the labels learned since.

A :class:`Learner` is the partition's whole online half. Its :class:`~churnstream.models.online.OnlineModel`
is the River model (a logistic regression learning from feature dicts); its
:class:`~churnstream.models.blend.Blender` weighs that model against the batch model by how both did on
recent labels. The learner follows River's conventions, one dict per event — :meth:`Learner.learn_one`
and :meth:`Learner.predict_proba_one` — with the fast batch path beside them: :meth:`Learner.learn` (what
the scoring worker calls, one micro-batch of a partition at once) and, for predictions,
:meth:`ModelSet.score <churnstream.models.serving.ModelSet.score>` (all partitions' rows in one pass).
The one-dict methods go through the batch ones (no second implementation of either), and the online
model learns the same whether its labels come one at a time or in batches.

Serialising both models after every micro-batch cost about a millisecond per partition (the online
model's rolling window, the blender's 2,000 recent pairs), paid again for every batch however small.
So a learner is saved the way a database saves a table: a **log** line per batch with just that batch's
labels, which the store appends, and a full **snapshot** once ``snapshot_every`` labels (1,024) have been
logged since the last one, which empties the log. Restoring loads the snapshot and replays the log
through the same calls, giving the same models as the live worker's: every step that depends on when it
happens — learning a chunk once ``chunk_size`` labels are buffered, choosing the blend weight again once
``refit_every`` pairs were observed — happens at the end of the batch that made it due, live and on
replay alike. The snapshot only bounds how much a restore replays.

The scoring worker hands labels over with :meth:`Learner.wait` as batches resolve them and has them
learned with :meth:`Learner.learn_waiting` at each sweep tick, sorted by their keys: what a learner has
learned when a prediction is scored then depends on the events alone, never on where batches ended
(docs/models.md, "When a learner learns").

>>> learner = Learner.restore(None, None, b"")
>>> line = learner.learn([[1.0, None]], [1], [0.4], [None], feature_names=["a", "b"])
>>> line.snapshot, line.log.count(b"\\n")
(False, 1)
>>> again = Learner.restore(None, None, line.log)
>>> again.online.n_learned, again.blender.n_observed
(1, 1)
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from churnstream.errors import ModelIntegrityError
from churnstream.models.blend import Blender
from churnstream.models.online import OnlineModel

WAIT = "wait"  # a log line of labels taken in, to be learned at the next LEARN line
LEARN = "learn"  # a log line: the waiting labels were learned here


@dataclass(slots=True)
class Checkpoint:
    """What to write for one batch: ``snapshot`` True means write :meth:`Learner.snapshot_bytes` and
    start an empty log; otherwise append ``log`` (one line per batch) to the log."""

    snapshot: bool
    log: bytes


@dataclass(slots=True)
class Learner:
    """The online model and the blender of one partition."""

    online: OnlineModel
    blender: Blender
    snapshot_every: int = 1024  # labels logged since the last snapshot that call for the next one
    logged: int = 0  # labels in the log since the last snapshot
    # Labels taken in but not learned yet (:meth:`wait`): (key, feature names, vector, label, batch p,
    # online p, batch model version), learned in key order by :meth:`learn_waiting`; a key starts with
    # the prediction's as_of.
    waiting: list[
        tuple[list[Any], tuple[str, ...], list[float | None], int, float, float | None, str | None]
    ] = field(default_factory=list)

    @property
    def has_learned(self) -> bool:
        """Whether any label reached the online model or the blender (waiting ones do not count)."""
        return self.online.n_learned > 0 or self.blender.n_observed > 0

    def learn(
        self,
        vectors: Sequence[Sequence[float | None]],
        labels: Sequence[int],
        batch_p: Sequence[float],
        online_p: Sequence[float | None],
        *,
        feature_names: Sequence[str],
    ) -> Checkpoint:
        """Learn from resolved labels (features in ``feature_names`` order, as the predictions carried
        them) and say what to write so a restore gives the same learner."""
        self._apply(vectors, labels, batch_p, online_p, feature_names)
        self.logged += len(labels)
        if self.logged >= self.snapshot_every:
            self.logged = 0
            return Checkpoint(True, b"")
        rows = [[y, b, o, *v] for v, y, b, o in zip(vectors, labels, batch_p, online_p, strict=True)]
        return Checkpoint(False, orjson.dumps([list(feature_names), rows]) + b"\n")

    def wait(
        self,
        keys: Sequence[list[Any]],
        vectors: Sequence[Sequence[float | None]],
        labels: Sequence[int],
        batch_p: Sequence[float],
        online_p: Sequence[float | None],
        *,
        feature_names: Sequence[str],
        versions: Sequence[str | None] | None = None,
    ) -> bytes:
        """Take resolved labels in, to be learned by the next :meth:`learn_waiting` in the order of their
        ``keys`` (``[as_of, prediction id]``, whatever order they came in); ``versions``: the batch model
        of each prediction, for the blender (see :mod:`churnstream.models.blend`, rule 3). Returns the log
        line to append, so a restore has them too."""
        names = tuple(feature_names)
        models = list(versions) if versions is not None else [None] * len(labels)
        rows = []
        for k, v, y, b, o, m in zip(keys, vectors, labels, batch_p, online_p, models, strict=True):
            self.waiting.append(
                (list(k), names, list(v), int(y), float(b), None if o is None else float(o), m)
            )
            # the version rides at the end of the key: a worker of the release before reads the line
            # as ever (it only sorts by keys, and the prediction id decides before the version)
            rows.append([[*k, m] if m is not None else list(k), int(y), b, o, *v])
        return orjson.dumps([WAIT, list(names), rows]) + b"\n"

    def learn_waiting(self) -> Checkpoint:
        """Learn every waiting label, in key order: the same models whichever batches brought them. What
        to write: a snapshot once ``snapshot_every`` labels were logged since the last, else the log line
        that marks the learning (none when nothing waited)."""
        if not self.waiting:
            return Checkpoint(False, b"")
        waiting, self.waiting = sorted(self.waiting, key=lambda w: w[0]), []
        for names, run in itertools.groupby(waiting, key=lambda w: w[1]):
            rows = list(run)
            self._apply(
                [w[2] for w in rows],
                [w[3] for w in rows],
                [w[4] for w in rows],
                [w[5] for w in rows],
                names,
                versions=[w[6] for w in rows],
                as_of=[w[0][0] for w in rows],
            )
        self.logged += len(waiting)
        if self.logged >= self.snapshot_every:
            self.logged = 0
            return Checkpoint(True, b"")
        return Checkpoint(False, orjson.dumps([LEARN]) + b"\n")

    # -- River's conventions: one dict per event ---------------------------------------------------

    def predict_proba_one(self, x: Mapping[str, Any], *, batch_p: float | None = None) -> dict[int, float]:
        """``{0: P(stays), 1: P(churns)}`` for one feature dict, as River's classifiers answer.

        With ``batch_p`` (the batch model's P(churn) of ``x``) it is the blend the worker serves: the batch
        probability alone until the online model is ready and has earned weight. Without it, the online
        model's own answer: ``{}`` until it is ready, as River's models answer before they have learned.
        """
        if batch_p is None:
            return self.online.predict_proba_one(x)
        (p,) = self.blender.blend(np.array([batch_p], dtype=np.float64), self.online.predict_many([x]))
        return {0: 1.0 - float(p), 1: float(p)}

    def learn_one(
        self, x: Mapping[str, Any], y: int, *, batch_p: float, online_p: float | None
    ) -> Checkpoint:
        """Learn one resolved label ``y`` of the prediction made from feature dict ``x``; :meth:`learn`
        for one row, so it returns what to write as that does.

        ``batch_p`` and ``online_p`` are the probabilities that prediction carried (the online one None
        while the online model was not ready): the blender weighs the two models by them. In a
        prequential loop — predict, then learn — they are the ones just predicted:

        >>> learner = Learner(
        ...     OnlineModel(feature_names=["recency_days"], min_learned=4, chunk_size=4),
        ...     Blender(min_pairs=8, refit_every=8),
        ... )
        >>> for days, churned in [(40.0, 1), (2.0, 0)] * 30:
        ...     x = {"recency_days": days}
        ...     online_p = learner.predict_proba_one(x).get(1)  # None until the online model is ready
        ...     checkpoint = learner.learn_one(x, churned, batch_p=0.5, online_p=online_p)
        >>> learner.online.n_learned, learner.blender.weights()["online"]
        (60, 1.0)
        >>> stays = learner.predict_proba_one({"recency_days": 2.0}, batch_p=0.5)
        >>> sorted(stays), stays[1] < 0.5 < stays[0]
        ([0, 1], True)
        """
        names = list(x)
        return self.learn([[x[n] for n in names]], [int(y)], [batch_p], [online_p], feature_names=names)

    def _apply(
        self,
        vectors: Sequence[Sequence[float | None]],
        labels: Sequence[int],
        batch_p: Sequence[float],
        online_p: Sequence[float | None],
        feature_names: Sequence[str],
        *,
        versions: Sequence[str | None] | None = None,
        as_of: Sequence[int | None] | None = None,
    ) -> None:
        models = versions if versions is not None else [None] * len(labels)
        times = as_of if as_of is not None else [None] * len(labels)
        for b, o, y, m, t in zip(batch_p, online_p, labels, models, times, strict=True):
            self.blender.observe(b, o, y, version=m, as_of=t)
        online = self.online
        if list(online.feature_names) == list(feature_names):
            X = np.array(vectors, dtype=np.float64).reshape(len(labels), len(feature_names))
        else:
            X = online.vectorize([dict(zip(feature_names, v, strict=True)) for v in vectors])
        online.learn_matrix(X, np.asarray(labels, dtype=np.int64))
        if self.blender.refit_due:  # now, from exactly this batch's pairs, so a replay chooses the same
            self.blender.online_weight()

    def snapshot_bytes(self) -> tuple[bytes, bytes]:
        """The online model's and the blender's checkpoints."""
        return self.online.to_bytes(), orjson.dumps(self.blender.to_dict())

    def serving_bytes(self) -> bytes:
        """What this learner's predictions rest on, no label and no row: the online model's parameters
        and readiness, and the blend weight with its pairs' batch model. The store keeps these as the
        learner's history, one per sweep tick that taught it something
        (:meth:`~churnstream.features.store.Transaction.record_learner`), so the HTTP API scores a past
        ``as_of`` with the online part the stream had then (:meth:`serving_only`)."""
        online = self.online
        means, stds, weights, intercept = online.parameters()
        return orjson.dumps(
            {
                "format": 1,
                "names": online.feature_names,
                "ready": online.ready,
                "means": means,
                "stds": stds,
                "weights": weights,
                "intercept": intercept,
                "weight": self.blender.chosen_weight(),
                "version": self.blender.version,
            },
            option=orjson.OPT_SERIALIZE_NUMPY,
        )

    @classmethod
    def serving_only(cls, data: bytes | None) -> Learner:
        """A learner that predicts (and explains) as the one whose :meth:`serving_bytes` these are, and
        learns nothing; None: as a learner that has learned nothing yet.

        >>> from churnstream.models.blend import Blender
        >>> learner = Learner(OnlineModel(feature_names=["a"], min_learned=2, chunk_size=2), Blender())
        >>> _ = learner.learn([[1.0], [9.0]], [0, 1], [0.3, 0.6], [None, None], feature_names=["a"])
        >>> past = Learner.serving_only(learner.serving_bytes())
        >>> past.online.predict_many([{"a": 5.0}]) == learner.online.predict_many([{"a": 5.0}])
        True
        >>> Learner.serving_only(None).online.predict_many([{"a": 5.0}])
        [None]
        """
        if data is None:
            return cls.restore(None, None, None)
        try:
            state = orjson.loads(data)
            if state.get("format") != 1:
                raise ValueError(f"format {state.get('format')!r}")
            online = OnlineModel.frozen(
                [str(n) for n in state["names"]],
                (state["means"], state["stds"], state["weights"], float(state["intercept"])),
                ready=bool(state["ready"]),
            )
            version = state["version"]
            blender = Blender.fixed(float(state["weight"]), None if version is None else str(version))
        except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ModelIntegrityError(f"a learner's serving state is malformed: {exc!r}") from None
        return cls(online=online, blender=blender)

    @classmethod
    def restore(cls, online: bytes | None, blender: bytes | None, log: bytes | None) -> Learner:
        """The learner from its snapshot (None: new models) and the log written since."""
        learner = cls(
            online=OnlineModel.from_bytes(online) if online else OnlineModel(),
            blender=Blender.from_dict(orjson.loads(blender)) if blender else Blender(),
        )
        for line in (log or b"").splitlines():
            try:
                entry = orjson.loads(line)
                if entry == [LEARN]:
                    learner.learn_waiting()
                    continue
                waits = entry[0] == WAIT
                names, rows = entry[1:] if waits else entry
                versions = [row[0][2] if len(row[0]) > 2 else None for row in rows] if waits else None
                keys = [row[0][:2] for row in rows] if waits else []
                rows = [row[1:] for row in rows] if waits else rows
                vectors = [row[3:] for row in rows]
                labels = [int(row[0]) for row in rows]
                if not set(labels) <= {0, 1}:
                    raise ValueError(f"labels are 0 or 1, got {sorted(set(labels) - {0, 1})}")
                batch_p = [float(row[1]) for row in rows]
                online_p: list[Any] = [None if row[2] is None else float(row[2]) for row in rows]
            except (orjson.JSONDecodeError, TypeError, ValueError, IndexError) as exc:
                raise ModelIntegrityError(f"learner log line is malformed: {exc!r}") from None
            if waits:
                learner.wait(keys, vectors, labels, batch_p, online_p, feature_names=names, versions=versions)
            else:  # learned as it was logged (the log of a worker before labels waited for ticks)
                learner._apply(vectors, labels, batch_p, online_p, names)
                learner.logged += len(labels)
        return learner
