"""Evidently drift reports on synthetic data: a shifted column is flagged and named, equal data is not."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from churnstream.messages import MonitoringBatch
from churnstream.monitoring.monitor import DriftMonitor, MonitorConfig
from churnstream.monitoring.pages import window_banner
from churnstream.monitoring.reference import FrameSource
from churnstream.monitoring.render import RenderQueue, ReportRenderer
from churnstream.monitoring.report import ReportStore, run_drift_report
from churnstream.monitoring.state import MonitorState
from churnstream.monitoring.ui import (
    SHADOW_PANEL,
    WINDOW_VALUE_METRIC,
    WINDOW_VALUES,
    drift_strength,
    ensure_project,
)

FEATURES = ["spent_total", "avg_order_value", "tickets_90d", "recency_days", "orders_total"]


def frame(n: int, seed: int, *, shift: dict[str, float] | None = None) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "spent_total": rng.lognormal(5, 0.6, n),
            "avg_order_value": rng.lognormal(3.5, 0.4, n),
            "tickets_90d": rng.poisson(1.2, n).astype(float),
            "recency_days": rng.exponential(20, n),
            "orders_total": rng.poisson(8, n).astype(float),
        }
    )
    df["churn_probability"] = 1 / (1 + np.exp(-(df["recency_days"] / 20 - 1)))
    for column, factor in (shift or {}).items():
        df[column] = df[column] * factor
    return df


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return frame(3000, seed=1)


def test_shifted_columns_are_flagged_and_named(reference: pd.DataFrame) -> None:
    current = frame(1000, seed=2, shift={"spent_total": 1.6, "avg_order_value": 1.6, "tickets_90d": 2.5})
    result = run_drift_report(current, reference, FEATURES)
    assert set(result.drifted_columns) == {"spent_total", "avg_order_value", "tickets_90d"}
    assert result.dataset_drift is True
    assert result.drift_share == pytest.approx(3 / 5)
    column = result.columns["spent_total"]
    assert set(column) == {"method", "score", "threshold", "drifted"}
    assert column["drifted"] is True and column["score"] > column["threshold"]
    assert result.columns["recency_days"]["drifted"] is False
    assert result.prediction_drift is not None and result.prediction_drift["drifted"] is False
    assert "churn_probability" not in result.columns


def test_same_distribution_is_not_drift(reference: pd.DataFrame) -> None:
    result = run_drift_report(frame(1000, seed=3), reference, FEATURES)
    assert result.dataset_drift is False
    assert result.drifted_columns == []
    assert result.drift_share == 0.0


def test_prediction_drift_is_reported_apart(reference: pd.DataFrame) -> None:
    current = frame(1000, seed=4)
    current["churn_probability"] = np.clip(current["churn_probability"] + 0.3, 0, 1)
    result = run_drift_report(current, reference, FEATURES)
    assert result.prediction_drift is not None and result.prediction_drift["drifted"] is True
    assert result.dataset_drift is False


def test_empty_columns_are_skipped(reference: pd.DataFrame) -> None:
    current = frame(500, seed=5)
    current["age"] = np.nan
    result = run_drift_report(current, reference, [*FEATURES, "age"])
    assert result.skipped_columns == ["age"]
    assert "age" not in result.columns


def _batches(df: pd.DataFrame, version: str, t0: int, size: int = 250) -> list[MonitoringBatch]:
    out = []
    for lo in range(0, len(df), size):
        part = df.iloc[lo : lo + size]
        n = len(part)
        predictions: dict[str, list[Any]] = {c: part[c].tolist() for c in part.columns}
        predictions["as_of"] = [t0 + lo + i for i in range(n)]
        predictions["customer_id"] = [f"c{lo + i}" for i in range(n)]
        outcomes: dict[str, list[Any]] = {
            "labeled_at": predictions["as_of"],
            "label": [int(p > 0.5) for p in part["churn_probability"]],
            "source": ["order"] * n,
            "batch_probability": part["churn_probability"].tolist(),
            "online_probability": [None] * n,
            "churn_probability": part["churn_probability"].tolist(),
        }
        out.append(MonitoringBatch(f"b{lo}", 0, version, FEATURES, predictions, outcomes))
    return out


def test_monitor_judges_windows_and_the_renderer_writes_files(
    tmp_path: Path, reference: pd.DataFrame
) -> None:
    store = ReportStore(tmp_path / "reports")
    monitor = DriftMonitor(
        references=FrameSource(reference),
        store=store,
        config=MonitorConfig(window_rows=1000),
        url_base="http://127.0.0.1:8088",
    )
    drifted = frame(1000, seed=7, shift={"spent_total": 1.6, "avg_order_value": 1.6, "tickets_90d": 2.5})
    pending = []
    for batch in _batches(
        pd.concat([frame(1000, seed=6), drifted, frame(100, seed=8)]), "v1", 1_700_000_000_000
    ):
        pending += monitor.add(batch).pending
    assert len(pending) == 2 and monitor.rows_pending == 100
    assert [p.verdict.dataset_drift for p in pending] == [False, True]
    assert set(pending[1].verdict.drifted_columns) == {"spent_total", "avg_order_value", "tickets_90d"}

    queue = RenderQueue(max_jobs=1, topic_prefix="t.")
    # the drifted window takes the full report; the first one, waiting, is drawn light
    assert [queue.put(p) for p in pending] == [False, True]
    light, job = queue.take(), queue.take()
    assert light is not None and job is not None and queue.take() is None
    assert (light.full, job.full) == (False, True) and light.columns == {} and job.rendered_rows == 1000
    renderer = ReportRenderer(root=store.root, drift_share=0.5, in_thread=True)
    try:
        drawn_light = renderer.submit(light).result(timeout=120)
        rendered = renderer.submit(job).result(timeout=120)
    finally:
        renderer.close()
    assert rendered.error is None and rendered.html_path == str(store.html_path(job.job_id).resolve())
    assert (drawn_light.drawn, rendered.drawn) == ("light", "full")
    page = Path(rendered.html_path).read_text()
    assert len(page) > 100_000 and window_banner(job.message) in page
    assert store.evidently_json_path(job.job_id).is_file() and store.workspace_path.is_dir()
    light_page = Path(drawn_light.html_path).read_text()  # its own page: its bounds, its verdict
    assert drawn_light.html_path == str(store.html_path(light.job_id).resolve())
    assert f"{light.message['window_start']} .. {light.message['window_end']}" in light_page
    assert "no drift" in light_page and "was not drawn" in light_page
    assert not store.evidently_json_path(light.job_id).exists()

    # one run per window in the Evidently project: event time, tags, metadata, the dashboard's numbers
    from evidently.ui.workspace import Workspace

    workspace = Workspace(str(store.workspace_path))
    (project,) = workspace.search_project("churnstream")
    assert sorted(str(r) for r in workspace.list_runs(project.id)) == sorted(
        [str(drawn_light.run_id), str(rendered.run_id)]
    )
    for done, queued, drift in ((drawn_light, light, "no drift"), (rendered, job, "drift")):
        run = workspace.get_run(project.id, str(done.run_id))
        assert run is not None and run.name == queued.job_id
        assert run.timestamp == dt.datetime.fromtimestamp(queued.pending.window.end / 1000, dt.UTC).replace(
            tzinfo=None
        )
        assert run.tags == ["model:v1", "prefix:t.", drift]
        assert run.metadata["window_start"] == queued.message["window_start"]
        assert run.metadata["rows"] == "1000" and run.metadata["verdict"] == drift
        assert run.metadata["report"] == ("light" if done is drawn_light else "full")
        means = {
            r.metric_value_location.metric.params["column"]: r.value
            for r in run.metric_results.values()
            if r.metric_value_location.metric.params["type"] == WINDOW_VALUE_METRIC
        }
        assert means["drift_share"] == pytest.approx(queued.message["drift_share"])
        assert means["drifted_columns"] == len(queued.message["drifted_columns"])
        assert 0 < means["mean_churn_probability"] < 1
        assert means["prediction_drift_strength"] == drift_strength(queued.message["prediction_drift"])
    full_run = workspace.get_run(project.id, str(rendered.run_id))
    assert full_run is not None and len(full_run.widgets) > 5  # the drift report itself, not just numbers
    titles = [panel.title for panel in workspace.get_dashboard(project.id).panels]
    assert titles == list(WINDOW_VALUES.values())  # no shadow yet: no empty champion-vs-shadow panel
    ensure_project(workspace)  # again, as after a restart: nothing doubles
    assert len(workspace.get_dashboard(project.id).panels) == len(WINDOW_VALUES)
    ensure_project(workspace, shadow=True)  # a run with a shadow's numbers: its panel, once
    ensure_project(workspace, shadow=True)
    titles = [panel.title for panel in workspace.get_dashboard(project.id).panels]
    assert titles == [*WINDOW_VALUES.values(), SHADOW_PANEL]
    assert len(workspace.search_project("churnstream")) == 1

    # a window drawn again (by a monitor restarted before its records were committed): still one run
    again = ReportStore(store.root).save_light(light.job_id, light.run, light.light_page())
    runs = {str(r) for r in workspace.list_runs(project.id)}
    assert again is not None and runs == {again, str(rendered.run_id)}

    message = pending[1].report(
        created_at=0, html_path=rendered.html_path, url=monitor.url(pending[1].report_id)
    )
    out = message.to_json()
    assert out["rows"] == 1000 and out["reference_rows"] == 3000 and out["dataset_drift"] is True
    assert out["url"] == f"http://127.0.0.1:8088/reports/{out['report_id']}"
    assert out["concept_drift"]["detector"] == "ADWIN"
    assert out["model_auc"]["blend"] == 1.0
    store.save_message(out["report_id"], out)
    assert [m["report_id"] for m in store.load_messages()] == [out["report_id"]]
    assert json.loads(store.json_path(out["report_id"]).read_text())["html_path"] == rendered.html_path


def test_bootstrap_reference_when_the_source_has_none(tmp_path: Path) -> None:
    class Nothing:
        def reference(self, model_version: str) -> None:
            return None

    state = MonitorState(tmp_path / "state")
    monitor = DriftMonitor(
        references=Nothing(),
        store=ReportStore(tmp_path, workspace=False),
        config=MonitorConfig(window_rows=500),
        state=state,
    )
    pending, settled = [], []
    for batch in _batches(frame(2000, seed=9), "v9", 0):
        added = monitor.add(batch)
        pending += added.pending
        settled += added.settled
    # windows 1 and 2 become the reference (kept in the state); 3 and 4 are reported against it
    assert len(pending) == 2 and settled == [1, 2]
    assert [p.window.seq for p in pending] == [3, 4]
    assert monitor.reference_rows("v9") == 1000
    assert pending[0].extra["reference_source"] == "stream"
    assert len(state.load_reference("v9")) == 1000
    again = DriftMonitor(
        references=Nothing(),
        store=ReportStore(tmp_path, workspace=False),
        config=MonitorConfig(window_rows=500),
        state=state,
    )
    first = []
    for batch in _batches(frame(500, seed=10), "v9", 0):
        first += again.add(batch).pending
    assert len(first) == 1 and first[0].reference.rows == 1000  # a restart reuses the kept reference


def test_a_full_queue_draws_later_windows_light_drifted_first_and_samples_above_max_rows(
    reference: pd.DataFrame,
) -> None:
    monitor = DriftMonitor(
        references=FrameSource(reference),
        store=ReportStore(Path("/nonexistent"), workspace=False),
        config=MonitorConfig(window_rows=1000),
    )
    shifted = {"spent_total": 1.6, "avg_order_value": 1.6, "tickets_90d": 2.5}
    frames = [frame(1000, seed=s, shift=shifted if s == 4 else None) for s in range(6)]
    pending = []
    for batch in _batches(pd.concat(frames), "v1", 0):
        pending += monitor.add(batch).pending
    assert [p.verdict.dataset_drift for p in pending] == [False, False, False, False, True, False]
    queue = RenderQueue(max_jobs=2, max_rows=600)
    assert [queue.put(p) for p in pending] == [False, False, True, True, True, True]
    jobs = queue.jobs()
    assert [j.job_id for j in jobs] == [p.report_id for p in pending]  # one job per window, in order
    # the drifted window took the place of the latest non-drifted one waiting in full
    assert [j.full for j in jobs] == [True, False, False, False, True, False]
    assert all(j.columns == {} and j.pending.window.predictions == {} for j in jobs if not j.full)
    assert all(j.rows == 1000 for j in jobs)
    full = jobs[4]
    assert full.rendered_rows == 600 and full.sampled and "an even sample of 600" in full.banner()
    assert full.banner().startswith(f"Drift window {full.job_id}: ")
    assert all(len(c) == 600 for c in full.columns.values())

    # the light windows' columns are kept (sampled as a full report's) and drawn in full once none waits,
    # the newest first (none of them drifted)
    assert queue.kept == 4 and queue.take_later() is None  # windows still wait
    while queue.take() is not None:
        pass
    later = []
    while (job := queue.take_later()) is not None:
        later.append(job)
    assert [j.job_id for j in later] == [pending[i].report_id for i in (5, 3, 2, 1)] and queue.kept == 0
    assert all(
        j.full and j.later and j.sampled and j.deferred is None and j.rendered_rows == 600 for j in later
    )


def test_light_windows_kept_for_later_are_bounded_drifted_ones_kept_and_drawn_first(
    reference: pd.DataFrame,
) -> None:
    shifted = {"spent_total": 1.6, "avg_order_value": 1.6, "tickets_90d": 2.5}
    drifting = (2, 3)
    frames = [frame(1000, seed=s, shift=shifted if s in drifting else None) for s in range(7)]

    def judged() -> list[Any]:  # the windows, judged afresh (a queue drops a light window's rows)
        monitor = DriftMonitor(
            references=FrameSource(reference),
            store=ReportStore(Path("/nonexistent"), workspace=False),
            config=MonitorConfig(window_rows=1000),
        )
        return [p for batch in _batches(pd.concat(frames), "v1", 0) for p in monitor.add(batch).pending]

    pending = judged()
    assert [p.verdict.dataset_drift for p in pending] == [s in drifting for s in range(7)]
    probe = RenderQueue(max_jobs=1)
    probe.put(pending[0])
    size = sum(values.nbytes for values in probe.jobs()[0].columns.values())  # each window's columns
    queue = RenderQueue(max_jobs=1, later_bytes=3 * size + size // 2)  # room for three and a half
    for p in pending:
        queue.put(p)
    jobs = queue.jobs()
    # window 1 closed behind window 0, window 2 (drifted) took window 0's place, 3..6 closed behind it
    assert [j.full for j in jobs] == [False, False, True, False, False, False, False]
    assert queue.kept == 3 and queue.kept_bytes == 3 * size  # of the six light: the drifted, the newest
    kept = [j.job_id for j in jobs if j.deferred is not None]
    assert kept == [pending[i].report_id for i in (3, 5, 6)]
    assert all(j.columns == {} for j in jobs if j.deferred is None and not j.full)
    while queue.take() is not None:
        pass
    order = [job.job_id for job in iter(queue.take_later, None)]
    assert order == [pending[i].report_id for i in (3, 6, 5)]
    assert queue.kept_bytes == 0
    nothing = RenderQueue(max_jobs=1, later_bytes=size - 1)  # no window fits
    for p in judged()[:3]:
        nothing.put(p)
    assert nothing.kept == 0 and all(j.deferred is None for j in nothing.jobs())


def _message(start: str, end: str, **extra: Any) -> dict[str, Any]:
    return {
        "report_id": f"{start[:10]}-v1-x",
        "model_version": "v1",
        "window_start": start,
        "window_end": end,
        "rows": 10,
        "drift_share": 0.1,
        "drifted_columns": [],
        **extra,
    }


def test_realized_auc_is_plotted_at_its_own_window_and_deployments_get_a_project_each(tmp_path: Path) -> None:
    """A review's dashboard put each realized ROC-AUC at the later window that reported it, two windows
    from its estimate; a prediction-drift line mixed p-values (low = drift) with distances (high = drift);
    and two topic prefixes sharing a workspace plotted into one line."""
    from evidently.ui.workspace import Workspace

    from churnstream.monitoring.ui import RETIRED_PANELS, project_for, window_run

    realized = {"metric": "roc_auc", "value": 0.78, "labels": 900}
    realized |= {"window_start": "2024-01-01T00:00:00Z", "window_end": "2024-01-08T00:00:00Z"}
    store = ReportStore(tmp_path, topic_prefix="a.")
    for start, end in (
        ("2024-01-15T00:00:00Z", "2024-01-22T00:00:00Z"),
        ("2024-01-22T00:00:00Z", "2024-01-29T00:00:00Z"),
    ):
        ks = {"method": "K-S p_value", "score": 1e-6, "threshold": 0.05, "drifted": True}
        message = _message(start, end, realized_performance=realized, prediction_drift=ks)
        store.save_light(
            message["report_id"], window_run(message, topic_prefix="a.", mean_probability=0.3), "<p>"
        )
    ReportStore(tmp_path, topic_prefix="b.").save_light(
        "other",
        window_run(
            _message("2024-01-15T00:00:00Z", "2024-01-22T00:00:00Z"), topic_prefix="b.", mean_probability=0.9
        ),
        "<p>",
    )
    workspace = Workspace(str(store.workspace_path))
    (project,) = workspace.search_project(project_for("a."))
    assert len(workspace.search_project(project_for("b."))) == 1
    runs = [workspace.get_run(project.id, str(r)) for r in workspace.list_runs(project.id)]
    values = {
        (run.name, r.metric_value_location.metric.params["column"]): r.value
        for run in runs
        if run is not None
        for r in run.metric_results.values()
    }
    realized_runs = [run for run in runs if run is not None and run.metadata.get("report") == "realized"]
    assert len(realized_runs) == 1  # reported twice, one point
    assert realized_runs[0].timestamp == dt.datetime(2024, 1, 8)  # at its own window's end
    assert [k for k in values if k[1] == "window_realized_roc_auc"] == [
        (realized_runs[0].name, "window_realized_roc_auc")
    ]
    strengths = [v for (_, column), v in values.items() if column == "prediction_drift_strength"]
    assert strengths == [pytest.approx(4.612, abs=1e-3)] * 2  # above 1: drifted, as distance windows read
    # a dashboard of an earlier release: its misleading panels leave it at the next start
    from evidently.sdk.panels import line_plot_panel

    dashboard = workspace.get_dashboard(project.id)
    old = line_plot_panel(title=RETIRED_PANELS[0], values=[], size="half")
    dashboard.panels.append(old)
    dashboard.tabs[0].panels.append(old.id)
    workspace.save_dashboard(project.id, dashboard)
    assert RETIRED_PANELS[0] in {panel.title for panel in workspace.get_dashboard(project.id).panels}
    ensure_project(workspace, project_for("a."))
    dashboard = workspace.get_dashboard(project.id)
    assert [panel.title for panel in dashboard.panels] == list(WINDOW_VALUES.values())
    assert old.id not in dashboard.tabs[0].panels


def test_a_reference_file_that_cannot_be_read_leaves_the_reference_to_the_stream(tmp_path: Path) -> None:
    """A review's model had its reference.parquet cut in half: the monitor dead-lettered a batch of 58
    predictions and 68 outcomes for it (ArrowInvalid), lost to the windows and realized performance."""
    from churnstream.models.registry import ModelRegistry
    from churnstream.monitoring.reference import RegistrySource
    from tests.unit.test_models_shadow import _model

    registry = ModelRegistry(tmp_path)
    frame = pd.DataFrame({"recency_days": [1.0, 2.0, 3.0], "churn_probability": [0.1, 0.2, 0.3]})
    version = registry.register(_model(1), {}, reference=frame, promote=True)
    path = tmp_path / version / "reference.parquet"
    assert len(RegistrySource(ModelRegistry(tmp_path)).reference(version)) == 3
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert RegistrySource(ModelRegistry(tmp_path)).reference(version) is None


def test_a_window_published_light_is_drawn_in_full_once_the_monitor_caught_up(
    tmp_path: Path, reference: pd.DataFrame
) -> None:
    """Three windows at once with one full report waiting at most: two are published light; once none
    waits, their full reports replace their pages and runs, and their saved messages say so (the link a
    message gave now shows the full report)."""
    import asyncio

    from evidently.ui.workspace import Workspace

    from churnstream.monitoring.publisher import ReportPublisher

    store = ReportStore(tmp_path / "reports")
    monitor = DriftMonitor(
        references=FrameSource(reference),
        store=store,
        config=MonitorConfig(window_rows=1000),
        url_base="http://127.0.0.1:8088",
    )
    shifted = {"spent_total": 1.6, "avg_order_value": 1.6, "tickets_90d": 2.5}
    frames = [frame(1000, seed=20 + s, shift=shifted if s == 1 else None) for s in range(3)]
    pending = []
    for batch in _batches(pd.concat(frames), "v1", 1_700_000_000_000):
        pending += monitor.add(batch).pending
    published: list[dict[str, Any]] = []

    async def publish_report(report: Any) -> None:
        published.append(report.to_json())

    renderer = ReportRenderer(root=store.root, drift_share=0.5, in_thread=True)
    publisher = ReportPublisher(
        monitor=monitor, renderer=renderer, publish_report=publish_report, settled=lambda seqs: None
    )

    async def drive() -> None:
        loop = asyncio.get_running_loop()
        for p in pending:
            publisher.put(p)
        assert publisher.awaiting_full_report() == 2
        task = asyncio.create_task(publisher.run())
        deadline = loop.time() + 300
        try:
            while publisher.windows_drawn_later < 2 or publisher.awaiting_full_report():
                assert not task.done() and loop.time() < deadline
                await asyncio.sleep(0.05)
        finally:
            task.cancel()

    try:
        asyncio.run(drive())
    finally:
        renderer.close()
    assert [m["evidently_report"]["drawn"] for m in published] == ["light", "full", "light"]
    saved = {m["report_id"]: json.loads(store.json_path(m["report_id"]).read_text()) for m in published}
    for m in published:
        now = saved[m["report_id"]]
        assert now == publisher.message_for(m["report_id"]) and now["url"] == m["url"]
        page = store.html_path(m["report_id"]).read_text()
        assert f"{m['window_start']} .. {m['window_end']}" in page and "was not drawn" not in page
        assert len(page) > 100_000 and store.evidently_json_path(m["report_id"]).is_file()
        if m["evidently_report"]["drawn"] == "light":
            assert now["evidently_report"] | {"drawn_later_at": None} == {
                "drawn": "full",
                "rows": 1000,
                "rendered_rows": 1000,
                "sampled": False,
                "drawn_later": True,
                "drawn_later_at": None,
            }
            assert now["evidently_run"] != m["evidently_run"]
        else:
            assert now == m
    workspace = Workspace(str(store.workspace_path))
    (project,) = workspace.search_project("churnstream")
    runs = {str(r): workspace.get_run(project.id, r) for r in workspace.list_runs(project.id)}
    assert sorted(runs) == sorted(str(m["evidently_run"]) for m in saved.values())  # the light runs replaced
    assert all(run is not None and run.metadata["report"] == "full" for run in runs.values())
    assert (publisher.windows_light, publisher.windows_drawn_later, publisher.reports_rendered) == (2, 2, 3)
    assert publisher.counters()["windows_drawn_later"] == 2


class _Scripted:
    """A report worker that draws nothing: each job's answer comes from ``answer`` (or it raises)."""

    mode = "fake"
    restarts = 0

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.jobs: list[Any] = []

    def start(self) -> Any:
        from concurrent.futures import Future

        done: Future[float] = Future()
        done.set_result(0.0)
        return done

    def submit(self, job: Any) -> Any:
        from concurrent.futures import Future

        self.jobs.append((job.job_id, job.full, job.later))
        done: Future[Any] = Future()
        done.set_result(self.answer(job))
        return done

    def restart(self) -> None: ...

    def close(self) -> None: ...


def test_a_later_draw_keeps_a_full_slot_and_the_saved_message_says_what_the_page_shows(
    tmp_path: Path, reference: pd.DataFrame
) -> None:
    """A review's findings: a later draw holding the worker pushed the next windows onto light pages; a
    light page that failed kept its error once drawn in full; a later draw that failed left the message
    naming a run it had replaced; the counters it changed were saved only with the next window."""
    import asyncio

    from churnstream.monitoring.publisher import ReportPublisher
    from churnstream.monitoring.render import Rendered

    store = ReportStore(tmp_path / "reports", workspace=False)
    monitor = DriftMonitor(
        references=FrameSource(reference), store=store, config=MonitorConfig(window_rows=1000)
    )
    pending = []
    for batch in _batches(pd.concat([frame(1000, seed=40 + s) for s in range(4)]), "v1", 0):
        pending += monitor.add(batch).pending
    assert len(pending) == 4

    queue = RenderQueue(max_jobs=1)
    drawing = RenderQueue(max_jobs=1)
    drawing.put(pending[3])
    queue.drawing_later = drawing.take()  # one more full job may wait: it took the place of the one drawing
    assert [queue.put(p) for p in pending[:3]] == [False, False, True]

    answers: dict[str, list[Any]] = {}

    def answer(job: Any) -> Rendered:
        said = answers[job.job_id].pop(0)
        if isinstance(said, Exception):
            raise said
        return Rendered(job.job_id, str(store.html_path(job.job_id)), 0.0, **said)

    published: list[dict[str, Any]] = []
    recounted: list[dict[str, int]] = []

    async def publish_report(report: Any) -> None:
        published.append(report.to_json())

    renderer = _Scripted(answer)
    publisher = ReportPublisher(
        monitor=monitor,
        renderer=renderer,  # type: ignore[arg-type]
        publish_report=publish_report,
        settled=lambda seqs: None,
        recounted=lambda: recounted.append(publisher.counters()),
    )
    first, second, third, fourth = (p.report_id for p in pending)
    answers[first] = [{"run_id": "run-1"}]
    answers[second] = [RuntimeError("worker unreachable"), {"run_id": "run-2-full"}]  # light: error page
    answers[third] = [
        {"run_id": "run-3", "drawn": "light"},
        {"run_id": "run-3-error", "error": "boom", "drawn": "light"},
    ]
    answers[fourth] = [{"run_id": "run-4", "drawn": "light"}, {"run_id": "run-4-full"}]

    async def drive() -> None:
        for p in pending:
            publisher.put(p)
        while (job := publisher.queue.take()) is not None:
            await publisher.publish(job, await publisher.render(job))
        while (later := publisher.queue.take_later()) is not None:
            await publisher.draw_later(later)

    asyncio.run(drive())
    assert [m["evidently_report"].get("error") is not None for m in published] == [False, True, False, False]
    # drawn later newest first: the fourth and the second in full, the third failed
    assert renderer.jobs[-3:] == [(w, True, True) for w in (fourth, third, second)]
    saved = {m["report_id"]: json.loads(store.json_path(m["report_id"]).read_text()) for m in published}
    for window, run in ((second, "run-2-full"), (fourth, "run-4-full")):
        evidently = saved[window]["evidently_report"]
        assert evidently["drawn"] == "full" and evidently["drawn_later"] and "error" not in evidently
        assert saved[window]["evidently_run"] == run
    # the failed later draw: the error page replaced the light page and its run; the message says both
    evidently = saved[third]["evidently_report"]
    assert evidently["drawn"] == "light" and evidently["error"] == "boom" and "drawn_later" not in evidently
    assert saved[third]["evidently_run"] == "run-3-error"
    assert [c["windows_drawn_later"] for c in recounted] == [1, 1, 2]
    assert recounted[-1]["report_errors"] == 2  # the unreachable worker and the failed later draw

    state = MonitorState(tmp_path / "state")
    assert state.save_counters({"windows_drawn_later": 1}) is False  # nothing saved yet
    state.save(positions={}, seq=3, detectors=b"d", counters={"windows_drawn_later": 0})
    assert state.save_counters({"windows_drawn_later": 1}) is True
    again = state.load()
    assert again is not None
    assert (again.seq, again.detectors, again.counters) == (3, b"d", {"windows_drawn_later": 1})


def test_light_windows_saved_before_a_restart_are_drawn_in_full_after_it(
    tmp_path: Path, reference: pd.DataFrame
) -> None:
    """A monitor stopped while light windows still wait for their full report leaves their columns beside
    the reports; the next monitor draws them in full (real Evidently), their saved messages then say so and
    the files go. A file whose window's message says full already (left by a stop just after the message
    was updated) is removed, not drawn again."""
    import asyncio

    from churnstream.monitoring.publisher import ReportPublisher
    from churnstream.monitoring.render import Rendered

    store = ReportStore(tmp_path / "reports")
    state = MonitorState(tmp_path / "state", later=tmp_path / "reports" / "later" / "app")

    def monitor() -> DriftMonitor:
        return DriftMonitor(
            references=FrameSource(reference),
            store=store,
            config=MonitorConfig(window_rows=1000),
            url_base="http://127.0.0.1:8088",
            state=state,
        )

    first = monitor()
    pending = []
    for batch in _batches(pd.concat([frame(1000, seed=60 + s) for s in range(3)]), "v1", 1_700_000_000_000):
        pending += first.add(batch).pending
    assert len(pending) == 3

    def answer(job: Any) -> Rendered:  # the first monitor is stopped before any later draw
        drawn = "full" if job.full else "light"
        return Rendered(job.job_id, str(store.html_path(job.job_id)), 0.0, run_id=f"run-{drawn}", drawn=drawn)

    published: list[dict[str, Any]] = []

    async def publish_report(report: Any) -> None:
        published.append(report.to_json())

    before = ReportPublisher(
        monitor=first,
        renderer=_Scripted(answer),  # type: ignore[arg-type]
        publish_report=publish_report,
        settled=lambda seqs: None,
    )

    async def publish_all() -> None:
        for p in pending:
            before.put(p)
        while (job := before.queue.take()) is not None:
            await before.publish(job, await before.render(job))

    asyncio.run(publish_all())
    drawn = {m["report_id"]: m["evidently_report"]["drawn"] for m in published}
    light = {rid for rid, how in drawn.items() if how == "light"}
    (full,) = set(drawn) - light
    assert len(light) == 2 and state.later_ids() == light and before.awaiting_full_report() == 2
    stale = pending[0].window.columns() if pending[0].report_id == full else pending[1].window.columns()
    state.save_later(full, stale, {"feature_names": FEATURES, "seq": 99, "mean_probability": 0.5})

    second = monitor()
    renderer = ReportRenderer(root=store.root, drift_share=0.5, in_thread=True)
    after = ReportPublisher(
        monitor=second, renderer=renderer, publish_report=publish_report, settled=lambda seqs: None
    )
    assert after.awaiting_full_report() == 2 and state.later_ids() == light  # the stale file is gone

    async def catch_up() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.create_task(after.run())
        deadline = loop.time() + 300
        try:
            while after.windows_drawn_later < 2 or after.awaiting_full_report():
                assert not task.done() and loop.time() < deadline
                await asyncio.sleep(0.05)
        finally:
            task.cancel()

    try:
        asyncio.run(catch_up())
    finally:
        renderer.close()
    assert len(published) == 3  # nothing published again: the drift_reports messages stay one per window
    assert state.later_ids() == set()
    for rid in light:
        saved = json.loads(store.json_path(rid).read_text())
        assert saved["evidently_report"]["drawn"] == "full" and saved["evidently_report"]["drawn_later"]
        assert saved["evidently_report"]["rendered_rows"] == 1000 and not saved["evidently_report"]["sampled"]
        page = store.html_path(rid).read_text()
        assert f"{saved['window_start']} .. {saved['window_end']}" in page and len(page) > 100_000
    assert json.loads(store.json_path(full).read_text())["evidently_report"]["drawn"] == "full"
    assert not store.html_path(full).exists()  # the scripted worker drew no page; none drawn since either


def test_saved_light_window_columns_round_trip_and_an_unreadable_file_is_dropped(tmp_path: Path) -> None:
    state = MonitorState(tmp_path / "state", later=tmp_path / "later")
    assert state.later_ids() == set() and state.load_later() == []
    columns = {"spent_total": np.array([1.5, np.nan, 3.0]), "churn_probability": np.array([0.1, 0.2, 0.3])}
    meta = {"feature_names": ["spent_total"], "seq": 7, "mean_probability": 0.2}
    state.save_later("20240101T000000Z-v1-abc", columns, meta)
    (tmp_path / "later" / "broken.arrow").write_bytes(b"not arrow")
    assert state.later_ids() == {"20240101T000000Z-v1-abc", "broken"}
    ((rid, loaded, loaded_meta),) = state.load_later()
    assert rid == "20240101T000000Z-v1-abc" and loaded_meta == meta and list(loaded) == list(columns)
    for name, values in columns.items():
        np.testing.assert_array_equal(loaded[name], values)
    assert state.later_ids() == {rid}  # the unreadable one removed
    state.drop_later(rid)
    assert state.later_ids() == set() and not list((tmp_path / "later").iterdir())


def test_a_window_rebuilt_after_a_restart_replaces_the_light_window_restored(
    tmp_path: Path, reference: pd.DataFrame
) -> None:
    """A monitor stopped after publishing a light window but before its records were committed re-reads
    them and rebuilds the same window (same report id) while the saved columns are restored too: the
    window is kept once (or not at all when it now gets its full report), its bytes counted once."""
    from churnstream.monitoring.render import RenderJob

    def judged() -> list[Any]:
        store = ReportStore(tmp_path / "reports", workspace=False)
        monitor = DriftMonitor(
            references=FrameSource(reference), store=store, config=MonitorConfig(window_rows=1000)
        )
        out = []
        for batch in _batches(pd.concat([frame(1000, seed=80 + s) for s in range(3)]), "v1", 0):
            out += monitor.add(batch).pending
        return out

    before = RenderQueue(max_jobs=1)
    assert [before.put(p) for p in judged()] == [False, True, True]  # one full report waits: two light
    saved = before.kept_jobs()
    assert len(saved) == 2

    def restored(job: RenderJob) -> RenderJob:
        return RenderJob(
            pending=None,
            message=job.message,
            run=job.run,
            full=False,
            columns={},
            rows=job.rows,
            reference=job.reference,
            feature_names=job.feature_names,
            seq=job.seq,
            deferred=job.deferred,
        )

    after = RenderQueue(max_jobs=1)
    assert all(after.restore(restored(job)) for job in saved)
    assert not after.restore(restored(saved[0]))  # one per window
    size = after.kept_bytes
    assert after.kept == 2 and size == before.kept_bytes > 0
    again = judged()
    assert [p.report_id for p in again] == [j.job_id for j in before.jobs()]
    assert [after.put(p) for p in again] == [False, True, True]
    assert sorted(j.job_id for j in after.kept_jobs()) == sorted(j.job_id for j in saved)
    assert after.kept_bytes == size

    # rebuilt with room to spare, the window gets its full report: nothing is kept for it any more
    roomy = RenderQueue(max_jobs=3)
    assert all(roomy.restore(restored(job)) for job in saved)
    assert [roomy.put(p) for p in judged()] == [False, False, False]
    assert roomy.kept == 0 and roomy.kept_bytes == 0 and roomy.take_later() is None
