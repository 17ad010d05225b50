"""The models a scoring worker serves: the current batch model and one online learner per partition.

:class:`ModelSet` scores rows with the batch model, each row's partition's online model and their blend,
vectorised over all partitions at once. It does no I/O of its own: the registry and the learners'
checkpoints are reached through what its constructor is given.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from churnstream.errors import ModelError, ModelIntegrityError, ModelNotFoundError
from churnstream.models.blend import blend
from churnstream.models.learner import Learner
from churnstream.models.online import OnlineModel, probabilities

if TYPE_CHECKING:
    from churnstream.features.store import FeatureStore
    from churnstream.settings import Settings

log = logging.getLogger(__name__)


def by_partition(partitions: Sequence[int]) -> dict[int, list[int]]:
    """Row indices grouped by partition, in row order.

    >>> by_partition([3, 1, 3, 0])
    {3: [0, 2], 1: [1], 0: [3]}
    """
    groups: dict[int, list[int]] = {}
    for i, p in enumerate(partitions):
        groups.setdefault(p, []).append(i)
    return groups


class ModelSet:
    """The current batch model (swapped in place on promotion) and one :class:`Learner` per partition.

    The online model's state is partitioned like the data: the labels resolved on partition p teach
    partition p's learner, whose checkpoint (``online:<p>``, ``blender:<p>``) is written in the same atomic
    write as p's customers. When a partition moves to another worker its learner moves with it, so any
    number of workers learn every label exactly once and never overwrite each other's checkpoints.
    """

    def __init__(self, *, registry: Any, load_learner: Callable[[int], Learner]) -> None:
        self.registry = registry
        # versions that failed to load, with their files' stamp: tried again only once the files change
        self._shadow_refused: tuple[str, Any] | None = None
        self._refused: tuple[str, Any] | None = None
        self._refused_why = ""
        try:
            self.loaded = registry.load()
        except ModelIntegrityError as exc:
            self.loaded = self._earlier(exc)
        self.loaded.model.warm_up()
        self._load_learner = load_learner
        self.learners: dict[int, Learner] = {}
        self.shadow: Any = None  # shadow (#24): the LoadedModel in the registry's shadow slot, or None
        self._reload_shadow()

    def _earlier(self, error: ModelIntegrityError) -> Any:
        """The latest earlier current version that loads, when the current one cannot (made current by
        hand: ``promote`` refuses it): a worker or API restarted meanwhile serves what the running ones
        kept serving, instead of failing to start; :meth:`not_served` says so. ``error`` when none loads."""
        current = self.registry.current_version()
        for version in reversed(self.registry.history()):
            if version == current:
                continue
            try:
                loaded = self.registry.load(version)
            except ModelError:
                continue
            log.error(
                "%s; serving %s, the latest earlier current model, until it is fixed or rolled back",
                error,
                version,
            )
            self._refuse(current, self.registry.stamp(current), error)
            return loaded
        raise error

    @property
    def version(self) -> str:
        return str(self.loaded.version)

    def maybe_reload(self) -> bool:
        """Load a newly promoted version (and a new shadow); True when the current model changed."""
        self._reload_shadow()
        current = self.registry.current_version()
        if current is None or current == self.loaded.version or self._still(self._refused, current):
            return False
        stamp = self.registry.stamp(current)
        try:
            loaded = self.registry.load(current)
            loaded.model.warm_up()
        except Exception as exc:  # whatever it is, the model being served goes on: said once, not per poll
            error = (
                exc
                if isinstance(exc, ModelError)
                else ModelIntegrityError(f"model version {current} cannot be served: {exc!r}")
            )
            if not isinstance(exc, OSError):  # a file system's hiccup is tried again at the next poll
                self._refuse(current, stamp, error)  # until its files are written again (a copy finished)
            raise error from exc
        self.loaded, self._refused = loaded, None
        for learner in self.learners.values():
            self._serving(learner)
        log.info("now scoring with model version %s", current)
        return True

    def _refuse(self, version: str, stamp: Any, error: Exception) -> None:
        """Keep ``version`` out (and say why in :meth:`not_served`) until its files' ``stamp`` changes."""
        self._refused, self._refused_why = (version, stamp), str(error)

    def not_served(self) -> str | None:
        """Why the registry's current model is not the one served (a version that cannot be loaded, kept
        out until its files change), while it is current; None when the served one is current. The scorer's
        ``/health`` shows it, as the registry and the workers would otherwise disagree in silence."""
        refused = self._refused
        if refused is None or self.registry.current_version() != refused[0]:
            return None
        return f"serving {self.loaded.version}: {self._refused_why}"

    # -- shadow (#24): a second batch model scored beside the current one; it decides nothing -----------

    def _reload_shadow(self) -> None:
        """Follow the registry's shadow slot; a shadow that cannot be loaded is logged and not scored."""
        wanted = getattr(self.registry, "shadow_version", lambda: None)()
        if wanted == self.loaded.version:
            wanted = None
        if wanted == (self.shadow.version if self.shadow is not None else None) or (
            wanted is not None and self._still(self._shadow_refused, wanted)
        ):
            return
        if wanted is None:
            self.shadow = None
            log.info("no model in shadow any more")
            return
        stamp = self.registry.stamp(wanted)
        try:
            shadow = self.registry.load(wanted)
            shadow.model.warm_up()
        except Exception:  # a broken shadow must never stop the scoring of the current model
            log.exception("cannot load model %s for shadow scoring; scoring without a shadow", wanted)
            self.shadow, self._shadow_refused = None, (wanted, stamp)
            return
        self.shadow = shadow
        log.info("scoring model version %s in shadow", wanted)

    def _still(self, refused: tuple[str, Any] | None, version: str) -> bool:
        """Whether ``version`` was refused and its files are as they were then."""
        return refused is not None and refused[0] == version and refused[1] == self.registry.stamp(version)

    def shadow_score(self, rows: list[dict[str, Any]], X: np.ndarray) -> np.ndarray | None:
        """The shadow model's batch probabilities for ``rows`` (``X``: the current model's matrix, reused
        when both models use the same features), or None without a shadow."""
        shadow = self.shadow
        if shadow is None or not rows:
            return None
        model = shadow.model
        if list(model.feature_names) != list(self.loaded.model.feature_names):
            X = model.vectorize(rows)
        return np.asarray(model.predict_proba(X), dtype=float)

    def learner(self, partition: int) -> Learner:
        """Partition ``partition``'s learner, restored from its checkpoint the first time it is needed."""
        learner = self.learners.get(partition)
        if learner is None:
            learner = self.learners[partition] = self._serving(self._load_learner(partition))
        return learner

    def replace_learners(self, learners: dict[int, Learner]) -> None:
        """Serve with ``learners`` (restored again, say) from now on."""
        self.learners = {p: self._serving(learner) for p, learner in learners.items()}

    def _serving(self, learner: Learner) -> Learner:
        learner.blender.serving = self.version  # the blend of another batch model's pairs is not served
        return learner

    def forget(self, partitions: Iterable[int] | None = None) -> None:
        """Drop learners (all by default): after a failed write or a rebalance they are reloaded."""
        if partitions is None:
            self.learners.clear()
        for p in partitions or ():
            self.learners.pop(p, None)

    def score(
        self,
        rows: list[dict[str, Any]],
        partitions: list[int],
        *,
        learners: Mapping[int, Learner] | None = None,
    ) -> tuple[np.ndarray, np.ndarray, list[float | None], np.ndarray]:
        """Score rows (each of its partition's learner) with the batch model, the online models and the
        blend: one matrix, and one pass over all partitions' online models (:func:`probabilities`).
        ``learners``: the learner of each value of ``partitions`` instead of the partitions' own (the
        HTTP API's past learners, :meth:`Learner.serving_only`; the values then name them).

        Returns the batch model's matrix, its probabilities, the online ones (None where the partition's
        online model is not ready) and the blended ones.
        """
        model = self.loaded.model
        X = model.vectorize(rows)
        batch_p = np.asarray(model.predict_proba(X), dtype=float)
        online = np.full(len(rows), np.nan)
        weight = np.zeros(len(rows))
        shared: list[tuple[list[int], OnlineModel]] = []
        for p, idx in by_partition(partitions).items():
            learner = self.learner(p) if learners is None else self._serving(learners[p])
            if not learner.online.ready:
                continue
            weight[idx] = learner.blender.online_weight()
            if list(learner.online.feature_names) == list(model.feature_names):  # one matrix serves both
                shared.append((idx, learner.online))
            else:
                online[idx] = learner.online.predict_many([rows[i] for i in idx])
        if shared:
            take = np.concatenate([idx for idx, _ in shared])
            owner = np.repeat(np.arange(len(shared)), [len(idx) for idx, _ in shared])
            means, stds, weights, intercepts = (
                np.stack(c)[owner] for c in zip(*(m.parameters() for _, m in shared), strict=True)
            )
            online[take] = probabilities(shared[0][1].design(X[take]), means, stds, weights, intercepts)
        online_p: list[float | None] = [None if v != v else v for v in online.tolist()]  # NaN: not ready
        return X, batch_p, online_p, blend(batch_p, online, weight)


def restore_learner(store: FeatureStore, partition: int) -> Learner:
    """Partition ``partition``'s learner as last committed: its snapshot plus the log since."""
    checkpoint = store.learner_checkpoint(partition)
    return Learner.restore(checkpoint.online, checkpoint.blender, checkpoint.learned)


def load_models(settings: Settings, store: FeatureStore) -> ModelSet:
    """The current batch model from the registry, and learners restored from ``store`` when needed."""
    from churnstream.models.registry import ModelRegistry

    registry = ModelRegistry(settings.model_dir)
    if registry.current_version() is None:
        raise ModelNotFoundError(
            f"no current model in {settings.model_dir}: train one first "
            "(churnstream train --events DIR --out MODEL_DIR) or set CHURN_MODEL_DIR"
        )
    return ModelSet(registry=registry, load_learner=functools.partial(restore_learner, store))


__all__ = ["ModelSet", "by_partition", "load_models", "restore_learner"]
