"""The simulator: deterministic, contract-valid, learnable, and drifting exactly as documented."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from churnstream.cli import main
from churnstream.errors import ConfigError
from churnstream.events import Event, format_time, parse_event, parse_time
from churnstream.features.definitions import FEATURE_NAMES, features_as_of
from churnstream.features.state import apply_event, new_state
from churnstream.models.evaluation import roc_auc
from churnstream.sources._output import rfc3339_seconds
from churnstream.sources.simulate import DRIFT_CHANGES, SimulationConfig, simulate

DAY_MS = 86_400_000
START = parse_time("2024-01-01T00:00:00Z")
EVENT_FILES = ("orders", "support_tickets", "customer_profiles")
ALL_FILES = (*(f"{kind}.jsonl" for kind in EVENT_FILES), "truth.jsonl", "manifest.json")


def _run(directory: Path, **kwargs: Any) -> Path:
    config = SimulationConfig(start_ms=START, **kwargs)
    simulate(config, directory, progress_bar=False)
    return directory


def _records(directory: Path, name: str) -> Iterator[dict[str, Any]]:
    with (directory / name).open(encoding="utf-8") as handle:
        for line in handle:
            yield json.loads(line)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _run(tmp_path_factory.mktemp("world"), customers=3000, days=240, seed=3)


@pytest.fixture(scope="module")
def world_events(world: Path) -> dict[str, list[tuple[dict[str, Any], Event]]]:
    """Every record of the world's event files with its validated event (parsed once per module)."""
    return {
        kind: [
            (obj, parse_event(kind, obj, key=obj["customer_id"])) for obj in _records(world, f"{kind}.jsonl")
        ]
        for kind in EVENT_FILES
    }


@pytest.fixture(scope="module")
def drift_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    plain = _run(tmp_path_factory.mktemp("plain"), customers=3000, days=240, seed=5)
    drifted = _run(tmp_path_factory.mktemp("drifted"), customers=3000, days=240, seed=5, drift_at=120)
    return plain, drifted


def test_same_seed_gives_identical_bytes_and_another_seed_does_not(tmp_path: Path) -> None:
    a = _run(tmp_path / "a", customers=300, days=60, seed=11)
    b = _run(tmp_path / "b", customers=300, days=60, seed=11)
    c = _run(tmp_path / "c", customers=300, days=60, seed=12)
    for name in ALL_FILES:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    for name in ("orders.jsonl", "support_tickets.jsonl", "truth.jsonl"):
        assert (a / name).read_bytes() != (c / name).read_bytes(), name


def test_every_record_follows_the_contract(
    world: Path, world_events: dict[str, list[tuple[dict[str, Any], Event]]]
) -> None:
    manifest = json.loads((world / "manifest.json").read_text())
    counts = {}
    for kind in EVENT_FILES:
        seen: set[str] = set()
        last = 0
        n = 0
        for obj, event in world_events[kind]:
            assert event.event_id not in seen
            seen.add(event.event_id)
            assert obj["timestamp"] == format_time(event.timestamp)
            assert START <= event.timestamp < START + 240 * DAY_MS
            assert event.timestamp >= last, "files are sorted by event time"
            last = event.timestamp
            n += 1
        counts[kind] = n
    assert counts["orders"] == manifest["counts"]["orders"] > 10_000
    assert counts["support_tickets"] == manifest["counts"]["ticket_events"] > 1_000
    assert counts["customer_profiles"] == 3000

    statuses = [obj["status"] for obj, _ in world_events["orders"]]
    shares = {s: statuses.count(s) / len(statuses) for s in ("completed", "returned", "cancelled")}
    assert 0.85 < shares["completed"] < 0.95 and 0.02 < shares["returned"] < 0.08
    assert 0.02 < shares["cancelled"] < 0.06
    tickets = [obj for obj, _ in world_events["support_tickets"]]
    assert any(t["resolution_time_hours"] is None for t in tickets)
    assert {t["satisfaction_score"] for t in tickets} >= {None, 1, 2, 3, 4, 5}
    profile = world_events["customer_profiles"][0][0]
    assert set(profile) >= {"signup_date", "age", "city", "email_verified", "phone_verified"}


def test_truth_matches_the_events(world: Path) -> None:
    truth = {t["customer_id"]: t for t in _records(world, "truth.jsonl")}
    assert len(truth) == 3000
    dropped = {cid: parse_time(t["dropout"]) for cid, t in truth.items() if t["dropout"] is not None}
    assert 0.1 < len(dropped) / len(truth) < 0.6
    for order in _records(world, "orders.jsonl"):
        cid = order["customer_id"]
        assert parse_time(order["timestamp"]) >= parse_time(truth[cid]["signup"])
        if cid in dropped:
            assert parse_time(order["timestamp"]) < dropped[cid], "no orders after dropping out"


def test_rfc3339_seconds_matches_format_time() -> None:
    ms = np.random.default_rng(0).integers(0, 4_000_000_000, 2000) * 1000
    assert rfc3339_seconds(ms) == [format_time(int(m)) for m in ms]


def _feature_table(events: list[Event], cutoff: int, horizon_days: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Offline features as of ``cutoff`` (events <= cutoff) and the contract's label for every customer."""
    events = sorted(events, key=lambda e: (e.timestamp, e.event_id))
    states: dict[str, dict[str, Any]] = {}
    bought: set[str] = set()
    for event in events:
        if event.timestamp <= cutoff:
            state = states.setdefault(event.customer_id, new_state())
            apply_event(state, event, lateness_ms=7 * DAY_MS)
        elif (
            event.timestamp <= cutoff + horizon_days * DAY_MS
            and event.kind == "orders"
            and event.status == "completed"  # type: ignore[union-attr]
        ):
            bought.add(event.customer_id)
    customers = sorted(states)
    rows = [features_as_of(states[cid], cutoff) for cid in customers]
    x = np.array([[np.nan if row[f] is None else row[f] for f in FEATURE_NAMES] for row in rows], float)
    y = np.array([0 if cid in bought else 1 for cid in customers])
    return x, y


def _holdout_auc(x: np.ndarray, y: np.ndarray, *, l2: float = 1e-3) -> float:
    """Fit a ridge logistic regression (Newton steps) on the first half, ROC-AUC on the second half.

    Plain numpy, so the test does not pay for importing scikit-learn.
    """
    x = np.nan_to_num(x, nan=-1.0)
    half = len(y) // 2
    mean, std = x[:half].mean(axis=0), x[:half].std(axis=0) + 1e-9
    design = np.column_stack([np.ones(len(y)), (x - mean) / std])
    train, target = design[:half], y[:half]
    w = np.zeros(design.shape[1])
    penalty = l2 * len(target) * np.eye(len(w))
    penalty[0, 0] = 0.0
    for _ in range(30):
        p = 1.0 / (1.0 + np.exp(-(train @ w)))
        gradient = train.T @ (p - target) + penalty @ w
        hessian = (train * (p * (1 - p))[:, None]).T @ train + penalty
        w -= np.linalg.solve(hessian, gradient)
    auc = roc_auc(y[half:], design[half:] @ w)
    assert auc is not None
    return auc


def test_churn_is_learnable_from_the_contract_features(
    world_events: dict[str, list[tuple[dict[str, Any], Event]]],
) -> None:
    # Measured over seeds 3..7: AUC 0.83..0.87 on all features, 0.65..0.67 on the ticket features alone.
    events = [event for records in world_events.values() for _, event in records]
    x, y = _feature_table(events, START + 150 * DAY_MS)
    assert len(y) > 2000 and 0.3 < y.mean() < 0.7
    assert _holdout_auc(x, y) >= 0.78
    ticket_features = [
        FEATURE_NAMES.index(name)
        for name in ("tickets_total", "tickets_90d", "negative_tickets_total", "avg_resolution_hours")
    ]
    assert _holdout_auc(x[:, ticket_features], y) >= 0.6


def _before_after(directory: Path, day: int) -> dict[str, tuple[float, float]]:
    """Before and after ``day``: mean order amount, mean items, tickets opened relative to what the
    customers' own ticket rates predict for their time alive (1 = as predicted; this removes the
    survivorship of calm customers), and the share of badly rated tickets followed by the customer's
    dropout within 30 days."""
    cut = START + day * DAY_MS
    end = START + 240 * DAY_MS
    truth = {t["customer_id"]: t for t in _records(directory, "truth.jsonl")}
    leave = {cid: parse_time(t["dropout"]) if t["dropout"] else None for cid, t in truth.items()}
    expected = [0.0, 0.0]
    for cid, t in truth.items():
        signup = parse_time(t["signup"])
        until = leave[cid] or end
        rate = t["ticket_rate_per_day"] / DAY_MS
        expected[0] += rate * max(0, min(until, cut) - signup)
        expected[1] += rate * max(0, until - max(signup, cut))
    amounts: tuple[list[float], list[float]] = ([], [])
    items: tuple[list[int], list[int]] = ([], [])
    for order in _records(directory, "orders.jsonl"):
        after = parse_time(order["timestamp"]) >= cut
        amounts[after].append(order["amount"])
        items[after].append(order["items"])
    opened = [0, 0]
    bad = [[0, 0], [0, 0]]
    good = [[0, 0], [0, 0]]
    for ticket in _records(directory, "support_tickets.jsonl"):
        ts = parse_time(ticket["timestamp"])
        gone = leave[ticket["customer_id"]]
        if gone is not None and ts >= gone:
            continue  # a last complaint after leaving
        if ticket["resolution_time_hours"] is None:
            opened[ts >= cut] += 1
        elif START + 30 * DAY_MS <= ts <= end - 30 * DAY_MS and ticket["satisfaction_score"] is not None:
            fast = ticket["resolution_time_hours"] <= 48
            tally = (
                bad
                if ticket["satisfaction_score"] <= 2
                else good
                if ticket["satisfaction_score"] >= 4 and fast
                else None
            )
            if tally is not None:
                tally[ts >= cut][0] += 1
                tally[ts >= cut][1] += gone is not None and gone <= ts + 30 * DAY_MS
    return {
        "amount": (float(np.mean(amounts[0])), float(np.mean(amounts[1]))),
        "items": (float(np.mean(items[0])), float(np.mean(items[1]))),
        "ticket_rate": (opened[0] / expected[0], opened[1] / expected[1]),
        "dropout_after_bad_ticket": (bad[0][1] / bad[0][0], bad[1][1] / bad[1][0]),
        "dropout_after_good_ticket": (good[0][1] / good[0][0], good[1][1] / good[1][0]),
    }


def test_drift_changes_what_it_claims_and_nothing_without_it(drift_pair: tuple[Path, Path]) -> None:
    plain, drifted = (_before_after(d, 120) for d in drift_pair)

    def ratio(stats: dict[str, tuple[float, float]], name: str) -> float:
        before, after = stats[name]
        return after / before

    # Without drift the world is stationary.
    assert 0.93 < ratio(plain, "amount") < 1.07
    assert 0.93 < ratio(plain, "items") < 1.07
    assert 0.9 < plain["ticket_rate"][0] < 1.1 and 0.9 < plain["ticket_rate"][1] < 1.1
    assert 0.6 < ratio(plain, "dropout_after_bad_ticket") < 1.5
    # With drift: amounts x1.4 (same items), tickets x2 as often, and bad tickets drive far fewer dropouts.
    assert ratio(drifted, "amount") / ratio(plain, "amount") == pytest.approx(
        DRIFT_CHANGES["order_amount_factor"], rel=0.07
    )
    assert 0.93 < ratio(drifted, "items") < 1.07
    assert 0.9 < drifted["ticket_rate"][0] < 1.1
    assert drifted["ticket_rate"][1] == pytest.approx(DRIFT_CHANGES["ticket_rate_factor"], rel=0.1)
    assert drifted["dropout_after_bad_ticket"][1] < 0.65 * plain["dropout_after_bad_ticket"][1]


def test_drift_leaves_everything_before_the_drift_day_untouched(drift_pair: tuple[Path, Path]) -> None:
    plain, drifted = drift_pair
    cut = format_time(START + 120 * DAY_MS)
    for kind in EVENT_FILES:
        a = (plain / f"{kind}.jsonl").read_text().splitlines()
        b = (drifted / f"{kind}.jsonl").read_text().splitlines()
        before = [line for line in a if json.loads(line)["timestamp"] < cut]
        assert before and b[: len(before)] == before, kind
        assert json.loads(b[len(before)])["timestamp"] >= cut
    manifest = json.loads((drifted / "manifest.json").read_text())
    assert manifest["drift"]["day"] == 120
    assert manifest["drift"]["at"] == cut
    assert manifest["drift"]["changes"] == DRIFT_CHANGES
    assert json.loads((plain / "manifest.json").read_text())["drift"] is None


def test_cli_writes_files_and_reports_speed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sim"
    code = main(["simulate", "--customers", "200", "--days", "30", "--seed", "1", "--out", str(out)])
    assert code == 0
    assert "events/s" in capsys.readouterr().out
    assert {p.name for p in out.iterdir()} == set(ALL_FILES)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["args"] == {
        "customers": 200,
        "days": 30,
        "seed": 1,
        "start": "2024-01-01T00:00:00Z",
        "drift_at": None,
        "drift_kind": "both",
        "link_factor": None,
    }


def test_cli_refuses_a_period_in_the_future(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["simulate", "--customers", "10", "--days", "30", "--seed", "1", "--out", str(tmp_path)]
    assert main([*argv, "--start", "2999-01-01T00:00:00Z"]) == 2
    assert "wall clock" in capsys.readouterr().err


@pytest.mark.parametrize(
    "kwargs",
    [{"customers": 0}, {"days": 0}, {"seed": -1}, {"drift_at": 30}, {"drift_at": -1}],
)
def test_bad_configuration_is_a_config_error(kwargs: dict[str, int], tmp_path: Path) -> None:
    args = {"customers": 10, "days": 30, "seed": 1, **kwargs}
    with pytest.raises(ConfigError):
        _run(tmp_path, **args)


def test_drift_kinds_shift_the_inputs_alone_or_the_link_alone(
    tmp_path_factory: pytest.TempPathFactory, drift_pair: tuple[Path, Path]
) -> None:
    def world(kind: str) -> Path:
        return _run(
            tmp_path_factory.mktemp(kind), customers=3000, days=240, seed=5, drift_at=120, drift_kind=kind
        )

    plain = _before_after(drift_pair[0], 120)
    inputs, link = _before_after(world("inputs"), 120), _before_after(world("link"), 120)

    def ratio(stats: dict[str, tuple[float, float]], name: str) -> float:
        before, after = stats[name]
        return after / before

    # inputs: amounts x1.4 and tickets x2, the link untouched
    assert ratio(inputs, "amount") / ratio(plain, "amount") == pytest.approx(1.4, rel=0.07)
    assert inputs["ticket_rate"][1] == pytest.approx(2.0, rel=0.1)
    assert inputs["dropout_after_bad_ticket"][1] > 0.75 * plain["dropout_after_bad_ticket"][1]
    # link: amounts and ticket rates as without drift, fewer dropouts after a bad ticket
    assert ratio(link, "amount") / ratio(plain, "amount") == pytest.approx(1.0, abs=0.07)
    assert 0.9 < link["ticket_rate"][1] < 1.1
    assert link["dropout_after_bad_ticket"][1] < 0.8 * plain["dropout_after_bad_ticket"][1]
    # ... and bad tickets say far less about who leaves: the gap to good ones shrinks
    gap = [link["dropout_after_bad_ticket"][i] - link["dropout_after_good_ticket"][i] for i in (0, 1)]
    assert gap[0] > 0.4 and gap[1] < 0.5 * gap[0]  # 0.67, then 0.28
    manifest = json.loads((tmp_path_factory.getbasetemp() / "link0" / "manifest.json").read_text())
    assert manifest["drift"]["kind"] == "link"
    assert manifest["drift"]["changes"] == {
        "ticket_dropout_link_factor": 0.25,
        "hidden_dropout_link_share": 0.75,
    }
    # the rest of the link's hazard falls on others, unselected by what they lived through so far: as
    # many or more leave after the cut as without drift (the weakened link alone would keep many)
    cut = format_time(START + 120 * DAY_MS)

    def left_after_cut(directory: Path) -> int:
        return sum(
            t["dropout"] is not None and t["dropout"] >= cut for t in _records(directory, "truth.jsonl")
        )

    link_dir = tmp_path_factory.getbasetemp() / "link0"
    assert 0.9 < left_after_cut(link_dir) / left_after_cut(drift_pair[0]) < 1.5
    with pytest.raises(ConfigError, match="--drift-kind"):
        SimulationConfig(customers=1, days=2, seed=1, start_ms=START, drift_at=1, drift_kind="x").check(
            wall_clock_ms=START + 10 * DAY_MS
        )


def test_the_loyalty_shift_makes_frequent_buyers_leave_and_nothing_else(tmp_path: Path) -> None:
    plain = _run(tmp_path / "plain", customers=3000, days=120, seed=9)
    loyal = _run(tmp_path / "loyal", customers=3000, days=120, seed=9, drift_at=60, drift_kind="loyalty")
    cut = START + 60 * DAY_MS

    def left_after_cut(directory: Path) -> dict[bool, float]:
        gone: dict[bool, list[bool]] = {True: [], False: []}
        for t in _records(directory, "truth.jsonl"):
            if t["dropout"] is not None and parse_time(t["dropout"]) < cut:
                continue
            gone[t["order_rate_per_day"] > 1 / 14].append(t["dropout"] is not None)
        return {frequent: float(np.mean(flags)) for frequent, flags in gone.items()}

    before, after = left_after_cut(plain), left_after_cut(loyal)
    assert after[True] > 0.5 and before[True] < 0.45  # frequent buyers now leave
    assert after[True] > after[False] + 0.2
    # the inputs are drawn alike: every event before the cut is identical
    for kind in EVENT_FILES:
        a = (plain / f"{kind}.jsonl").read_text().splitlines()
        b = (loyal / f"{kind}.jsonl").read_text().splitlines()
        early = [line for line in a if json.loads(line)["timestamp"] < format_time(cut)]
        assert early and b[: len(early)] == early
    manifest = json.loads((loyal / "manifest.json").read_text())
    assert manifest["drift"]["kind"] == "loyalty" and manifest["drift"]["changes"] == {
        "order_rate_dropout_link": 0.5
    }
