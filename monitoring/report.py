"""Evidently data-drift reports: run one, read its verdict, and keep it (HTML, JSON, local workspace).

:func:`run_drift_report` runs Evidently's ``DataDriftPreset`` over the feature columns, plus a separate
``ValueDrift`` of ``churn_probability`` (prediction drift, not counted in the dataset verdict), and
extracts per column ``{method, score, threshold, drifted}``, the share of drifted features and the
dataset verdict (share >= ``drift_share``, Evidently's rule). :class:`ReportStore` keeps the files:
each window's message as ``<report_id>.json``, its page as ``<report_id>.html`` (the Evidently report, or
the window's own light page when the report was not drawn), Evidently's results as
``<id>.evidently.json``, and one run per window in an Evidently workspace
(:mod:`churnstream.monitoring.ui`), so ``evidently ui --workspace <report_dir>/workspace`` shows the
history on a dashboard over event time.
"""

from __future__ import annotations

import contextlib
import html as html_lib
import json
import logging
import math
import re
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from churnstream.monitoring.pages import BACK_TO_LIST
from churnstream.monitoring.reference import PreparedReference
from churnstream.monitoring.stattests import KS, Verdict, evidently_method
from churnstream.monitoring.ui import (
    WindowRun,
    ensure_project,
    light_snapshot,
    project_for,
    with_window_values,
)
from churnstream.monitoring.window import PREDICTION_COLUMN

log = logging.getLogger(__name__)


@dataclass(slots=True)
class DriftResult(Verdict):
    """What one Evidently drift run found (the same :class:`Verdict` the monitor computes in-process),
    plus the snapshot to render or store."""

    snapshot: Any = None


def run_drift_report(
    current: Any,
    reference: Any,
    columns: list[str],
    *,
    prediction_column: str | None = PREDICTION_COLUMN,
    drift_share: float = 0.5,
) -> DriftResult:
    """Compare ``current`` with ``reference`` (a DataFrame or :class:`PreparedReference`) column by column.

    Columns without any value in either frame are skipped (listed in ``skipped_columns``).
    """
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift
    from evidently.presets import DataDriftPreset

    prepared = (
        reference
        if isinstance(reference, PreparedReference)
        else PreparedReference(reference, model_version="", source="frame", max_rows=max(len(reference), 1))
    )
    current_values = {
        c: pd.to_numeric(current[c], errors="coerce").astype("float64") for c in current.columns
    }
    present = [c for c in columns if c in current_values and current_values[c].notna().any()]
    usable = prepared.usable(present)
    skipped = [c for c in columns if c not in usable]
    if not usable:
        raise ValueError(f"no column has values in both the current and the reference data: {columns}")
    with_prediction = (
        prediction_column is not None
        and prediction_column not in usable
        and prediction_column in current_values
        and bool(prepared.usable([prediction_column]))
    )
    analysed = tuple(usable + ([prediction_column] if with_prediction and prediction_column else []))
    current_frame = pd.DataFrame({c: current_values[c] for c in analysed})
    # a small window's columns by the K-S test, as :func:`~churnstream.monitoring.stattests.column_drift`
    methods = {c: evidently_method(prepared.stats[c], current_values[c].to_numpy()) for c in analysed}
    chosen = {c: m for c, m in methods.items() if m is not None and c in usable}
    metrics: list[Any] = [
        DataDriftPreset(columns=list(usable), drift_share=drift_share, per_column_method=chosen or None)
    ]
    if with_prediction and prediction_column:
        metrics.append(ValueDrift(column=prediction_column, method=methods[prediction_column]))
    report = Report(metrics, include_tests=True)
    with warnings.catch_warnings():
        # Constant columns make Evidently's correlation widgets divide by a zero deviation.
        warnings.simplefilter("ignore", RuntimeWarning)
        snapshot = report.run(
            Dataset.from_pandas(
                current_frame, data_definition=DataDefinition(numerical_columns=list(analysed))
            ),
            prepared.dataset(analysed),
        )
    per_column = _per_column(snapshot.dict())
    feature_columns = {c: per_column[c] for c in usable if c in per_column}
    drifted = [c for c, v in feature_columns.items() if v["drifted"]]
    share = len(drifted) / len(feature_columns) if feature_columns else 0.0
    return DriftResult(
        columns=feature_columns,
        prediction_drift=per_column.get(prediction_column) if with_prediction and prediction_column else None,
        dataset_drift=bool(feature_columns) and share >= drift_share,
        drift_share=round(share, 4),
        drifted_columns=drifted,
        skipped_columns=skipped,
        snapshot=snapshot,
    )


def _per_column(snapshot: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Column -> ``{method, score, threshold, drifted}`` from the ValueDrift metrics and their tests."""
    out: dict[str, dict[str, Any]] = {}
    for metric in snapshot.get("metrics", []):
        config = metric.get("config", {})
        if not str(config.get("type", "")).endswith(":ValueDrift"):
            continue
        method = config.get("method")
        out[config["column"]] = {
            "method": KS if method == "ks" else method,  # the name Evidently shows for a method we chose
            "score": _number(metric.get("value")),
            "threshold": _number(config.get("threshold")),
            "drifted": False,
        }
    for test in snapshot.get("tests", []):
        params = test.get("metric_config", {}).get("params", {})
        if not str(params.get("type", "")).endswith(":ValueDrift"):
            continue
        column = params.get("column")
        if column in out:
            out[column]["drifted"] = str(test.get("status", "")).upper().endswith("FAIL")
    return out


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return round(number, 6) if math.isfinite(number) else None


class ReportStore:
    """Keeps reports under ``root``: one ``<id>.json`` per window (its drift_reports message), its page
    ``<id>.html``, Evidently's results ``<id>.evidently.json`` when the full report was drawn, and one run
    per window in the Evidently workspace, so ``evidently ui --workspace <root>/workspace`` shows the
    history (``<id>.run`` names it, so a window drawn again after a restart replaces its run).
    ``topic_prefix`` tags the runs and names the project (:func:`project_for`): several deployments may
    share a workspace, each with a dashboard of its own."""

    def __init__(
        self,
        root: Path,
        *,
        project: str | None = None,
        workspace: bool = True,
        topic_prefix: str = "",
    ) -> None:
        self.root = Path(root)
        self.project_name = project or project_for(topic_prefix)
        self.use_workspace = workspace
        self.topic_prefix = topic_prefix
        self._workspace: Any = None
        self._project_id: Any = None
        self._shadow_panel = False
        self._lock = threading.Lock()

    def html_path(self, report_id: str) -> Path:
        return self.root / f"{report_id}.html"

    def json_path(self, report_id: str) -> Path:
        return self.root / f"{report_id}.json"

    def evidently_json_path(self, report_id: str) -> Path:
        return self.root / f"{report_id}.evidently.json"

    @property
    def workspace_path(self) -> Path:
        return self.root / "workspace"

    def save_message(self, report_id: str, message: dict[str, Any]) -> None:
        """Write a window's drift_reports message as ``<report_id>.json``."""
        self.root.mkdir(parents=True, exist_ok=True)
        _write_text(self.json_path(report_id), json.dumps(message, default=_json_default))

    def save_rendered(
        self, report_id: str, snapshot: Any, *, banner: str | None = None, run: WindowRun | None = None
    ) -> str | None:
        """Write an Evidently snapshot: the HTML (``banner`` shown above it), its JSON, and a workspace run
        (stamped as the window's ``run``, its numbers merged in, when given); the run's id."""
        self.root.mkdir(parents=True, exist_ok=True)
        html = self.html_path(report_id)
        tmp = html.with_suffix(".html.tmp")
        try:
            snapshot.save_html(str(tmp))
            if banner:
                page = tmp.read_text(encoding="utf-8")
                tmp.write_text(_with_banner(page, banner), encoding="utf-8")
            tmp.replace(html)
        except BaseException:
            tmp.unlink(missing_ok=True)  # a full disk keeps no half-written page
            raise
        _write_text(self.evidently_json_path(report_id), snapshot.json())
        run_id = self._try_add_run(
            lambda: snapshot if run is None else with_window_values(snapshot, run),
            report_id,
            shadow=run is not None and run.has_shadow,
        )
        self._add_realized(run)
        return run_id

    def save_light(self, report_id: str, run: WindowRun, page: str) -> str | None:
        """A window without its full Evidently report: its own ``page`` as its HTML, and its light run (the
        numbers behind the dashboard) in the workspace; the run's id."""
        self.save_page(report_id, page)
        run_id = self._try_add_run(lambda: light_snapshot(run), report_id, shadow=run.has_shadow)
        self._add_realized(run)
        return run_id

    def _add_realized(self, run: WindowRun | None) -> None:
        """The run of the labelled window ``run``'s report gives the realized ROC-AUC of (see
        :attr:`WindowRun.realized`): added, or replacing the one an earlier report added for it."""
        if run is not None and run.realized is not None:
            realized = run.realized
            self._try_add_run(lambda: light_snapshot(realized), realized.name)

    def save_page(self, report_id: str, page: str) -> None:
        """Write a window's own page (HTML) as its ``<report_id>.html``."""
        self.root.mkdir(parents=True, exist_ok=True)
        _write_text(self.html_path(report_id), page)

    def _try_add_run(self, snapshot: Any, name: str, *, shadow: bool = False) -> str | None:
        if not self.use_workspace:
            return None
        try:
            return self._add_run(snapshot(), name, shadow=shadow)
        except Exception:  # the workspace is a convenience; the window's page is saved
            log.exception("could not add report %s to the Evidently workspace", name)
            return None

    def _add_run(self, snapshot: Any, name: str, *, shadow: bool = False) -> str:
        with self._lock:
            if self._workspace is None or (shadow and not self._shadow_panel):
                from evidently.ui.workspace import Workspace

                self.workspace_path.mkdir(parents=True, exist_ok=True)
                workspace = self._workspace or Workspace(str(self.workspace_path))
                self._project_id = ensure_project(workspace, self.project_name, shadow=shadow)
                self._workspace = workspace
                self._shadow_panel = self._shadow_panel or shadow
            marker = self.root / f"{name}.run"
            if marker.is_file():  # drawn again after a restart: the window keeps one run
                with contextlib.suppress(Exception):
                    self._workspace.delete_run(self._project_id, marker.read_text(encoding="utf-8").strip())
            run_id = str(self._workspace.add_run(self._project_id, snapshot, name=name).id)
            _write_text(marker, run_id)
            return run_id

    def load_messages(self, limit: int = 500) -> list[dict[str, Any]]:
        """The saved drift_reports messages, oldest first."""
        if not self.root.is_dir():
            return []
        paths = [p for p in self.root.glob("*.json") if not p.name.endswith(".evidently.json")]
        out = []
        for path in sorted(paths, key=lambda p: p.stat().st_mtime)[-limit:]:
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(record, dict) and "report_id" in record:
                out.append(record)
        return out


def _with_banner(page: str, banner: str) -> str:
    """``page`` with a note at the top of its body, and a link back to the list of windows."""
    note = (
        "<div id='churnstream-note' style='font-family:system-ui,sans-serif;background:#fff4ce;"
        f"border:1px solid #e0c060;padding:10px 14px;margin:8px'>{BACK_TO_LIST} &middot; "
        f"{html_lib.escape(banner)}</div>"
    )
    match = re.search(r"<body[^>]*>", page)
    if match is None:
        return note + page
    return page[: match.end()] + note + page[match.end() :]


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _json_default(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)
