"""What the HTTP API answers, without HTTP: a customer's features and latest prediction, and fresh scores.

:class:`CustomerService` reads the same Redis state and model registry the scoring workers use and never
writes either. Features come from :func:`churnstream.streams.feature_lookup.lookup` (the one read of
features as of a time, shared with ``churnstream features``), probabilities from
:meth:`ModelSet.score <churnstream.models.serving.ModelSet.score>` with each partition's online learner
as it served at the time asked (the store keeps each partition's learner history: one state per sweep
tick that taught it something), so a score as of the time of one of the stream's predictions carries the
same features and probabilities as that prediction while the model that made it still serves.
:mod:`churnstream.streams.api` puts HTTP around it.

Errors a caller can fix are :class:`RequestError` subclasses carrying their HTTP status::

    RequestError (ChurnstreamError)
    ├── UnknownCustomerError   404: the store holds nothing about the customer
    ├── AsOfError              422: a time the store cannot answer exactly, or not a time at all
    ├── TooManyCustomersError  413: more customers than CHURN_API_MAX_BATCH in one request
    └── NoModelError           503: no current model in the registry yet (features still answer)
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from churnstream.errors import ChurnstreamError, EventError, ModelNotFoundError
from churnstream.events import format_time, now_ms, parse_time
from churnstream.features.labels import (
    LATEST_FOLLOWED,
    LATEST_MODEL,
    LATEST_RISK,
    P_AS_OF,
    P_BATCH,
    P_CHURN,
    P_ID,
    P_MODEL,
    P_ONLINE,
)
from churnstream.features.state import event_ids_at
from churnstream.features.store import FeatureStore
from churnstream.ids import event_fingerprint
from churnstream.messages import Prediction
from churnstream.models.learner import Learner
from churnstream.models.serving import ModelSet, load_models, restore_learner
from churnstream.models.value import value_at_risk
from churnstream.settings import Settings
from churnstream.streams.feature_lookup import Lookup, NotServable, UnknownCustomer, find

if TYPE_CHECKING:
    from churnstream.models.explain import Explained

log = logging.getLogger(__name__)


PAST_LEARNERS_KEPT = 64  # past learners a service keeps decoded (each a few KB)

# a queued request: its lookups, the learner of each (None: its partition's current one), whether to
# explain, and the future its answers go to
Queued = tuple[list["Lookup"], list["Learner | None"], bool, Future[list["Scored"]]]


class RequestError(ChurnstreamError):
    """A request the service cannot answer as asked; ``status`` is its HTTP status, ``code`` its name."""

    status = 400
    code = "bad_request"


class UnknownCustomerError(RequestError):
    status = 404
    code = "unknown_customer"


class AsOfError(RequestError):
    status = 422
    code = "invalid_as_of"


class TooManyCustomersError(RequestError):
    status = 413
    code = "too_many_customers"


class NoModelError(RequestError):
    status = 503
    code = "no_model"


def parse_as_of(value: Any) -> int | None:
    """An ``as_of`` of a request as epoch ms: an RFC 3339 string or integer epoch ms; None when absent.

    >>> parse_as_of("2024-05-01T00:00:00Z"), parse_as_of(1000), parse_as_of(None)
    (1714521600000, 1000, None)
    >>> parse_as_of("yesterday")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    AsOfError: as_of: 'yesterday' is not an RFC 3339 time with an offset ...
    """
    if value is None:
        return None
    try:
        return parse_time(value, "as_of")
    except EventError as exc:
        raise AsOfError(str(exc)) from None


@dataclass(frozen=True, slots=True)
class Scored:
    """One customer scored as of a time: the prediction, and what explains it where that is known."""

    prediction: Prediction
    value_at_risk: float | None
    reasons: list[Any] | None  # Reason objects, largest contribution first
    explanation: dict[str, Any] | None  # {unit, base} of the contributions

    def to_json(self) -> dict[str, Any]:
        out = self.prediction.to_json()
        out["value_at_risk"] = self.value_at_risk
        out["top_reasons"] = None if self.reasons is None else [r.to_json() for r in self.reasons]
        out["explanation"] = self.explanation
        return out


def latest_prediction(
    found: Lookup,
    settings: Settings,
    metadata_of: Callable[[str | None], Mapping[str, Any] | None] = lambda version: None,
) -> dict[str, Any] | None:
    """The customer's latest prediction as the stream emitted it (its probabilities, model and risk
    category), or None before the first.

    The scorer keeps it apart from the predictions still waiting for their label (``status: "pending"``),
    so it stays after its label is known (``status: "labelled"``; ``churn_outcomes`` has the outcome), and
    says when it is one the scorer does not follow to an outcome (``"unfollowed"``: see :func:`_status`).
    States written before it was kept have only the pending ones: their newest, or None. Its risk category
    is the one the stream gave it; for a pending one of such a state, the thresholds of the model that
    made it (``metadata_of`` its version) where no setting overrides them.
    """
    held = found.state.get("scoring", {})
    pending = held.get("pend") or []
    newest = max(pending, key=lambda row: row[P_AS_OF]) if pending else None
    last = held.get("last")
    if last is not None and (newest is None or last[P_AS_OF] >= newest[P_AS_OF]):
        row, version, risk, status = last, last[LATEST_MODEL], last[LATEST_RISK], _status(last, pending)
    elif newest is not None:  # a state written before the latest was kept apart
        row, version, status = newest, newest[P_MODEL] if len(newest) > P_MODEL else None, "pending"
        risk = settings.risk_category(newest[P_CHURN], _thresholds(metadata_of(version)))
    else:
        return None
    return {
        "prediction_id": row[P_ID],
        "as_of": format_time(row[P_AS_OF]),
        "model_version": version,
        "batch_probability": row[P_BATCH],
        "online_probability": row[P_ONLINE],
        "churn_probability": row[P_CHURN],
        "risk_category": risk,
        "status": status,
    }


def _status(last: list[Any], pending: list[list[Any]]) -> str:
    """``pending`` while its label is not known, ``labelled`` once it is, ``unfollowed`` for a prediction
    the scorer does not follow to an outcome (of a burst of events, only some predictions are)."""
    if any(p[P_ID] == last[P_ID] for p in pending):
        return "pending"
    return "labelled" if len(last) <= LATEST_FOLLOWED or last[LATEST_FOLLOWED] else "unfollowed"


class CustomerService:
    """Read-only answers about customers from a feature store and the model registry (see the module).

    ``models``: None loads the registry's current model on first use (and again until there is one).
    Models and the partitions' online learners are refreshed every ``CHURN_MODEL_POLL_SECONDS``
    (:meth:`refresh`), the way the workers pick up a promoted model.
    """

    def __init__(self, *, settings: Settings, store: FeatureStore, models: ModelSet | None = None) -> None:
        self.settings = settings
        self.store = store
        self._models = models
        self._lock = (
            threading.Lock()
        )  # scoring, one batch at a time (scikit-learn's thread limits are global)
        self._loading = threading.Lock()
        self._queued: list[Queued] = []  # see score_many
        self._past: dict[bytes | None, Learner] = {}  # see _past_learner
        self._metadata: dict[str, Mapping[str, Any]] = {}  # models that made held predictions (see customer)
        self._queued_lock = threading.Lock()
        self._refreshed = time.monotonic()

    # -- models ------------------------------------------------------------------------------------
    @property
    def models(self) -> ModelSet:
        """The models, loaded now if none were (:class:`NoModelError` while the registry has none)."""
        models = self._models
        if models is None:
            with self._loading:
                if self._models is None:
                    try:
                        self._models = load_models(self.settings, self.store)
                    except ModelNotFoundError as exc:
                        raise NoModelError(str(exc)) from None
                models = self._models
        return models

    @property
    def model_version(self) -> str | None:
        return None if self._models is None else self._models.version

    @property
    def loaded_models(self) -> ModelSet | None:
        """The models, once loaded (None before: never loads them, unlike :attr:`models`)."""
        return self._models

    def refresh(self) -> bool:
        """Load a newly promoted model and restore the learners again from their latest checkpoints (built
        aside, then swapped in, so requests meanwhile use the previous ones); True when the model changed.
        """
        self._refreshed = time.monotonic()
        if self._models is None:
            try:
                _ = self.models
            except NoModelError:
                return False
            return True
        models = self._models
        changed = models.maybe_reload()
        fresh = {p: restore_learner(self.store, p) for p in list(models.learners)}
        with self._lock:
            models.replace_learners(fresh)
        return changed

    def refresh_due(self) -> bool:
        return time.monotonic() - self._refreshed >= self.settings.model_poll_seconds

    # -- reads -------------------------------------------------------------------------------------
    def find(self, customer_id: str, as_of: int | None = None) -> Lookup:
        """The customer's features as of ``as_of`` (default: the event time its partition has reached), by
        the rules ``churnstream features`` follows (:func:`~churnstream.streams.feature_lookup.find`):
        404 for an unknown customer, 422 for an ``as_of`` the store cannot answer exactly."""
        try:
            return find(self.store, customer_id, as_of)
        except UnknownCustomer as exc:
            raise UnknownCustomerError(str(exc)) from None
        except NotServable as exc:
            raise AsOfError(str(exc)) from None

    def customer(self, customer_id: str) -> dict[str, Any]:
        """``{customer_id, as_of, features, latest_prediction}`` as of the partition's event time."""
        found = self.find(customer_id)
        return {
            "customer_id": customer_id,
            "as_of": format_time(found.as_of),
            "features": found.features,
            "latest_prediction": latest_prediction(found, self.settings, self._metadata_of),
        }

    def _metadata_of(self, version: str | None) -> Mapping[str, Any] | None:
        """The metadata of model ``version`` (read once); the current model's for None or a version no
        longer in the registry."""
        models = self._models
        current = None if models is None else models.loaded.metadata
        if version is None or models is None or version == models.version:
            return current
        if version not in self._metadata:
            try:
                self._metadata[version] = models.registry.metadata(version)
            except ChurnstreamError:  # removed from the registry since: the current model's
                return current
        return self._metadata[version]

    def score(self, customer_id: str, as_of: int | None = None, *, reasons: bool = True) -> Scored:
        """A fresh prediction of one customer (see :meth:`score_many`)."""
        return self.score_many([self.find(customer_id, as_of)], reasons=reasons)[0]

    def learners_at(self, found: Sequence[Lookup]) -> list[Learner | None | AsOfError]:
        """The online learner the stream scored each lookup's customer with at its time (one Redis round
        trip for all; :func:`where_scored`): None where the partition keeps no history (its current
        learner serves), an :class:`AsOfError` for a time before the history the store still keeps."""
        asked = [where_scored(f, self.settings) for f in found]
        history = self.store.learner_history(
            (f.partition, bound) for f, (bound, _) in zip(found, asked, strict=True)
        )
        out: list[Learner | None | AsOfError] = []
        for f, (bound, sole) in zip(found, asked, strict=True):
            h = history[(f.partition, bound)]
            if h is None:
                out.append(None)
                continue
            # the record learned right after this very event was scored: the one before it served it
            after_it = bool(h.records) and h.records[0].at == f.as_of and h.records[0].reached_by == sole
            known, state = h.served(before_latest=sole is not None and after_it)
            if known:
                out.append(self._past_learner(state))
            else:
                out.append(
                    AsOfError(
                        f"as_of {format_time(f.as_of)} is before the online model's history the store "
                        "still keeps for this customer's partition (exact after "
                        f"{format_time(h.known_from or 0)}; it keeps "
                        f"{self.settings.learner_history_kept} sweep ticks' states)"
                    )
                )
        return out

    def _past_learner(self, state: bytes | None) -> Learner:
        """:meth:`Learner.serving_only` of ``state``, the last few kept (requests ask about few times)."""
        with self._queued_lock:  # request threads share it
            held = self._past.pop(state, None) or Learner.serving_only(state)
            self._past[state] = held
            while len(self._past) > PAST_LEARNERS_KEPT:
                del self._past[next(iter(self._past))]
        return held

    def score_many(
        self,
        found: Sequence[Lookup],
        *,
        reasons: bool = True,
        learners: Sequence[Learner | None | AsOfError] | None = None,
    ) -> list[Scored]:
        """Predictions shaped like ``churn_predictions`` (``trigger`` = ``request``, a random
        ``prediction_id``: a request is not an event and is never replayed), each with the online learner
        of its time (``learners``, from :meth:`learners_at`; read here when not given). An
        :class:`AsOfError` for a time before the learner history kept.

        Requests arriving together are scored together: each joins a queue, and whichever thread holds
        the scoring lock next scores everything queued in one pass of the models (a model pass costs
        about the same for one row as for fifty), so the rate of scores grows with the load instead of
        queueing behind one model call per request.
        """
        if not found:
            return []
        models = self.models
        given = self.learners_at(found) if learners is None else learners
        for learner in given:
            if isinstance(learner, AsOfError):
                raise learner
        mine: Future[list[Scored]] = Future()
        with self._queued_lock:
            self._queued.append(
                (list(found), [g for g in given if not isinstance(g, AsOfError)], reasons, mine)
            )
        with self._lock:
            if not mine.done():
                with self._queued_lock:
                    batch, self._queued = self._queued, []
                self._score_batch(models, batch)
        return mine.result()

    def _score_batch(self, models: ModelSet, batch: list[Queued]) -> None:
        """Score every queued request in one pass and answer each (its error, should scoring fail)."""
        found = [f for lookups, _, _, _ in batch for f in lookups]
        explain = [want for lookups, _, want, _ in batch for _ in lookups]
        try:
            rows = [f.features for f in found]
            # each row's learner: its time's from the history, else its partition's current one
            chosen = [
                models.learner(f.partition) if past is None else past
                for f, past in zip(found, (p for _, pasts, _, _ in batch for p in pasts), strict=True)
            ]
            keys = _keys(chosen)
            learners = dict(zip(keys, chosen, strict=True))
            X, batch_p, online_p, churn_p = models.score(rows, keys, learners=learners)
            which = [i for i, want in enumerate(explain) if want]
            explained: list[Explained | None] = [None] * len(found)
            if which:
                got = self._explain(
                    models, X[which], [rows[i] for i in which], [keys[i] for i in which], learners
                )
                for i, e in zip(which, got, strict=True):
                    explained[i] = e
            version = models.version
            thresholds = _thresholds(models.loaded.metadata)
            scored_at = now_ms()
            out = []
            for i, f in enumerate(found):
                online = online_p[i]
                cp = round(float(churn_p[i]), 6)
                prediction = Prediction(
                    prediction_id=str(uuid.uuid4()),
                    customer_id=f.customer_id,
                    as_of=f.as_of,
                    scored_at=scored_at,
                    trigger="request",
                    event_id=None,
                    model_version=version,
                    batch_probability=round(float(batch_p[i]), 6),
                    online_probability=None if online is None else round(float(online), 6),
                    churn_probability=cp,
                    risk_category=self.settings.risk_category(cp, thresholds),
                    features=dict(f.features),  # type: ignore[arg-type]
                )
                why = explained[i]
                out.append(
                    Scored(
                        prediction=prediction,
                        value_at_risk=value_at_risk(cp, f.features, horizon_days=self.settings.horizon_days),
                        reasons=None if why is None else list(why.reasons),
                        explanation=None if why is None else why.to_json(),
                    )
                )
        except BaseException as exc:
            for _, _, _, future in batch:
                future.set_exception(exc)
            return
        start = 0
        for lookups, _, _, future in batch:
            future.set_result(out[start : start + len(lookups)])
            start += len(lookups)

    @staticmethod
    def _explain(
        models: ModelSet, X: Any, rows: list[Any], keys: list[int], learners: Mapping[int, Learner]
    ) -> list[Explained | None]:
        """Each row's reasons, by the learner its key names (one pass per learner)."""
        from churnstream.models.explain import explain
        from churnstream.models.serving import by_partition

        found: list[Explained | None] = [None] * len(rows)
        for key, idx in by_partition(keys).items():
            learner = learners[key]
            got = explain(
                models.loaded.model, learner.online, learner.blender, X[idx], [rows[i] for i in idx], top_k=3
            )
            for i, e in zip(idx, got, strict=True):
                found[i] = e
        return found


def where_scored(found: Lookup, settings: Settings) -> tuple[int, str | None]:
    """Where in its partition's learner history the stream scored ``found``'s customer as of its time:
    the records before the bound returned served it, and the fingerprint of the customer's one event at
    that time (None: none, or several), after which the record of the same time was learned (the event that
    reached a sweep tick is scored before the tick's learning, every later event after it).

    A time holding an event of the customer is that event's prediction: scored by what was learned up to
    then. A sweep tick without one is the sweep's: scored once the partition's time reached the tick plus
    the allowed lateness (:func:`~churnstream.features.sweep.sweep_tick`), by what was learned before.
    No prediction of the stream holds another time: the learner as of then answers. Not exact for a late
    event (scored with what was learned up to the time it arrived) or several events of one customer in
    one millisecond of a tick's learning."""
    at = found.as_of
    ids = event_ids_at(found.state, at)
    if ids:
        return at + 1, event_fingerprint(ids[0]) if len(ids) == 1 else None
    if at % settings.sweep_interval_ms == 0:
        return at + settings.lateness_ms, None
    return at + 1, None


def _keys(learners: Sequence[Learner]) -> list[int]:
    """A number per learner object, the same for the same object: rows to group by learner."""
    numbers: dict[int, int] = {}
    return [numbers.setdefault(id(learner), len(numbers)) for learner in learners]


def _thresholds(model: Mapping[str, Any] | None) -> Any:
    return None if model is None else model.get("risk_thresholds")


__all__ = [
    "AsOfError",
    "CustomerService",
    "NoModelError",
    "RequestError",
    "Scored",
    "TooManyCustomersError",
    "UnknownCustomerError",
    "latest_prediction",
    "parse_as_of",
    "where_scored",
]
