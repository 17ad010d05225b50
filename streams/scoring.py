"""Scoring a unit of work's rows and queueing its outputs: predictions, alerts, outcomes, dead letters and
the columnar record for the monitor (:class:`BatchScoring`), and teaching the online learners.

The decisions it applies are plain functions elsewhere: prediction and alert ids
(:mod:`churnstream.ids`), the value at risk (:mod:`churnstream.models.value`), the alert policies
(:mod:`churnstream.models.alert_policy`, chosen by ``CHURN_ALERT_POLICY``), the label rule
(:mod:`churnstream.features.labels`); the models' maths is :class:`~churnstream.models.serving.ModelSet`.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from churnstream.dead_letter import dead_letter_payload
from churnstream.events import now_ms
from churnstream.features.definitions import FEATURE_NAMES
from churnstream.features.labels import (
    Resolved,
    add_pending,
    due_time,
    next_answer,
    note_latest,
    resolve_by_event,
)
from churnstream.features.state import ScoringState, scoring_state
from churnstream.features.store import LearnerRecord, Transaction
from churnstream.ids import alert_id_for, prediction_id_for_event, prediction_id_for_sweep
from churnstream.messages import OUTCOME_COLUMNS, Alert, DeadLetter, MonitoringBatch, Outcome, Prediction
from churnstream.models.alert_policy import (
    HIGH_VALUE_AT_RISK,
    PERSONAL_SHARE,
    Budget,
    is_holdout,
    month_of,
    pick_under_budget,
    step_high_risk,
    threshold_for,
)
from churnstream.models.serving import ModelSet, by_partition
from churnstream.models.value import value_at_risk, value_over_horizon
from churnstream.settings import Settings
from churnstream.streams.scorer_metrics import ScorerMetrics

if TYPE_CHECKING:
    from churnstream.models.learner import Learner
    from churnstream.streams.worker import Worker


@dataclass(slots=True)
class BatchReport:
    """What one processed batch did (for logs, metrics and tests)."""

    events: int = 0
    skipped: int = 0
    duplicates: int = 0
    predictions: int = 0
    sweeps: int = 0
    outcomes: int = 0
    alerts: int = 0
    dead_letters: int = 0


@dataclass(slots=True)
class ScoringRows:
    """Predictions of one batch waiting to be produced, and what they need for alerts and learning."""

    customer_ids: list[str] = field(default_factory=list)
    as_of: list[int] = field(default_factory=list)
    triggers: list[str] = field(default_factory=list)
    event_ids: list[str | None] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    partitions: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class AlertRule:
    """The alert policy in force for one unit of work: the settings' choice with the model's thresholds."""

    name: str  # "value_at_risk" or "high_risk"
    threshold: float | None  # the priority threshold (value_at_risk)
    describe: str  # the alerts' ``policy`` field
    personal: float = HIGH_VALUE_AT_RISK  # the value at risk from which the actions have a person call

    @classmethod
    def of(cls, settings: Settings, metadata: dict[str, Any]) -> AlertRule:
        """``CHURN_ALERT_POLICY`` with the served model's priority threshold for the budget share; a model
        without one (trained before the budget existed) falls back to ``high_risk``, saying so."""
        cooldown = f"cooldown={settings.alert_cooldown_days:g}d"
        high, _ = settings.risk_thresholds(metadata.get("risk_thresholds"))
        # a person calls the top PERSONAL_SHARE by value at risk, in the model's own measure of value
        personal = threshold_for(metadata.get("alert_policy"), PERSONAL_SHARE)
        personal = HIGH_VALUE_AT_RISK if personal is None else personal
        if settings.alert_policy == "value_at_risk":
            share = settings.alert_budget_share
            threshold = threshold_for(metadata.get("alert_policy"), share)
            if threshold is not None:
                text = f"value_at_risk budget={share:g}/month threshold={threshold:g} {cooldown}"
                return cls("value_at_risk", threshold, text, personal)
            return cls(
                "high_risk",
                None,
                f"high_risk high={high:g} {cooldown} (model has no value threshold)",
                personal,
            )
        return cls("high_risk", None, f"high_risk high={high:g} {cooldown}", personal)

    def picks(
        self,
        held: ScoringState,
        risk: str,
        *,
        budget: Budget | None,
        priority: float,
        as_of: int,
        recency_days: float | None,
        share: float,
        cooldown_ms: int,
    ) -> bool:
        """Whether a customer's prediction (in their time order) raises an alert, recording in ``held`` (their
        scoring state) its risk and, when picked, the alert's time: the one decision the scorer makes and
        ``bench/bench_quality.py`` replays. ``budget``: the partition's, for ``value_at_risk``."""
        if self.threshold is not None:
            assert budget is not None, "the value_at_risk policy counts against a partition's budget"
            held["risk"] = risk
            picked = pick_under_budget(
                held,
                budget,
                priority=priority,
                as_of=as_of,
                recency_days=recency_days,
                threshold=self.threshold,
                share=share,
                cooldown_ms=cooldown_ms,
            )
        else:
            picked = step_high_risk(held, risk, as_of=as_of, cooldown_ms=cooldown_ms)
        if picked:
            held["alerted"] = as_of
        return picked


def add_to(total: BatchReport, part: BatchReport) -> None:
    for name in BatchReport.__slots__:  # type: ignore[attr-defined]
        setattr(total, name, getattr(total, name) + getattr(part, name))


class BatchScoring:
    """Turns a unit's rows and resolved labels into outputs on ``worker`` and learning in its transaction."""

    def __init__(
        self, *, settings: Settings, models: ModelSet, metrics: ScorerMetrics, worker: Worker[Any]
    ) -> None:
        self.settings = settings
        self.topics = settings.topics
        self.models = models
        self.metrics = metrics
        self.worker = worker
        self.horizon = settings.horizon_ms
        self.lateness = settings.lateness_ms
        self.budgets: dict[int, Budget] = {}  # the partitions' alert budgets as this worker last wrote them
        # partition -> the count of forgotten customers its learner checkpoint was written at (erase_rows)
        self.erased: dict[int, int] = {}
        self.recorded: dict[int, bytes] = {}  # partition -> the learner state this worker recorded last

    def budget(self, partition: int) -> Budget:
        """``partition``'s alert budget: read from the store the first time, then kept here as written (so a
        batch does not wait for the previous one's write to read it back)."""
        budget = self.budgets.get(partition)
        if budget is None:
            budget = self.budgets[partition] = Budget.from_text(self.worker.store.alert_budget(partition))
        return budget

    def forget_budgets(self) -> None:
        """Drop the kept budgets, erasure counts and recorded learner states (after a failed write or a
        rebalance they are read again)."""
        self.budgets.clear()
        self.erased.clear()
        self.recorded.clear()

    def finish(
        self,
        tx: Transaction,
        scoring: ScoringRows,
        resolved: list[tuple[str, Resolved]],
        letters: list[DeadLetter],
        report: BatchReport,
    ) -> list[tuple[str, Resolved]]:
        """Score ``scoring``'s rows, add them as pending predictions, raise alerts, and queue every output
        of the unit (predictions, alerts, outcomes, dead letters, one record for the monitor) on the
        worker; returns the labels resolved (those given and those the new predictions find at once).
        """
        resolved = list(resolved)
        models = self.models
        version = models.version
        scored_at = now_ms()
        emit = self.worker.emit
        n = len(scoring.rows)
        monitoring_cols: dict[str, list[Any]] = {}
        if n:
            X, batch_p, online_p, churn_p = models.score(scoring.rows, scoring.partitions)
            # shadow (#24): the shadow's batch probabilities, one vectorised call; decisions ignore them
            shadow_p = models.shadow_score(scoring.rows, X)
            shadow_version = models.shadow.version if shadow_p is not None else None
            shadow_list = None if shadow_p is None else np.round(shadow_p, 6).tolist()
            metadata = models.loaded.metadata
            model_risk = metadata.get("risk_thresholds")
            rule = AlertRule.of(self.settings, metadata)
            horizon_days = self.settings.horizon_days
            share = self.settings.alert_budget_share
            budgets: dict[int, Budget] = {}
            if rule.threshold is not None:  # the partitions' counts, as last committed
                budgets = {p: self.budget(p) for p in set(scoring.partitions)}
            # the pending vectors: the batch matrix's rows when it is in FEATURE_NAMES order, packed as
            # they are (NaN -> null); kept predictions are ~90% of rows
            vectors: np.ndarray | list[list[Any]]
            if models.loaded.model.feature_names == list(FEATURE_NAMES):
                vectors = np.ascontiguousarray(X, dtype=np.float64)
            else:
                vectors = [[row[name] for name in FEATURE_NAMES] for row in scoring.rows]
            alerts_rows: list[int] = []
            predictions: list[Prediction] = []
            for i in range(n):
                cid = scoring.customer_ids[i]
                as_of = scoring.as_of[i]
                event_id = scoring.event_ids[i]
                pid = prediction_id_for_event(event_id) if event_id else prediction_id_for_sweep(cid, as_of)
                bp = round(float(batch_p[i]), 6)
                online_value = online_p[i]
                op = None if online_value is None else round(float(online_value), 6)
                cp = round(float(churn_p[i]), 6)
                risk = self.settings.risk_category(cp, model_risk)
                var = value_at_risk(cp, scoring.rows[i], horizon_days=horizon_days)
                prediction = Prediction(
                    prediction_id=pid,
                    customer_id=cid,
                    as_of=as_of,
                    scored_at=scored_at,
                    trigger=scoring.triggers[i],
                    event_id=event_id,
                    model_version=version,
                    batch_probability=bp,
                    online_probability=op,
                    churn_probability=cp,
                    risk_category=risk,
                    features=scoring.rows[i],
                    value_at_risk=var,
                )
                shadow = None
                if shadow_list is not None:
                    shadow = [shadow_version, shadow_list[i]]
                    prediction.shadow_model_version = shadow_version
                    prediction.shadow_probability = shadow_list[i]
                predictions.append(prediction)
                state = tx.state(cid)
                followed = add_pending(
                    state,
                    pid,
                    as_of,
                    bp,
                    op,
                    cp,
                    vectors[i],
                    horizon_ms=self.horizon,
                    lateness_ms=self.lateness,
                    recency_days=scoring.rows[i]["recency_days"],
                    shadow=shadow,
                    model_version=version,
                )
                # an answer already known after as_of (a late event, a sweep, a label earlier in the
                # batch) labels it at once
                answer = next_answer(state, as_of)
                if answer is not None:
                    resolved += [
                        (cid, r)
                        for r in resolve_by_event(
                            state, answer[0], churned=answer[1], horizon_ms=self.horizon
                        )
                    ]
                tx.due[cid] = due_time(state, horizon_ms=self.horizon)
                note_latest(state, pid, as_of, bp, op, cp, version, risk, followed=followed)
                held = scoring_state(state)  # the scorer's part of the state: risk, last alert, labels
                if rule.picks(
                    held,
                    risk,
                    budget=budgets.get(scoring.partitions[i]),
                    priority=var,
                    as_of=as_of,
                    recency_days=scoring.rows[i]["recency_days"],
                    share=share,
                    cooldown_ms=self.settings.cooldown_ms,
                ):
                    alerts_rows.append(i)
                tx.touch(cid)
            latest = month_of(max(scoring.as_of))
            for p, budget in budgets.items():
                budget.prune(latest)
                tx.set_alert_budget(p, budget.to_text())
            predictions_topic = self.topics.churn_predictions
            for prediction in predictions:
                emit(predictions_topic, prediction.customer_id, prediction.to_json())
                if prediction.trigger == "sweep":
                    report.sweeps += 1
                else:
                    report.predictions += 1
            swept = sum(1 for t in scoring.triggers if t == "sweep")
            if swept:
                self.metrics.predictions.labels("sweep").inc(swept)
            if n - swept:
                self.metrics.predictions.labels("event").inc(n - swept)
            for risk, count in Counter(p.risk_category for p in predictions).items():
                self.metrics.predictions_by_risk.labels(risk).inc(count)
            self.metrics.probability.inc(sum(p.churn_probability for p in predictions))
            if alerts_rows:
                self.alerts(X, alerts_rows, predictions, scoring, report, rule)
            monitoring_cols = {
                "prediction_id": [p.prediction_id for p in predictions],  # a unit answered again: same ids
                "as_of": list(scoring.as_of),
                "customer_id": list(scoring.customer_ids),
                "trigger": list(scoring.triggers),
                **{name: [row[name] for row in scoring.rows] for name in FEATURE_NAMES},
                "batch_probability": [p.batch_probability for p in predictions],
                "online_probability": [p.online_probability for p in predictions],
                "churn_probability": [p.churn_probability for p in predictions],
            }
        outcome_cols = self.outcomes(tx, resolved, report)
        for letter in letters:
            emit(self.topics.dead_letter, letter.kafka_key, dead_letter_payload(letter))
            self.metrics.dead_letters.labels(letter.stage).inc()  # rare: no need to batch
            report.dead_letters += 1
        if n or resolved:
            record = MonitoringBatch(
                batch_id=str(uuid.uuid4()),
                created_at=scored_at,
                model_version=version,
                feature_names=list(FEATURE_NAMES),
                predictions=monitoring_cols,
                outcomes=outcome_cols,
            )
            emit(self.topics.monitoring_batches, version, record.to_json())
        return resolved

    def outcomes(
        self, tx: Transaction, resolved: list[tuple[str, Resolved]], report: BatchReport
    ) -> dict[str, list[Any]]:
        cols: dict[str, list[Any]] = {k: [] for k in OUTCOME_COLUMNS}
        if not resolved:
            return cols
        sources: Counter[str] = Counter()
        outcomes_topic = self.topics.churn_outcomes
        horizon_days = self.settings.horizon_days
        spent, tenure = FEATURE_NAMES.index("spent_total"), FEATURE_NAMES.index("tenure_days")
        for cid, r in resolved:
            outcome = Outcome(
                prediction_id=r.prediction_id,
                customer_id=cid,
                as_of=r.as_of,
                labeled_at=r.labeled_at,
                label=r.label,
                source=r.source,
                batch_probability=r.batch_probability,
                online_probability=r.online_probability,
                churn_probability=r.churn_probability,
                customer_value=value_over_horizon(
                    {"spent_total": r.features[spent], "tenure_days": r.features[tenure]},
                    horizon_days=horizon_days,
                ),
                model_version=r.model_version,
            )
            if r.shadow is not None:
                outcome.shadow_model_version, outcome.shadow_probability = r.shadow
            self.worker.emit(outcomes_topic, cid, outcome.to_json())
            sources[r.source] += 1
            report.outcomes += 1
            cols["as_of"].append(r.as_of)
            cols["labeled_at"].append(r.labeled_at)
            cols["label"].append(r.label)
            cols["source"].append(r.source)
            cols["batch_probability"].append(r.batch_probability)
            cols["online_probability"].append(r.online_probability)
            cols["churn_probability"].append(r.churn_probability)
            cols["model_version"].append(r.model_version)
            cols["prediction_id"].append(r.prediction_id)
        for cid in {cid for cid, _ in resolved}:
            tx.due[cid] = due_time(tx.state(cid), horizon_ms=self.horizon)
        for source, count in sources.items():
            self.metrics.outcomes.labels(source).inc(count)
        return cols

    def learn(
        self,
        tx: Transaction,
        resolved: list[tuple[str, Resolved]],
        *,
        partitions: Iterable[int] = (),
        times: Mapping[int, int] | None = None,
        reached_by: Mapping[int, str] | None = None,
    ) -> None:
        """Hand each partition's learner its resolved labels (logged in ``tx``), and let the learners of
        ``partitions`` (those whose sweep tick the unit finished) learn what waits: so the online model
        learns at ticks of event time, in the labels' own order, and answers the same whichever batches
        the stream came in. What a learner serves from then on joins its history at its partition's event
        time (``times``, the scorer's, and ``reached_by``, the event that brought each partition there;
        :meth:`_record`)."""
        times, reached_by = times or {}, reached_by or {}
        where = [tx.partitions[cid] for cid, _ in resolved]
        for p, idx in by_partition(where).items():
            learner = self.models.learner(p)
            done = [resolved[i][1] for i in idx]
            tx.log_learned(
                p,
                learner.wait(
                    [[r.as_of, r.prediction_id] for r in done],
                    [r.features for r in done],
                    [r.label for r in done],
                    [r.batch_probability for r in done],
                    [r.online_probability for r in done],
                    feature_names=FEATURE_NAMES,
                    versions=[r.model_version for r in done],
                ),
            )
        for p in partitions:
            learner = self.models.learner(p)
            untaught = not learner.has_learned
            checkpoint = learner.learn_waiting()
            if checkpoint.snapshot:
                tx.save_learner(p, *learner.snapshot_bytes())
            elif checkpoint.log:
                tx.log_learned(p, checkpoint.log)
            if (checkpoint.snapshot or checkpoint.log) and p in times:
                self._record(tx, p, times[p], reached_by.get(p), learner, complete=untaught)
        self.erase_rows(tx, times)

    def _record(
        self,
        tx: Transaction,
        partition: int,
        at: int,
        reached_by: str | None,
        learner: Learner,
        *,
        complete: bool,
    ) -> None:
        """Add what ``learner`` serves from event time ``at`` on (after the event of fingerprint
        ``reached_by`` that brought the partition there) to its partition's history, unless it is what
        this worker recorded last there (most ticks teach fewer labels than a learning step takes: the
        parameters stay). ``complete``: it had learned nothing before, so the history starts with it."""
        state = learner.serving_bytes()
        if self.recorded.get(partition) == state:
            return
        self.recorded[partition] = state
        keep = self.settings.learner_history_kept
        tx.record_learner(partition, LearnerRecord(at, reached_by, state, keep=keep, complete=complete))

    def erase_rows(self, tx: Transaction, times: Mapping[int, int] | None = None) -> None:
        """Where ``churnstream forget`` removed customers since a partition's learner checkpoint was
        written, write it again with no raw row in its log: learn what waits now, and write the snapshot
        (which empties the log). So the features and labels of a forgotten customer leave Redis at this
        worker's next write of the partition, and a restore still gives the learner this worker has (the
        labels learned are aggregates, as every customer's are). Only the partition's owner writes its
        learner, so this is done here, not by ``forget``."""
        store = self.worker.store
        for p in list(self.models.learners):
            count = store.erased_count(p)
            if count is None:
                continue
            done = self.erased.get(p)
            if done is None:
                done = self.erased[p] = store.learner_erased(p)
            if count <= done:
                continue
            learner = self.models.learner(p)
            untaught = not learner.has_learned
            learner.learn_waiting()  # the snapshot below holds it: no log line
            learner.logged = 0
            tx.save_learner(p, *learner.snapshot_bytes())
            tx.set_learner_erased(p, count)
            self.erased[p] = count
            if times and p in times:  # it serves so after the predictions of the partition's time
                self._record(tx, p, times[p] + 1, None, learner, complete=untaught)

    def alerts(
        self,
        X: np.ndarray,
        rows: list[int],
        predictions: list[Prediction],
        scoring: ScoringRows,
        report: BatchReport,
        rule: AlertRule,
    ) -> None:
        from churnstream.models.blend import Blender
        from churnstream.models.explain import explain, recommended_actions

        models = self.models
        partitions = sorted({scoring.partitions[i] for i in rows})
        learners = [models.learner(p) for p in partitions]
        found = explain(  # every partition's rows at once: one batch-model call
            models.loaded.model,
            None,
            Blender(),
            X[rows],
            [scoring.rows[i] for i in rows],
            top_k=3,
            learners=[(learner.online, learner.blender) for learner in learners],
            learner_of=[partitions.index(scoring.partitions[i]) for i in rows],
        )
        reasons: dict[int, Any] = dict(zip(rows, found, strict=True))
        holdout_share = self.settings.alert_holdout_share
        for i in rows:
            top = reasons[i].reasons
            p = predictions[i]
            held_back = is_holdout(p.customer_id, holdout_share)
            alert = Alert(
                alert_id=alert_id_for(p.prediction_id),
                prediction_id=p.prediction_id,
                customer_id=p.customer_id,
                as_of=p.as_of,
                churn_probability=p.churn_probability,
                risk_category=p.risk_category,
                model_version=p.model_version,
                recommended_actions=[]
                if held_back
                else recommended_actions(
                    top,
                    value_at_risk=p.value_at_risk,
                    features=scoring.rows[i],
                    high_value_at_risk=rule.personal,
                ),
                top_reasons=list(top),
                value_at_risk=p.value_at_risk,
                priority=p.value_at_risk,
                policy=rule.describe,
                explanation=reasons[i].to_json(),
                holdout=held_back,
            )
            self.worker.emit(self.topics.churn_alerts, p.customer_id, alert.to_json())
            report.alerts += 1
        self.metrics.alerts.inc(len(rows))
        self.metrics.alert_value.inc(sum(predictions[i].value_at_risk or 0.0 for i in rows))


__all__ = ["AlertRule", "BatchReport", "BatchScoring", "ScoringRows", "add_to"]
