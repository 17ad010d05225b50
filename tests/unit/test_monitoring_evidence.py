"""Champion vs shadow evidence (#24) and what the monitor does with it: promote, roll back, retrain."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from churnstream.models.registry import ModelRegistry
from churnstream.monitoring.evidence import compare, evidence_from_outcomes, pr_auc, roc_auc
from churnstream.settings import Settings
from churnstream.streams.retrain import LoopWatch
from churnstream.timefmt import format_time
from tests.unit.test_models_shadow import _model

DAY_MS = 86_400_000


def _outcomes(n: int, *, shadow_better: bool, version: str = "v0002", seed: int = 0) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    good = np.clip(0.3 + 0.4 * (y - 0.3) + rng.normal(0, 0.2, n), 0, 1)
    poor = np.clip(0.3 + 0.05 * (y - 0.3) + rng.normal(0, 0.2, n), 0, 1)
    champion, shadow = (poor, good) if shadow_better else (good, poor)
    return [
        {
            "as_of": int(i * DAY_MS // 10),
            "label": int(y[i]),
            "batch_probability": float(champion[i]),
            "shadow_probability": float(shadow[i]),
            "shadow_model_version": version,
            "source": "inactivity",  # as if every label were final (see _drifting_shadow for when not)
        }
        for i in range(n)
    ]


def outcome_messages(rows: list[dict[str, Any]], *, t0: int = 0) -> list[dict[str, Any]]:
    """``rows`` (as :func:`_outcomes` makes them) as ``churn_outcomes`` messages of predictions made ``t0``
    on, each labelled by inactivity a horizon (30 d) after it, and one outcome without a shadow 38 days
    after the last: the label clock past every one of theirs being final."""
    messages = [
        {
            "prediction_id": f"p{i}",
            "customer_id": f"c{i}",
            "as_of": format_time(t0 + r["as_of"]),
            "labeled_at": format_time(t0 + r["as_of"] + 30 * DAY_MS),
            "label": r["label"],
            "source": "inactivity",
            "batch_probability": r["batch_probability"],
            "online_probability": None,
            "churn_probability": r["batch_probability"],
            "shadow_model_version": r["shadow_model_version"],
            "shadow_probability": r["shadow_probability"],
        }
        for i, r in enumerate(rows)
    ]
    last = t0 + max(r["as_of"] for r in rows)
    clock = {**messages[-1], "prediction_id": "p-clock", "labeled_at": format_time(last + 38 * DAY_MS)}
    clock["shadow_model_version"] = clock["shadow_probability"] = None
    return [*messages, clock]


def test_metrics_equal_scikit_learns_with_ties() -> None:
    rng = np.random.default_rng(3)
    for _ in range(10):
        y = (rng.random(500) < 0.2).astype(int)
        p = np.round(rng.random(500), 1)
        assert abs(roc_auc(y, p) - roc_auc_score(y, p)) < 1e-12  # type: ignore[operator]
        assert abs(pr_auc(y, p) - average_precision_score(y, p)) < 1e-12  # type: ignore[operator]
    assert roc_auc(np.zeros(5, dtype=int), np.ones(5)) is None


def test_the_interval_decides_and_equal_models_are_undecided() -> None:
    better = evidence_from_outcomes(_outcomes(1500, shadow_better=True), shadow_version="v0002")
    worse = evidence_from_outcomes(_outcomes(1500, shadow_better=False), shadow_version="v0002")
    assert better["cumulative"]["verdict"] == "better" and worse["cumulative"]["verdict"] == "worse"
    assert all(better["cumulative"][m]["difference"] > 0 for m in ("roc_auc", "pr_auc", "alert_value"))
    low, high = better["cumulative"]["roc_auc"]["interval"]
    assert 0 < low <= better["cumulative"]["roc_auc"]["difference"] <= high
    assert len(better["windows"]) == 22 and sum(w["labels"] for w in better["windows"]) == 1500
    rng = np.random.default_rng(1)
    y = (rng.random(1000) < 0.3).astype(int)
    p = rng.random(1000)
    assert compare(y, p, p)["verdict"] == "undecided"
    assert compare(y[:50], p[:50], p[:50])["verdict"] == "too few labels"
    other = evidence_from_outcomes(
        _outcomes(300, shadow_better=True, version="v0009"), shadow_version="v0002"
    )
    assert other["cumulative"]["labels"] == 0 and other["cumulative"]["verdict"] == "too few labels"


def _registry(tmp_path: Path) -> ModelRegistry:
    registry = ModelRegistry(tmp_path)
    registry.register(_model(1), {}, promote=True)
    registry.register(_model(2), {})
    return registry


def test_the_monitor_promotes_a_better_shadow_only_when_the_policy_is_set(tmp_path: Path) -> None:
    registry = _registry(tmp_path)
    registry.shadow("v0002")
    rows = _outcomes(1500, shadow_better=True)
    off = LoopWatch(Settings(model_dir=tmp_path), outcomes=lambda: rows)
    evidence = off.on_report("none")
    assert evidence is not None and evidence["cumulative"]["verdict"] == "better"
    assert registry.current_version() == "v0001"  # no policy: the evidence is only reported
    assert registry.evidence() == evidence
    too_few = LoopWatch(
        Settings(model_dir=tmp_path, auto_promote_margin=0.01, auto_promote_min_labels=5000),
        outcomes=lambda: rows,
    )
    too_few.on_report("none")
    assert registry.current_version() == "v0001"
    on = LoopWatch(
        Settings(model_dir=tmp_path, auto_promote_margin=0.01, auto_promote_min_labels=1000),
        outcomes=lambda: rows,
    )
    on.on_report("none")
    assert registry.current_version() == "v0002" and registry.shadow_version() == "v0001"
    # the demoted model in shadow: if the new one does worse on later labels, the same rule rolls back
    later = _outcomes(1500, shadow_better=True, version="v0001", seed=4)
    LoopWatch(
        Settings(model_dir=tmp_path, auto_promote_margin=0.01, auto_promote_min_labels=1000),
        outcomes=lambda: later,
    ).on_report("none")
    assert registry.current_version() == "v0001" and registry.shadow_version() == "v0002"


def test_a_worse_shadow_is_never_promoted(tmp_path: Path) -> None:
    registry = _registry(tmp_path)
    registry.shadow("v0002")
    rows = _outcomes(3000, shadow_better=False)
    watch = LoopWatch(
        Settings(model_dir=tmp_path, auto_promote_margin=0.0, auto_promote_min_labels=100),
        outcomes=lambda: rows,
    )
    assert watch.on_report("retrain")["cumulative"]["verdict"] == "worse"  # type: ignore[index]
    assert registry.current_version() == "v0001" and registry.shadow_version() == "v0002"


class _Process:
    def __init__(self) -> None:
        self.code: int | None = None

    def poll(self) -> int | None:
        return self.code


def test_retrain_on_advice_starts_one_retrain_at_a_time_without_a_shadow(tmp_path: Path) -> None:
    _registry(tmp_path)
    started: list[_Process] = []

    def start(until: str | None) -> _Process:
        started.append(_Process())
        return started[-1]

    never = LoopWatch(Settings(model_dir=tmp_path), outcomes=list, start_retrain=start)
    never.on_report("retrain")
    assert started == []
    watch = LoopWatch(Settings(model_dir=tmp_path, retrain_on_advice=1), outcomes=list, start_retrain=start)
    watch.on_report("watch")
    assert started == []
    watch.on_report("retrain")
    watch.on_report("retrain")
    assert len(started) == 1  # one at a time
    started[0].code = 0
    watch.on_report("retrain")
    assert len(started) == 2
    started[1].code = 0
    ModelRegistry(tmp_path).shadow("v0002")
    watch.on_report("retrain")  # a candidate is in shadow already: its evidence comes first
    assert len(started) == 2


def test_advice_about_a_model_no_longer_current_is_not_acted_on(tmp_path: Path) -> None:
    """A review's monitor, catching up on the windows of v0001 after v0003 was promoted, started a retrain
    on their advice (and would have retired an undecided shadow for it)."""
    registry = _registry(tmp_path)
    started: list[_Process] = []

    def start(until: str | None) -> _Process:
        started.append(_Process())
        return started[-1]

    watch = LoopWatch(Settings(model_dir=tmp_path, retrain_on_advice=1), outcomes=list, start_retrain=start)
    watch.on_report("retrain", "2024-06-01T00:00:00Z", "v0002")  # v0001 is current
    assert started == []
    watch.on_report("retrain", "2024-06-01T00:00:00Z", "v0001")
    assert len(started) == 1
    assert registry.current_version() == "v0001"


def test_a_retrain_does_not_take_the_place_of_a_model_in_shadow_unless_told(tmp_path: Path) -> None:
    """`churnstream retrain`, as a report advised, replaced an undecided shadow and its evidence without a
    word (a review). It now refuses, before reading the topics, saying what to do."""
    from churnstream.errors import ChurnstreamError
    from churnstream.streams.retrain import retrain

    registry = _registry(tmp_path)
    registry.shadow("v0002")
    with pytest.raises(ChurnstreamError, match=r"v0002 is in shadow.*--replace-shadow"):
        retrain(Settings(model_dir=tmp_path, kafka_bootstrap="127.0.0.1:1"), progress=False)
    assert registry.shadow_version() == "v0002"
    # a former champion in shadow, as auto-promotion leaves it, is no candidate: the retrain goes on (to
    # the topics) instead of advising to promote it back (a second review)
    from churnstream.streams.retrain import _refuse_over_shadow

    registry.promote("v0002")
    registry.shadow("v0001")
    _refuse_over_shadow(registry)  # no error


def test_a_report_drawn_late_shows_the_evidence_its_window_end_knew(tmp_path: Path) -> None:
    """Three reports a review's monitor drew within 8 s while catching up carried the same evidence, with
    labels from after the earliest one's end. A report's evidence counts the predictions whose labels were
    all known by its window's end (the horizon and the allowed lateness after them)."""
    from churnstream.timefmt import format_time

    registry = _registry(tmp_path)
    registry.shadow("v0002")
    rows = _outcomes(3000, shadow_better=True)  # as_of 0 .. 300 days
    settings = Settings(model_dir=tmp_path)
    watch = LoopWatch(settings, outcomes=lambda: rows)
    latest = watch.on_report("none")
    end = 200 * DAY_MS
    then = watch.on_report("none", format_time(end))
    known = end - settings.horizon_ms - settings.lateness_ms
    assert latest is not None and then is not None
    assert then["cumulative"]["labels"] == sum(1 for r in rows if r["as_of"] <= known)
    assert then["cumulative"]["labels"] < latest["cumulative"]["labels"] == len(rows)


def test_the_alert_value_replays_the_policy_on_probability_times_the_customers_value() -> None:
    """Outcomes carry customer_value, so the replayed policy picks by value at risk as the real one does:
    a valuable churner with a low probability outranks cheap likely churners."""
    labels, champion, values = [1, 0, 0, 1], [0.9, 0.8, 0.1, 0.2], [1.0, 1.0, 1.0, 100.0]
    outcomes = [
        {
            "as_of": 1_700_000_000_000 + i,
            "label": y,
            "batch_probability": p,
            "shadow_model_version": "v2",
            "shadow_probability": p,
            "customer_value": v,
        }
        for i, (y, p, v) in enumerate(zip(labels, champion, values, strict=True))
    ]
    by_value = evidence_from_outcomes(outcomes, shadow_version="v2", share=0.5, samples=10)
    assert by_value["cumulative"]["alert_value"]["champion"] == 1.0  # rows 3 (value 100) and 0: both churned
    unknown = [{k: v for k, v in o.items() if k != "customer_value"} for o in outcomes]
    by_probability = evidence_from_outcomes(unknown, shadow_version="v2", share=0.5, samples=10)
    assert by_probability["cumulative"]["alert_value"]["champion"] == 0.5  # rows 0 and 1


def _drifting_shadow(clock_day: float) -> list[dict[str, Any]]:
    """Outcomes known by ``clock_day`` (days of event time) of a shadow that ranks as well as the champion
    within a day, but whose scores drift down over time, so it ranks worse across days (H = 30 d, lateness
    7 d: the defaults)."""
    rng = np.random.default_rng(3)
    days, per_day = 60, 200
    as_of = np.repeat(np.arange(days), per_day) + rng.random(days * per_day)
    rate = np.exp(rng.normal(np.log(1 / 20), 1.0, as_of.size))  # orders a day
    next_order = rng.exponential(1 / rate)
    y = (next_order > 30).astype(int)
    labeled_at = np.where(y == 0, as_of + next_order, as_of + 37)
    risk = -np.log(rate)
    champion = 1 / (1 + np.exp(-(risk - 3 + rng.normal(0, 0.7, as_of.size))))
    shadow = 1 / (1 + np.exp(-(risk - 3 + rng.normal(0, 0.7, as_of.size) - 0.015 * as_of)))
    return [
        {
            "as_of": int(as_of[i] * DAY_MS),
            "labeled_at": int(labeled_at[i] * DAY_MS),
            "label": int(y[i]),
            "batch_probability": float(champion[i]),
            "shadow_probability": float(shadow[i]),
            "shadow_model_version": "v0002",
            "model_version": "v0001",
            "customer_id": f"c{i}",
            "source": "inactivity" if y[i] else "order",
        }
        for i in np.flatnonzero(labeled_at <= clock_day)
    ]


def test_the_evidence_waits_for_final_labels(tmp_path: Path) -> None:
    """A "stayed" label comes with the next order, a "churned" one a horizon plus the lateness later: on
    everything known by day 45 the drifting shadow would read better; on the predictions whose labels are
    all final it does not, and the monitor does not promote it."""
    rows = _drifting_shadow(45)
    assert evidence_from_outcomes(rows, shadow_version="v0002")["cumulative"]["verdict"] == "better"
    registry = _registry(tmp_path)
    registry.shadow("v0002")
    watch = LoopWatch(
        Settings(model_dir=tmp_path, auto_promote_margin=0.0, auto_promote_min_labels=100),
        outcomes=lambda: rows,
    )
    evidence = watch.on_report("none")
    assert evidence is not None
    final = max(r["as_of"] for r in rows if r["label"] == 1)  # the latest "churned": day 45 - 30 d - 7 d
    assert evidence["final_until"] == {"0": final} and 7 * DAY_MS < final <= 8 * DAY_MS
    assert evidence["left_out"]["labels not all known yet"] == sum(r["as_of"] > final for r in rows)
    assert evidence["cumulative"]["verdict"] != "better"
    assert registry.current_version() == "v0001" and registry.shadow_version() == "v0002"
    known = LoopWatch(Settings(model_dir=tmp_path), outcomes=lambda: _drifting_shadow(200)).on_report("none")
    assert known is not None and known["cumulative"]["verdict"] == "worse"  # every label final


def test_the_bootstrap_draws_customers_so_equal_models_rarely_differ() -> None:
    """Two equally good models, 150 customers with 10 predictions each (an event and its sweeps share the
    features, each model's error and mostly the label): resampling rows calls about half of the shops
    better or worse; resampling customers about the 10% a 90% interval allows."""
    rng = np.random.default_rng(0)
    decided = {"rows": 0, "customers": 0}
    shops, customers, per = 40, 150, 10
    for shop in range(shops):
        risk = rng.normal(0, 1.5, customers)
        churner = (rng.random(customers) < 1 / (1 + np.exp(-risk))).astype(int)
        y = np.repeat(churner, per)
        y = np.where(rng.random(y.size) < 0.1, 1 - y, y)
        champion = 1 / (1 + np.exp(-np.repeat(risk + rng.normal(0, 1, customers), per)))
        shadow = 1 / (1 + np.exp(-np.repeat(risk + rng.normal(0, 1, customers), per)))
        groups = np.repeat(np.arange(customers), per)
        for name, by in (("rows", None), ("customers", groups)):
            found = compare(y, champion, shadow, groups=by, samples=100, seed=shop)
            decided[name] += found["verdict"] in ("better", "worse")
    assert decided["rows"] >= 12, decided  # the flaw this guards against
    assert decided["customers"] <= 9, decided


def test_the_evidence_counts_only_the_champions_predictions_after_both_training_ends() -> None:
    rows = _outcomes(1500, shadow_better=True)
    for i, r in enumerate(rows):
        r["model_version"] = "v0001" if i % 3 else "v0003"
        r["customer_id"] = f"c{i % 500}"
        r["customer_value"] = 2.0
    found = evidence_from_outcomes(
        rows, shadow_version="v0002", champion_version="v0001", after=rows[300]["as_of"]
    )
    assert found["left_out"] == {
        "made before a model's training end": sum(
            r["as_of"] <= rows[300]["as_of"] and r["model_version"] == "v0001" for r in rows
        ),
        "made by v0003, not the champion": 500,
    }
    assert found["cumulative"]["labels"] == sum(
        r["as_of"] > rows[300]["as_of"] and r["model_version"] == "v0001" for r in rows
    )


def test_with_retrain_on_advice_a_worse_shadow_leaves_the_slot_and_the_retrain_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before, a candidate that stayed worse or undecided held the shadow slot for good, and every later
    `retrain` advice did nothing, without a word. One with too few labels still waits: it has not had its
    chance; an undecided one leaves when the current model falls (a `retrain` advice)."""
    registry = _registry(tmp_path)
    registry.shadow("v0002", reason="retrain")
    started: list[str | None] = []

    def start(until: str | None) -> _Process:
        started.append(until)
        return _Process()

    settings = Settings(model_dir=tmp_path, retrain_on_advice=1)
    few = _outcomes(50, shadow_better=True)
    watch = LoopWatch(settings, outcomes=lambda: few, start_retrain=start)
    with caplog.at_level("WARNING", logger="churnstream.streams.retrain"):
        assert watch.on_report("retrain", "1998-03-01T00:00:00Z")["cumulative"]["verdict"] == "too few labels"  # type: ignore[index]
    assert started == [] and registry.shadow_version() == "v0002"  # it has not had its chance yet
    assert "v0002 is in shadow and its evidence says too few labels" in caplog.text

    undecided = _outcomes(1500, shadow_better=True)
    for r in undecided:
        r["shadow_probability"] = r["batch_probability"]
    watch = LoopWatch(settings, outcomes=lambda: undecided, start_retrain=start)
    assert watch.on_report("none")["cumulative"]["verdict"] == "undecided"  # type: ignore[index]
    assert started == [] and registry.shadow_version() == "v0002"  # the current model holds: no hurry
    # the current model falls and the shadow is no better on enough final labels: a newer candidate
    watch.on_report("retrain", "1998-02-01T00:00:00Z")
    assert registry.shadow_version() is None and started == ["1998-02-01T00:00:00Z"]
    assert registry.log()[-1]["reason"] == (
        "no better than v0001 on 1500 labels while the monitor advises retrain (CHURN_RETRAIN_ON_ADVICE)"
    )
    started.clear()
    registry.shadow("v0002", reason="retrain")

    worse = _outcomes(1500, shadow_better=False)
    watch = LoopWatch(settings, outcomes=lambda: worse, start_retrain=start)
    assert watch.on_report("none")["cumulative"]["verdict"] == "worse"  # type: ignore[index]
    assert registry.shadow_version() is None and started == []
    assert registry.log()[-1]["reason"] == "worse than v0001 on 1500 labels (CHURN_RETRAIN_ON_ADVICE)"
    registry.shadow("v0002", reason="retrain")
    watch.on_report("retrain", "1998-03-01T00:00:00Z")
    assert registry.shadow_version() is None and started == ["1998-03-01T00:00:00Z"]


def test_a_shadow_better_by_less_than_the_auto_promotion_margin_is_kept_on_a_retrain_advice(
    tmp_path: Path,
) -> None:
    """With CHURN_AUTO_PROMOTE_MARGIN the verdict is undecided while the interval's low end lies under the
    margin, also for a shadow whose whole interval lies above 0: better than the falling champion, it is
    the one model worth keeping, and the retrain waits (review of the rule's first version)."""
    registry = _registry(tmp_path)
    registry.shadow("v0002", reason="retrain")
    started: list[str | None] = []
    rows = _outcomes(1500, shadow_better=True)
    settings = Settings(model_dir=tmp_path, retrain_on_advice=1, auto_promote_margin=0.5)
    watch = LoopWatch(settings, outcomes=lambda: rows, start_retrain=lambda until: started.append(until))  # type: ignore[arg-type,func-returns-value]
    evidence = watch.on_report("retrain", "1998-02-01T00:00:00Z")
    assert evidence is not None and evidence["cumulative"]["verdict"] == "undecided"
    assert evidence["cumulative"]["roc_auc"]["interval"][0] > 0
    assert registry.shadow_version() == "v0002" and started == []


def test_a_rollback_to_the_shadow_empties_the_slot_and_nothing_promotes_itself(tmp_path: Path) -> None:
    """After an auto-promotion the demoted model is in shadow; rolling back to it left it both current and
    shadow, and the monitor then promoted it over itself on every report."""
    registry = _registry(tmp_path)
    registry.shadow("v0002")
    rows = _outcomes(1500, shadow_better=True)
    watch = LoopWatch(Settings(model_dir=tmp_path, auto_promote_margin=0.0), outcomes=lambda: rows)
    watch.on_report("none")
    assert registry.current_version() == "v0002" and registry.shadow_version() == "v0001"
    assert registry.rollback() == "v0001"
    assert registry.current_version() == "v0001" and registry.shadow_version() is None
    registry.shadow("v0001")  # by hand, all the same: the current model never promotes itself
    promotions = sum(e["action"] == "promote" for e in registry.log())
    self_rows = _outcomes(1500, shadow_better=True, version="v0001")
    policy = Settings(model_dir=tmp_path, auto_promote_margin=0.0)
    LoopWatch(policy, outcomes=lambda: self_rows).on_report("none")
    assert sum(e["action"] == "promote" for e in registry.log()) == promotions


def test_no_auto_promotion_before_the_outcomes_are_read_to_their_end(tmp_path: Path) -> None:
    registry = _registry(tmp_path)
    registry.shadow("v0002")
    rows = _outcomes(1500, shadow_better=True)
    watch = LoopWatch(Settings(model_dir=tmp_path, auto_promote_margin=0.0), outcomes=lambda: rows)
    evidence = watch.evidence("v0002")
    assert evidence["cumulative"]["verdict"] == "better"
    assert not watch.maybe_promote({**evidence, "read_to_end": False})
    assert watch.maybe_promote(evidence) and registry.current_version() == "v0002"


def test_the_outcome_reader_keeps_what_the_evidence_filters_on_and_how_far_labels_are_final() -> None:
    import orjson

    from churnstream.streams.retrain import ShadowOutcomes

    found = ShadowOutcomes()
    base = {"prediction_id": "p", "customer_id": "c1", "labeled_at": "1998-03-01T00:00:00Z", "label": 1}
    plain = {**base, "as_of": "1998-01-01T00:00:00Z", "batch_probability": 0.5, "model_version": "v1"}
    shadowed = {**plain, "shadow_model_version": "v2", "shadow_probability": 0.25, "customer_value": 12.5}
    assert found.add(orjson.dumps({**shadowed, "source": "order"}), 3)
    assert not found.add(orjson.dumps({**plain, "source": "inactivity"}), 3)  # no shadow: only final
    assert not found.add(orjson.dumps({**plain, "as_of": "1998-02-01T00:00:00Z", "source": "order"}), 3)
    assert not found.add(b"not json") and not found.add(orjson.dumps({**plain, "as_of": "soon"}))
    assert found.final == {3: 883_612_800_000}  # 1998-01-01: partition 3's "churned" labels reach it
    (row,) = found.rows
    assert (row["model_version"], row["customer_id"], row["customer_value"], row["partition"]) == (
        "v1",
        "c1",
        12.5,
        3,
    )


def test_a_partition_behind_the_others_counts_only_what_its_own_labels_settled() -> None:
    """One label clock over all partitions (the latest labeled_at) ran ahead of a partition whose worker's
    event time an idle partition held back: its young predictions had their "stayed" labels but not
    their "churned" ones yet."""
    rows = _outcomes(1000, shadow_better=True)
    for i, r in enumerate(rows):
        r["partition"] = i % 2
    found = evidence_from_outcomes(
        rows, shadow_version="v0002", final_until={0: rows[-1]["as_of"], 1: rows[499]["as_of"]}
    )
    assert found["left_out"] == {"labels not all known yet": 250}  # partition 1's rows after row 499
    assert found["final_until"] == {"0": rows[-1]["as_of"], "1": rows[499]["as_of"]}


def test_a_worse_shadow_stays_until_the_outcomes_are_read_to_their_end(tmp_path: Path) -> None:
    registry = _registry(tmp_path)
    registry.shadow("v0002")
    rows = _outcomes(1500, shadow_better=False)

    class HalfRead(LoopWatch):
        def outcomes(self) -> tuple[list[dict[str, Any]], dict[int, int], bool]:
            return rows, {0: rows[-1]["as_of"]}, False

    watch = HalfRead(Settings(model_dir=tmp_path, retrain_on_advice=1), start_retrain=lambda until: None)
    assert watch.on_report("retrain")["cumulative"]["verdict"] == "worse"  # type: ignore[index]
    assert registry.shadow_version() == "v0002"


class _Message:
    def __init__(self, partition: int, offset: int, value: bytes) -> None:
        self._p, self._o, self._v = partition, offset, value

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def value(self) -> bytes:
        return self._v

    def error(self) -> None:
        return None


class _Consumer:
    """A consumer of churn_outcomes as the follower uses one: assign, poll."""

    def __init__(self, logs: dict[int, list[bytes]]) -> None:
        self.logs = logs
        self.at: dict[int, int] = {}

    def assign(self, partitions: list[Any]) -> None:
        self.at = {tp.partition: tp.offset for tp in partitions}

    def poll(self, timeout: float) -> _Message | None:
        for p, at in sorted(self.at.items()):
            if at < len(self.logs[p]):
                self.at[p] = at + 1
                return _Message(p, at, self.logs[p][at])
        return None

    def close(self) -> None: ...


def test_the_follower_reads_to_the_end_and_follows_partitions_added_later(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import orjson

    import churnstream.streams.kafka as kafka
    from churnstream.streams.retrain import OutcomeFollower

    message = orjson.dumps(outcome_messages(_outcomes(1, shadow_better=True))[0])
    logs = {0: [message] * 3}
    consumer = _Consumer(logs)
    monkeypatch.setattr(kafka, "make_consumer", lambda *a, **k: consumer)
    monkeypatch.setattr(kafka, "end_offsets", lambda c, topic: {p: (0, len(m)) for p, m in logs.items()})
    follower = OutcomeFollower(Settings())
    assert follower.poll() == 3 and follower.caught_up
    assert follower.poll(max_seconds=0.5) == 0 and follower.caught_up  # nothing new: caught up at once
    logs[1] = [message] * 2  # a partition added to the topic
    logs[0].append(message)
    assert follower.poll() == 3 and follower.caught_up and len(follower.rows) == 6


def test_a_rollback_says_what_the_recorded_evidence_said_of_the_two_models(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """promote refuses a model the evidence calls worse; rollback, the operator's emergency brake, goes
    ahead, but it said nothing of the evidence it undid."""
    from churnstream.models.registry import cli as registry_cli

    registry = _registry(tmp_path)
    registry.shadow("v0002")
    rows = _outcomes(1500, shadow_better=True)
    LoopWatch(Settings(model_dir=tmp_path, auto_promote_margin=0.0), outcomes=lambda: rows).on_report("none")
    assert registry.current_version() == "v0002"
    args = argparse.Namespace(action="rollback", version=None, model_dir=str(tmp_path))
    assert registry_cli(args, Settings(model_dir=tmp_path)) == 0
    out = capsys.readouterr().out
    assert "current model is now v0001" in out
    assert "compared v0002 (in shadow) with v0001: better on" in out, out
