"""The drift monitor's logic without Kafka: batches in, windows out, each window judged and reported.

:meth:`DriftMonitor.add` is cheap (it runs on the event loop): it feeds the window and, when one closes,
updates the concept-drift detector and the rolling AUCs and returns a :class:`PendingReport`.
:meth:`DriftMonitor.render` is the slow part (Evidently, seconds): it runs off the event loop and returns
the :class:`~churnstream.messages.DriftReport` to publish, having written the HTML and JSON.

The reference of a model version is prepared once, on its first window. When the reference source has
none for a version, the first ``bootstrap_windows`` windows of that version become its reference (they
are not reported), so a monitor without a registered reference still reports drift against its start.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from churnstream.events import now_ms
from churnstream.messages import DriftReport, MonitoringBatch
from churnstream.settings import DAY_MS
from monitoring.concept import ConceptDriftDetector, ModelQuality, outcome_errors
from monitoring.reference import PreparedReference, ReferenceSource
from monitoring.report import ReportStore, run_drift_report
from monitoring.window import PREDICTION_COLUMN, ClosedWindow, DriftWindow

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class MonitorConfig:
    """Knobs of a :class:`DriftMonitor` (none read from the environment)."""

    window_rows: int = 5000
    max_span_ms: int = 7 * DAY_MS
    drift_share: float = 0.5
    max_reference_rows: int = 20_000
    bootstrap_windows: int = 2
    auc_window: int = 5000
    adwin_delta: float = 0.002


@dataclass(slots=True)
class PendingReport:
    """A closed window with everything cheap already computed; :meth:`DriftMonitor.render` finishes it."""

    report_id: str
    window: ClosedWindow
    reference: PreparedReference
    concept_drift: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)


class DriftMonitor:
    """Cuts monitoring batches into windows and turns each window into a drift report."""

    def __init__(
        self,
        *,
        references: ReferenceSource,
        store: ReportStore,
        config: MonitorConfig | None = None,
        url_base: str | None = None,
    ) -> None:
        self.config = config or MonitorConfig()
        self.references = references
        self.store = store
        self.url_base = url_base.rstrip("/") if url_base else None
        self.window = DriftWindow(max_rows=self.config.window_rows, max_span_ms=self.config.max_span_ms)
        self.concept = ConceptDriftDetector(delta=self.config.adwin_delta)
        self.quality = ModelQuality(size=self.config.auc_window)
        self._prepared: dict[str, PreparedReference] = {}
        self._bootstrap: dict[str, list[ClosedWindow]] = {}
        self._looked_up: set[str] = set()
        self.windows_closed = 0
        self.rows_seen = 0

    @property
    def rows_pending(self) -> int:
        """Predictions in the open window."""
        return self.window.rows

    @property
    def model_version(self) -> str | None:
        return self.window.model_version

    def reference_rows(self, model_version: str) -> int | None:
        prepared = self._prepared.get(model_version)
        return prepared.rows if prepared is not None else None

    def add(self, batch: MonitoringBatch) -> list[PendingReport]:
        """Feed one batch; returns a pending report for each window it closed (bootstrap windows excepted)."""
        self.rows_seen += batch.rows
        out = []
        for window in self.window.add(batch):
            pending = self._close(window)
            if pending is not None:
                out.append(pending)
        return out

    def flush(self) -> list[PendingReport]:
        """Close the open window now (shutdown, tests)."""
        window = self.window.flush()
        pending = self._close(window) if window is not None else None
        return [pending] if pending is not None else []

    def _close(self, window: ClosedWindow) -> PendingReport | None:
        self.windows_closed += 1
        errors, times = outcome_errors(window.outcomes)
        self.concept.update(errors, times)
        self.quality.update(window.outcomes)
        reference = self._reference_for(window)
        if reference is None:
            return None
        return PendingReport(
            report_id=_report_id(window),
            window=window,
            reference=reference,
            concept_drift=self.concept.state(),
            extra={
                "closed_by": window.closed_by,
                "outcomes": window.outcome_rows,
                "model_auc": self.quality.auc(),
                "model_auc_labels": self.quality.counts(),
                "reference_source": reference.source,
            },
        )

    def _reference_for(self, window: ClosedWindow) -> PreparedReference | None:
        version = window.model_version
        prepared = self._prepared.get(version)
        if prepared is not None:
            return prepared
        if version not in self._looked_up:
            self._looked_up.add(version)
            frame = self.references.reference(version)
            if frame is not None:
                prepared = PreparedReference(
                    frame, model_version=version, source="registry", max_rows=self.config.max_reference_rows
                )
                self._prepared[version] = prepared
                log.info("reference of model %s: %d rows", version, prepared.rows)
                return prepared
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

        frame = pd.concat([w.frame() for w in collected], ignore_index=True)
        del self._bootstrap[version]
        self._prepared[version] = PreparedReference(
            frame, model_version=version, source="stream", max_rows=self.config.max_reference_rows
        )
        log.info("reference of model %s taken from its first %d rows", version, len(frame))
        return None

    def render(self, pending: PendingReport) -> DriftReport:
        """Run Evidently on the window, write HTML/JSON/workspace, and build the drift_reports message."""
        window = pending.window
        current = window.frame()
        features = [c for c in window.feature_names if c != PREDICTION_COLUMN]
        result = run_drift_report(
            current,
            pending.reference,
            features,
            prediction_column=PREDICTION_COLUMN,
            drift_share=self.config.drift_share,
        )
        extra = dict(pending.extra)
        if result.skipped_columns:
            extra["skipped_columns"] = result.skipped_columns
        html = self.store.html_path(pending.report_id)
        report = DriftReport(
            report_id=pending.report_id,
            created_at=now_ms(),
            window_start=window.start,
            window_end=window.end,
            rows=window.rows,
            reference_rows=pending.reference.rows,
            model_version=window.model_version,
            dataset_drift=result.dataset_drift,
            drift_share=result.drift_share,
            drifted_columns=result.drifted_columns,
            columns=result.columns,
            prediction_drift=result.prediction_drift,
            concept_drift=pending.concept_drift,
            html_path=str(Path(html).resolve()),
            url=f"{self.url_base}/reports/{pending.report_id}" if self.url_base else None,
            extra=extra,
        )
        self.store.save(pending.report_id, report.to_json(), result.snapshot)
        return report


_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def _report_id(window: ClosedWindow) -> str:
    """``<window start, compact UTC>-<model version>-<random>``: sortable, file- and URL-safe."""
    start = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(window.start / 1000))
    version = _UNSAFE.sub("_", window.model_version)[:40] or "model"
    return f"{start}-{version}-{uuid.uuid4().hex[:8]}"
