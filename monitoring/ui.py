"""The Evidently UI project of the drift monitor: one run per window, on a dashboard over event time.

Every window becomes one run of the project (:func:`window_run` says what it carries): stamped with the
window's end in event time, tagged with the model version, the topic prefix and ``drift``/``no drift``,
with the window's bounds, rows and verdict as metadata. Each run holds the window's numbers
(:data:`WINDOW_VALUES`) as Evidently metrics: Evidently 0.7's dashboards plot metric results only, so
each number is a ``WindowValue``, a custom single-value metric (Evidently's documented way) that reads a
one-row column and shows as a counter. The monitor has judged the window already (its verdict is
Evidently's tests, computed in-process), so this light run costs a few hundredths of a second. A window
whose full drift report is drawn gets that report with the same numbers merged in
(:func:`with_window_values`), still one run. While a model is in shadow (#24) the run also carries the
champion's and the shadow's realized ROC-AUC (:data:`SHADOW_VALUES`, from the report's ``evidence``), its
verdict in tags and metadata, and the dashboard draws both on one panel (:data:`SHADOW_PANEL`).

:func:`ensure_project` creates the project and its dashboard (:func:`dashboard_panels`) once; run again,
on a restart, it adds only what is missing.

>>> message = {"report_id": "r1", "model_version": "v1", "window_start": "2024-06-01T00:00:00Z",
...     "window_end": "2024-06-02T00:00:00Z", "rows": 10, "dataset_drift": True, "drift_share": 0.6,
...     "drifted_columns": ["a", "b", "c"], "action": "watch",
...     "prediction_drift": {"method": "Wasserstein distance (normed)", "score": 0.2, "threshold": 0.1},
...     "estimated_performance": {"metric": "roc_auc", "value": 0.81, "lower": 0.78, "upper": 0.84}}
>>> run = window_run(message, topic_prefix="demo.", mean_probability=0.25)
>>> run.tags, run.timestamp.isoformat()
(['model:v1', 'prefix:demo.', 'drift'], '2024-06-02T00:00:00')
>>> list(run.values.items())  # doctest: +NORMALIZE_WHITESPACE
[('drift_share', 0.6), ('drifted_columns', 3.0), ('prediction_drift_strength', 2.0),
 ('mean_churn_probability', 0.25), ('estimated_roc_auc', 0.81)]
>>> run.metadata["window_end"], run.metadata["verdict"], run.metadata["action"]
('2024-06-02T00:00:00Z', 'drift', 'watch')
"""

from __future__ import annotations

import datetime as dt
import functools
import math
from dataclasses import dataclass, field
from typing import Any, cast

from churnstream.events import parse_time
from churnstream.monitoring.performance import windows_named

PROJECT = "churnstream"
DASHBOARD_TAB = "Drift over event time"
WINDOW_VALUE_METRIC = "evidently:metric_v2:churnstream.WindowValue"

# the window's numbers, as one-row columns of each run: column -> panel title
WINDOW_VALUES: dict[str, str] = {
    "drift_share": "Share of drifted columns",
    "drifted_columns": "Number of drifted columns",
    "prediction_drift_strength": "Prediction drift (1 = the test's threshold; above: drifted)",
    "mean_churn_probability": "Mean churn probability",
    "estimated_roc_auc": "Estimated ROC-AUC (without labels)",
    "window_realized_roc_auc": "Realized ROC-AUC (at the end of the window its labels are of)",
}
# panels of earlier releases, removed from a dashboard when found: "Prediction drift" plotted the test's raw
# score, a p-value for some windows and a distance for others (one line, opposite meanings); "Realized
# ROC-AUC" put each window's value at the later window that reported it (its column, realized_roc_auc, is
# in the runs of those releases: the new panel plots another, window_realized_roc_auc)
RETIRED_PANELS = (
    "Prediction drift (drift score of churn_probability)",
    "Realized ROC-AUC (latest window with labels)",
)

# while a model is in shadow (#24): the champion's and the shadow's realized ROC-AUC on the same labelled
# predictions (the report's ``evidence``, cumulative), both on one panel; windows without them plot nothing
SHADOW_VALUES: dict[str, str] = {
    "champion_roc_auc": "Champion ROC-AUC (realized, on the shadow's predictions)",
    "shadow_roc_auc": "Shadow ROC-AUC (realized, on the same predictions)",
}
SHADOW_PANEL = "Champion vs shadow ROC-AUC"


def project_for(topic_prefix: str) -> str:
    """The Evidently project of a deployment: ``churnstream``, or ``churnstream <prefix>`` with a topic
    prefix, so deployments sharing a workspace do not plot into each other's lines.

    >>> project_for(""), project_for("demo.")
    ('churnstream', 'churnstream demo.')
    """
    return f"{PROJECT} {topic_prefix}" if topic_prefix else PROJECT


@dataclass(slots=True)
class WindowRun:
    """What a window's run in the Evidently UI says: name, event time, tags, metadata and numbers.

    ``realized``: the run of the earlier window whose realized ROC-AUC this window's report gives, stamped
    at that window's end (one run per labelled window, replaced when reported again)."""

    name: str
    timestamp: dt.datetime
    tags: list[str]
    metadata: dict[str, str]
    values: dict[str, float] = field(default_factory=dict)
    realized: WindowRun | None = None

    @property
    def has_shadow(self) -> bool:
        """Whether the run carries a shadow model's numbers (the dashboard then needs its panel)."""
        return any(column in self.values for column in SHADOW_VALUES)


def window_run(message: dict[str, Any], *, topic_prefix: str, mean_probability: float | None) -> WindowRun:
    """The run of the window whose ``drift_reports`` message is ``message`` (its JSON shape)."""
    drift = bool(message.get("dataset_drift"))
    estimated = message.get("estimated_performance") or {}
    realized = message.get("realized_performance") or {}
    evidence = message.get("evidence") or {}
    cumulative = evidence.get("cumulative") or {}
    auc = cumulative.get("roc_auc") or {}
    values: dict[str, Any] = {
        "drift_share": message.get("drift_share"),
        "drifted_columns": len(message.get("drifted_columns") or []),
        "prediction_drift_strength": drift_strength(message.get("prediction_drift") or {}),
        "mean_churn_probability": mean_probability,
        "estimated_roc_auc": estimated.get("value"),
        "champion_roc_auc": auc.get("champion"),
        "shadow_roc_auc": auc.get("shadow"),
    }
    metadata = {
        "report_id": str(message.get("report_id", "")),
        "model_version": str(message.get("model_version", "")),
        "window_start": str(message.get("window_start", "")),
        "window_end": str(message.get("window_end", "")),
        "rows": str(message.get("rows", "")),
        "verdict": "drift" if drift else "no drift",
        "drift_share": str(message.get("drift_share", "")),
        "drifted_columns": ", ".join(message.get("drifted_columns") or []) or "-",
    }
    if message.get("action") is not None:
        metadata["action"] = str(message["action"])
    if estimated.get("value") is not None:
        bounds = f" [{estimated.get('lower')}, {estimated.get('upper')}]" if estimated.get("lower") else ""
        calibrated = estimated.get("calibrated_on") or {}
        if calibrated.get("labels"):
            bounds += f", probabilities read through {calibrated['labels']} labels"
        metadata["estimated_roc_auc"] = f"{estimated['value']}{bounds}"
    if realized.get("value") is not None:
        bounds = f" [{realized.get('lower')}, {realized.get('upper')}]" if realized.get("upper") else ""
        metadata["realized_roc_auc"] = (
            f"{realized['value']}{bounds} ({realized.get('labels')} labels of {windows_named(realized)} from "
            f"{realized.get('window_start')} to {realized.get('window_end')})"
        )
    prefix = topic_prefix or "(none)"
    tags = [f"model:{message.get('model_version', '')}", f"prefix:{prefix}"]
    tags.append("drift" if drift else "no drift")
    if evidence:
        metadata.update(
            champion_version=str(evidence.get("champion_version") or "-"),
            shadow_version=str(evidence.get("shadow_version") or "-"),
            evidence_verdict=str(cumulative.get("verdict") or "-"),
            evidence_labels=str(cumulative.get("labels", 0)),
        )
        for metric in ("roc_auc", "pr_auc", "alert_value"):
            metadata[f"evidence_{metric}"] = _evidence_text(cumulative.get(metric) or {})
        tags += [f"shadow:{evidence.get('shadow_version')}", f"evidence:{cumulative.get('verdict') or '-'}"]
    return WindowRun(
        name=str(message.get("report_id", "")),
        timestamp=_stamp(str(message["window_end"])),
        tags=tags,
        metadata=metadata,
        values={k: float(v) for k, v in values.items() if _finite(v)},
        realized=_realized_run(message, tags[:2], prefix),
    )


def _stamp(time: str) -> dt.datetime:
    """A run's timestamp: an RFC 3339 time as naive UTC (how Evidently's dashboards order runs)."""
    return dt.datetime.fromtimestamp(parse_time(time) / 1000, tz=dt.UTC).replace(tzinfo=None)


def _realized_run(message: dict[str, Any], tags: list[str], prefix: str) -> WindowRun | None:
    """The run of the window whose realized ROC-AUC ``message`` reports: at that window's end, named after
    it, so the panel shows each value where its window is (beside its estimate) and a value reported by
    several reports is one point."""
    realized = message.get("realized_performance") or {}
    value, start, end = realized.get("value"), realized.get("window_start"), realized.get("window_end")
    if not _finite(value) or not start or not end:
        return None
    version = str(realized.get("model_version") or message.get("model_version") or "")
    # the prefix is in the name: deployments may share a report directory
    compact = "".join(c for c in f"{prefix}-{start}-{end}" if c.isalnum() or c in "-_.")
    return WindowRun(
        name=f"realized-{compact}-{version}",
        timestamp=_stamp(str(end)),
        tags=[*tags, "realized"],
        metadata={
            "report": "realized",
            "window_start": str(start),
            "window_end": str(end),
            "labels": str(realized.get("labels", "")),
            "realized_roc_auc": f"{value} ({realized.get('labels')} labels of {windows_named(realized)})",
            "reported_by": str(message.get("report_id", "")),
        },
        values={"window_realized_roc_auc": float(cast(float, value))},
    )


def drift_strength(column: dict[str, Any]) -> float | None:
    """How far a column's drift test is past its threshold, the same way up whatever the test: 1 at the
    threshold, above it drifted, at most 10. A distance is divided by its threshold; a p-value (drifted
    below its threshold) gives ``log(p) / log(threshold)``, p taken as at least 1e-12.

    >>> drift_strength({"method": "K-S p_value", "score": 0.05, "threshold": 0.05})
    1.0
    >>> drift_strength({"method": "K-S p_value", "score": 0.5, "threshold": 0.05})  # no drift
    0.231
    >>> drift_strength({"method": "Wasserstein distance (normed)", "score": 0.033, "threshold": 0.1})
    0.33
    >>> drift_strength({"method": "K-S p_value", "score": 0.0, "threshold": 0.05})  # as strong as shown
    9.223
    """
    score, threshold = column.get("score"), column.get("threshold")
    if not _finite(score) or not _finite(threshold) or threshold <= 0:  # type: ignore[operator]
        return None
    score, threshold = float(score), float(threshold)  # type: ignore[arg-type]
    method = str(column.get("method") or "")
    if method.endswith("p_value"):
        if threshold >= 1:
            return None
        strength = math.log(max(score, 1e-12)) / math.log(threshold)
    else:
        strength = score / threshold
    return round(min(max(strength, 0.0), 10.0), 3)


def _evidence_text(metric: dict[str, Any]) -> str:
    """``champion C, shadow S, difference D [low, high]`` of one metric of the evidence."""
    low, high = metric.get("interval") or (None, None)
    return (
        f"champion {metric.get('champion')}, shadow {metric.get('shadow')}, "
        f"difference {metric.get('difference')} [{low}, {high}]"
    )


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@functools.cache
def window_value_metric() -> type:
    """The ``WindowValue`` metric: the value of a one-row column, shown as a counter titled after it.

    Defined on first use, so that importing this module does not import Evidently.
    """
    from evidently.core.metric_types import SingleValueCalculation, SingleValueMetric

    class WindowValue(SingleValueMetric):
        class Config:
            type_alias = WINDOW_VALUE_METRIC

        column: str

    class WindowValueCalculation(SingleValueCalculation[WindowValue]):  # type: ignore[misc]
        def calculate(self, context: Any, current_data: Any, reference_data: Any) -> Any:
            return self.result(float(current_data.column(self.metric.column).data.iloc[0]))

        def display_name(self) -> str:
            column = self.metric.column
            return WINDOW_VALUES.get(column) or SHADOW_VALUES.get(column, column)

    return WindowValue


def light_snapshot(run: WindowRun) -> Any:
    """An Evidently snapshot of the window's numbers alone (a ``WindowValue`` of a one-row column each)."""
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report

    columns = list(run.values)
    metric = window_value_metric()
    report = Report([metric(column=c) for c in columns])
    frame = pd.DataFrame({c: [run.values[c]] for c in columns})
    dataset = Dataset.from_pandas(frame, data_definition=DataDefinition(numerical_columns=columns))
    metadata = {"report": "light", **run.metadata}  # a realized run says "realized"
    return report.run(dataset, None, timestamp=run.timestamp, tags=list(run.tags), metadata=metadata)


def with_window_values(snapshot: Any, run: WindowRun) -> Any:
    """``snapshot`` (a full drift report) stamped as the window's run, its numbers' metrics merged in.

    The numbers' widgets are left out: the report shows its own drift tables and plots.
    """
    from evidently.core.report import Snapshot

    model = snapshot.to_snapshot_model()
    light = light_snapshot(run).to_snapshot_model()
    model.metric_results = {**model.metric_results, **light.metric_results}
    model.top_level_metrics = [*model.top_level_metrics, *light.top_level_metrics]
    model.name, model.timestamp = run.name, run.timestamp
    model.tags, model.metadata = list(run.tags), {**run.metadata, "report": "full"}
    return Snapshot.load_model(model)


def dashboard_panels(*, shadow: bool = True) -> list[Any]:
    """The dashboard's panels: one line plot over event time per window number, then (``shadow``: once a
    model has been in shadow; before, the panel would stand empty) the champion's and the shadow's
    realized ROC-AUC on one plot (:data:`SHADOW_PANEL`)."""
    from evidently.sdk.models import PanelMetric
    from evidently.sdk.panels import line_plot_panel

    def metric(column: str, legend: str) -> Any:
        return PanelMetric(legend=legend, metric=WINDOW_VALUE_METRIC, metric_labels={"column": column})

    return [
        *(
            line_plot_panel(title=title, values=[metric(column, column)], size="half")
            for column, title in WINDOW_VALUES.items()
        ),
        *(
            [
                line_plot_panel(
                    title=SHADOW_PANEL,
                    values=[metric("champion_roc_auc", "champion"), metric("shadow_roc_auc", "shadow")],
                    size="half",
                )
            ]
            if shadow
            else []
        ),
    ]


def ensure_project(workspace: Any, name: str = PROJECT, *, shadow: bool = False) -> Any:
    """The id of project ``name`` in ``workspace``, created with its dashboard if missing; panels
    missing from an existing project's dashboard are added (never twice); the shadow panel only with
    ``shadow`` (a run carries a shadow's numbers)."""
    from evidently.sdk.models import DashboardModel, DashboardTabModel

    found = workspace.search_project(name)
    project = (
        found[0]
        if found
        else workspace.create_project(name, description="churnstream drift windows, one run per window")
    )
    dashboard = workspace.get_dashboard(project.id) or DashboardModel(tabs=[], panels=[])
    retired = {panel.id for panel in dashboard.panels if panel.title in RETIRED_PANELS}
    if retired:
        dashboard.panels = [panel for panel in dashboard.panels if panel.id not in retired]
        for tab in dashboard.tabs:
            tab.panels = [panel_id for panel_id in tab.panels if panel_id not in retired]
    have = {panel.title for panel in dashboard.panels}
    missing = [panel for panel in dashboard_panels(shadow=shadow) if panel.title not in have]
    if missing:
        tab = next((t for t in dashboard.tabs if t.title == DASHBOARD_TAB), None)
        if tab is None:
            tab = DashboardTabModel(title=DASHBOARD_TAB, panels=[])
            dashboard.tabs.append(tab)
        dashboard.panels.extend(missing)
        tab.panels.extend(panel.id for panel in missing)
    if missing or retired:
        workspace.save_dashboard(project.id, dashboard)
    return project.id
