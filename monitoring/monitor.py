"""The drift monitor's logic without Kafka: batches in, windows out, each window judged when it closes.

:meth:`DriftMonitor.add` runs on the event loop and stays cheap: it feeds the window and, for each window
that closes, updates the concept-drift detector and the rolling AUCs and judges the window's drift with
Evidently's tests computed in-process (:mod:`churnstream.monitoring.stattests`, milliseconds). The result is a
:class:`PendingReport`, complete but for the Evidently HTML, which :mod:`churnstream.monitoring.render` draws
in another process; :meth:`PendingReport.report` then gives the ``drift_reports`` message.

Each window also gets the model's ROC-AUC estimated from its own probabilities, the realized ROC-AUC of
the most recent earlier window whose labels are all known (outcomes are counted, by their prediction's
``as_of``, in the window it fell in), and an ``action`` (:mod:`churnstream.monitoring.performance`).

The reference of a model version is prepared once, on its first window. When the reference source has
none for a version, the first ``bootstrap_windows`` windows of that version become its reference (they
are not reported), kept in the :class:`~churnstream.monitoring.state.MonitorState` so a restart reuses it.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import re
import time
from dataclasses import dataclass, field
from typing import Any

from churnstream.errors import ValidationError
from churnstream.events import format_time
from churnstream.messages import DriftReport, MonitoringBatch
from churnstream.monitoring.concept import ConceptDriftDetector, ModelQuality, outcome_errors
from churnstream.monitoring.performance import (
    BASELINE_WINDOWS,
    RETRAIN_ITSELF,
    RETRAIN_STEP,
    LabelBook,
    Thresholds,
    advise,
    as_of_spans,
    estimate_roc_auc,
)
from churnstream.monitoring.reference import PreparedReference, ReferenceSource
from churnstream.monitoring.report import ReportStore
from churnstream.monitoring.state import MonitorState, SavedState
from churnstream.monitoring.stattests import Verdict, window_verdict
from churnstream.monitoring.window import PREDICTION_COLUMN, ClosedWindow, DriftWindow
from churnstream.settings import DAY_MS

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class MonitorConfig:
    """Knobs of a :class:`DriftMonitor` (none read from the environment)."""

    window_rows: int = 5000
    max_span_ms: int = 7 * DAY_MS
    straggle_ms: int = 60_000  # records of a version the window just left (see monitoring.window)
    drift_share: float = 0.5
    max_reference_rows: int = 20_000
    bootstrap_windows: int = 2
    auc_window: int = 5000
    adwin_delta: float = 0.002
    # performance and the verdict (see churnstream.monitoring.performance)
    label_delay_ms: int = 37 * DAY_MS  # horizon plus allowed lateness: a window's labels are all known
    min_labels: int = 100
    auc_drop_watch: float = 0.03
    auc_drop_retrain: float = 0.05
    retrain_on_advice: bool = False  # CHURN_RETRAIN_ON_ADVICE: a retrain advice says the monitor runs it
    estimate_samples: int = 200


@dataclass(slots=True)
class PendingReport:
    """A closed, judged window; only the Evidently HTML is missing (see
    :mod:`churnstream.monitoring.render`)."""

    report_id: str
    window: ClosedWindow
    reference: PreparedReference
    verdict: Verdict
    concept_drift: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)
    estimated_performance: dict[str, Any] | None = None
    realized_performance: dict[str, Any] | None = None
    action: str = "none"

    def report(self, *, created_at: int, html_path: str, url: str | None, **extra: Any) -> DriftReport:
        """The ``drift_reports`` message of this window, its HTML at ``html_path``."""
        window, verdict = self.window, self.verdict
        fields = dict(self.extra)
        if verdict.skipped_columns:
            fields["skipped_columns"] = verdict.skipped_columns
        fields.update(extra)
        return DriftReport(
            report_id=self.report_id,
            created_at=created_at,
            window_start=window.start,
            window_end=window.end,
            rows=window.rows,
            reference_rows=self.reference.rows,
            model_version=window.model_version,
            dataset_drift=verdict.dataset_drift,
            drift_share=verdict.drift_share,
            drifted_columns=verdict.drifted_columns,
            columns=verdict.columns,
            prediction_drift=verdict.prediction_drift,
            concept_drift=self.concept_drift,
            html_path=html_path,
            url=url,
            extra=fields,
            estimated_performance=self.estimated_performance,
            realized_performance=self.realized_performance,
            action=self.action,
        )


@dataclass(slots=True)
class Added:
    """What one :meth:`DriftMonitor.add` did.

    ``segments``: (window number, predictions of the batch in it); ``holds``: the highest window number
    that got anything of the batch (None: nothing); ``pending``: closed windows to report; ``settled``:
    closed windows that need no report (they became a reference that is now kept); ``detectors``: the
    pickled detectors as each window closed, by window number (for :class:`MonitorState`).
    """

    segments: list[tuple[int, int]] = field(default_factory=list)
    holds: int | None = None
    pending: list[PendingReport] = field(default_factory=list)
    settled: list[int] = field(default_factory=list)
    detectors: dict[int, bytes] = field(default_factory=dict)


class DriftMonitor:
    """Cuts monitoring batches into windows and judges each window against its model's reference."""

    def __init__(
        self,
        *,
        references: ReferenceSource,
        store: ReportStore,
        config: MonitorConfig | None = None,
        url_base: str | None = None,
        state: MonitorState | None = None,
    ) -> None:
        self.config = config or MonitorConfig()
        self.references = references
        self.store = store
        self.state = state
        self.url_base = url_base.rstrip("/") if url_base else None
        self._prepared: dict[str, PreparedReference] = {}
        self._bootstrap: dict[str, list[ClosedWindow]] = {}
        self._looked_up: set[str] = set()
        self._reference_estimates: dict[str, float | None] = {}
        self.rows_seen = 0
        self.restore(state.load() if state is not None else None)

    def restore(self, saved: SavedState | None) -> None:
        """Continue where ``saved`` stopped (window numbers, detectors, label book); before any batch."""
        self.restored = saved
        self.concept = ConceptDriftDetector(delta=self.config.adwin_delta)
        self.quality = ModelQuality(size=self.config.auc_window)
        self.labels = LabelBook(
            delay_ms=self.config.label_delay_ms,
            min_labels=self.config.min_labels,
            apart_drop=self.config.auc_drop_retrain,
        )
        first_seq = 1
        left: dict[str, int] = {}
        if saved is not None:
            first_seq = saved.seq + 1
            if saved.detectors:
                detectors = pickle.loads(saved.detectors)
                self.concept, self.quality = detectors[0], detectors[1]
                if len(detectors) > 2:  # saved before the label book existed: it starts empty
                    self.labels = detectors[2]
                    self.labels.delay_ms = self.config.label_delay_ms
                    self.labels.min_labels = self.config.min_labels
                    self.labels.apart_drop = self.config.auc_drop_retrain
                    # a book of the release before pooled 3 windows; one still pooling takes up to 6 now
                    self.labels.baseline_windows = BASELINE_WINDOWS
                if len(detectors) > 3:  # the versions the window left (its stragglers), if saved with it
                    left = dict(detectors[3])
        self.window = DriftWindow(
            max_rows=self.config.window_rows,
            max_span_ms=self.config.max_span_ms,
            first_seq=first_seq,
            straggle_ms=self.config.straggle_ms,
            current_version=self._current_version,
        )
        self.window.left = left
        self.windows_closed = first_seq - 1

    def _current_version(self) -> str | None:
        """The version the model registry serves now (None without a registry, or when it cannot say)."""
        registry = getattr(self.references, "registry", None)
        try:
            return None if registry is None else registry.current_version()
        except Exception:  # the registry's files: the straggler rule then goes by time alone
            return None

    @property
    def rows_pending(self) -> int:
        """Predictions in the open window."""
        return self.window.rows

    @property
    def model_version(self) -> str | None:
        return self.window.model_version

    @property
    def rows_straggled(self) -> int:
        """Predictions of records of a model version the window had just left (see monitoring.window)."""
        return self.window.straggled

    @property
    def rows_repeated(self) -> int:
        """Predictions a scorer delivered again, left out of the windows (see monitoring.window)."""
        return self.window.repeated

    @property
    def labels_repeated(self) -> int:
        """Labels a scorer delivered again, left out of the windows."""
        return self.window.repeated_labels

    def reference_rows(self, model_version: str) -> int | None:
        prepared = self._prepared.get(model_version)
        return prepared.rows if prepared is not None else None

    def check(self, batch: MonitoringBatch) -> None:
        """:class:`ValidationError` when the batch's model version is one the reference source refuses."""
        unknown = getattr(self.references, "unknown", None)
        reason = unknown(batch.model_version) if unknown is not None else None
        if reason:
            raise ValidationError(reason)

    def add(self, batch: MonitoringBatch, *, skip_rows: int = 0) -> Added:
        """Feed one batch (without its first ``skip_rows`` predictions); see :class:`Added`."""
        self.rows_seen += max(batch.rows - skip_rows, 0)
        closed = self.window.add(batch, skip_rows=skip_rows)
        added = Added(segments=list(self.window.segments))
        touched = [seq for seq, _ in added.segments]
        if self.window.outcomes_seq is not None:
            touched.append(self.window.outcomes_seq)
        added.holds = max(touched) if touched else None
        for window in closed:
            self._close(window, added)
        return added

    def flush(self) -> Added:
        """Close the open window now (tests)."""
        added = Added()
        window = self.window.flush()
        if window is not None:
            self._close(window, added)
        return added

    def _close(self, window: ClosedWindow, added: Added) -> None:
        self.windows_closed += 1
        errors, times = outcome_errors(window.outcomes)
        self.concept.update(errors, times)
        self.quality.update(window.outcomes)
        spans = as_of_spans(window.predictions.get("as_of", ()))
        self.labels.open(window.seq, window.model_version, window.start, window.end, spans)
        self.labels.add(window.outcomes)
        self.labels.advance(window.end)
        if self.state is not None:
            added.detectors[window.seq] = pickle.dumps(
                (self.concept, self.quality, self.labels, dict(self.window.left))
            )
        reference = self._reference_for(window, added)
        if reference is None:
            return
        features = [c for c in window.feature_names if c != PREDICTION_COLUMN]
        verdict = window_verdict(
            window.columns(),
            reference.stats,
            features,
            prediction_column=PREDICTION_COLUMN,
            drift_share=self.config.drift_share,
        )
        reference_estimate = self._reference_estimate(reference)  # as the model promised: uncalibrated
        realized = self.labels.latest.get(window.model_version)
        baseline = self.labels.reference_of(window.model_version)
        thresholds = Thresholds(watch=self.config.auc_drop_watch, retrain=self.config.auc_drop_retrain)
        pooled = baseline["value"] if baseline else None

        # A model that ranked badly from its first labels pools badly ranked windows: held to that pool,
        # every later window "holds". A pool a retrain below the reference sample's estimate is no
        # standard; the estimate stays the reference, so the advice stays retrain.
        def below_promise(value: float | None) -> bool:
            return value is None or (
                reference_estimate is not None and reference_estimate - value >= thresholds.retrain
            )

        set_aside = pooled is not None and below_promise(pooled)
        standard = None if set_aside else pooled
        # The estimate trusts the probabilities as served until the version's first windows have labels
        # enough; then it reads them as those labels showed them to mean (Calibration), and is compared
        # with the estimate of those labelled predictions read the same way (so the map's fit to its own
        # labels cancels). Not from a pool that is no standard (set aside): calibrated on it, a useless
        # model's estimate would hold against its own uselessness.
        pooled_now = (self.labels.baseline.get(window.model_version) or {}).get("value")
        usable = not set_aside and not below_promise(pooled_now)  # the pool as it stands now, too
        calibration = self.labels.calibration(window.model_version) if usable else None
        estimated = estimate_roc_auc(
            window.predictions.get(PREDICTION_COLUMN, ()),
            samples=self.config.estimate_samples,
            calibration=calibration,
        )
        calibrated_base = None if calibration is None else calibration.pool_estimate
        drifted = verdict.dataset_drift or bool((verdict.prediction_drift or {}).get("drifted"))
        action, reason = advise(
            drifted=drifted,
            estimated=estimated["value"] if estimated else None,
            estimated_reference=reference_estimate,
            estimate_base=calibrated_base,
            realized=realized["value"] if realized else None,
            realized_reference=standard,
            thresholds=thresholds,
            concept=self.concept.state(),
            retrain_step=RETRAIN_ITSELF if self.config.retrain_on_advice else RETRAIN_STEP,
            # a book saved before realized values had an interval: judged on the value alone, as then
            realized_interval=(realized["lower"], realized["upper"])
            if realized and "upper" in realized
            else None,
            realized_labels=realized["labels"] if realized else None,
            # the reference's own noise (a pool of the version's first windows; none for the estimate)
            reference_interval=(
                (baseline["lower"], baseline["upper"])
                if standard is not None and baseline and baseline.get("upper") is not None
                else None
            ),
        )
        added.pending.append(
            PendingReport(
                report_id=report_id(window),
                window=window,
                reference=reference,
                verdict=verdict,
                concept_drift=self.concept.state(),
                extra={
                    "closed_by": window.closed_by,
                    "outcomes": window.outcome_rows,
                    "model_auc": self.quality.auc(),
                    "model_auc_labels": self.quality.counts(),
                    "reference_source": reference.source,
                    "action_reason": reason
                    + (
                        f" (the model's first labelled windows, pooled, ranked {pooled:.3f}: no "
                        "standard to hold it to, so the reference sample's estimate is)"
                        if set_aside
                        else ""
                    ),
                    "performance_reference": {
                        "metric": "roc_auc",
                        "estimated": reference_estimate,
                        "realized": standard,  # the one the advice used: None when set aside
                        "realized_set_aside": pooled if set_aside else None,
                        "realized_window_start": format_time(baseline["window_start"]) if baseline else None,
                        "realized_window_end": format_time(baseline["window_end"]) if baseline else None,
                        **(_pool_described(baseline) if baseline else {}),
                    },
                },
                estimated_performance=estimated,
                realized_performance=dict(realized) if realized else None,
                action=action,
            )
        )

    def _reference_estimate(self, reference: PreparedReference) -> float | None:
        """The estimated ROC-AUC of the reference's own ``churn_probability`` (once per reference)."""
        if reference.key not in self._reference_estimates:
            column = reference.frame.get(PREDICTION_COLUMN)
            found = None if column is None else estimate_roc_auc(column.to_numpy(), samples=0)
            self._reference_estimates[reference.key] = found["value"] if found else None
        return self._reference_estimates[reference.key]

    def prepared_reference(self, version: str, *, final: bool = True) -> PreparedReference | None:
        """Model ``version``'s reference: prepared already, or looked up once (the registry's, else one the
        stream gave it before a restart); None when it has none (yet). ``final=False``: a lookup that finds
        nothing is not remembered (the version's first window looks again, and says it found none)."""
        prepared = self._prepared.get(version)
        if prepared is not None or version in self._looked_up:
            return prepared
        frame, source = self.references.reference(version), "registry"
        if frame is None and self.state is not None:
            frame, source = self.state.load_reference(version), "stream"
        if frame is None and not final:
            return None
        self._looked_up.add(version)
        if frame is None:
            return None
        prepared = PreparedReference(
            frame, model_version=version, source=source, max_rows=self.config.max_reference_rows
        )
        self._prepared[version] = prepared
        log.info("reference of model %s (%s): %d rows", version, source, prepared.rows)
        return prepared

    def _reference_for(self, window: ClosedWindow, added: Added) -> PreparedReference | None:
        version = window.model_version
        looked_up = version in self._looked_up
        prepared = self.prepared_reference(version)
        if prepared is not None:
            return prepared
        if not looked_up:
            log.warning(
                "model %s has no reference data; its first %d window(s) become the reference",
                version,
                self.config.bootstrap_windows,
            )
        collected = self._bootstrap.setdefault(version, [])
        collected.append(window)
        if len(collected) < self.config.bootstrap_windows:
            return None
        import pandas as pd

        frame = pd.concat([w.frame() for w in collected], ignore_index=True).drop(columns="as_of")
        del self._bootstrap[version]
        if self.state is not None:
            self.state.save_reference(version, frame)
        self._prepared[version] = PreparedReference(
            frame, model_version=version, source="stream", max_rows=self.config.max_reference_rows
        )
        added.settled.extend(w.seq for w in collected)
        log.info("reference of model %s taken from its first %d rows", version, len(frame))
        return None

    def url(self, report_id: str) -> str | None:
        return f"{self.url_base}/reports/{report_id}" if self.url_base else None


_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def report_id(window: ClosedWindow) -> str:
    """``<window start, compact UTC>-<model version>-<hash of the first row>``: sortable, file- and URL-safe,
    and the same when a restarted monitor rebuilds the window from the same records."""
    start = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(window.start / 1000))
    version = _UNSAFE.sub("_", window.model_version)[:40] or "model"
    digest = hashlib.sha1(f"{window.model_version}|{window.first_row}".encode()).hexdigest()
    return f"{start}-{version}-{digest[:8]}"


def _pool_described(baseline: dict[str, Any]) -> dict[str, Any]:
    """What the realized reference pools: how many windows and labels, its interval, and the windows
    after its first that were left out (each a retrain below it and beyond chance): how many, and the
    latest few."""
    return {
        "realized_interval": [baseline.get("lower"), baseline.get("upper")],
        "realized_windows": baseline.get("windows", 1),
        "realized_labels": baseline.get("labels"),
        "realized_left_out_count": baseline.get("left_out_count", 0),
        "realized_left_out": [
            {
                "window_start": format_time(left["window_start"]),
                "window_end": format_time(left["window_end"]),
                "realized": left["value"],
            }
            for left in baseline.get("left_out", ())
        ],
    }
