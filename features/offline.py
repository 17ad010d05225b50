"""The offline builder: point-in-time feature tables from event files, by the same code the store runs.

Events are replayed in event-time order through :func:`churnstream.features.state.apply_event`; at each cutoff
t every known customer's features come from :func:`churnstream.features.definitions.features_as_of` — exactly
what the online store would serve as of t. Labels come from the scoring worker's own label rule
(:mod:`churnstream.features.labels`): churned = 1 when the customer has no completed order in
(t, t + H], 0 when one arrives, a ``churn_labels`` event answering first gives its own value; rows whose
horizon runs past the end of the data are left out (censored).
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from churnstream.errors import ChurnstreamError, EventError, ProcessingError
from churnstream.events import Event, LabelEvent, parse_event
from churnstream.features.definitions import FEATURE_NAMES, features_as_of
from churnstream.features.labels import AnswerLog
from churnstream.features.state import FeatureState, apply_event, new_state
from churnstream.features.sweep import crossed_milestone, silence_windows

EVENT_FILES = ("orders", "support_tickets", "customer_profiles", "churn_labels")


@dataclass(slots=True)
class EventLog:
    """Validated events of a directory, sorted by event time, and what was rejected."""

    events: list[Event]
    invalid: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def start(self) -> int:
        return self.events[0].timestamp

    @property
    def end(self) -> int:
        return self.events[-1].timestamp


def read_events(
    directory: str | Path, *, until: int | None = None, max_future_skew_hours: float = 24.0
) -> EventLog:
    """Read ``orders.jsonl``, ``support_tickets.jsonl``, ... of ``directory`` (those present)."""
    root = Path(directory)
    files = [(kind, root / f"{kind}.jsonl") for kind in EVENT_FILES if (root / f"{kind}.jsonl").exists()]
    if not files:
        raise ChurnstreamError(f"no event files ({', '.join(k + '.jsonl' for k in EVENT_FILES)}) in {root}")
    log = EventLog(events=[])
    for kind, path in files:
        with path.open("rb") as handle:
            for line_no, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                    event = parse_event(kind, obj, max_future_skew_hours=max_future_skew_hours)
                except (ValueError, EventError) as exc:
                    log.invalid += 1
                    if len(log.errors) < 20:
                        log.errors.append(f"{path.name}:{line_no}: {exc}")
                    continue
                if until is None or event.timestamp < until:
                    log.events.append(event)
    if not log.events:
        raise ChurnstreamError(f"no valid events in {root}")
    log.events.sort(key=lambda e: (e.timestamp, e.event_id))
    return log


def replay(events: Iterable[Event], *, lateness_ms: int) -> dict[str, FeatureState]:
    """Per-customer states after applying ``events`` (any order within the allowed lateness)."""
    states: dict[str, FeatureState] = {}
    for event in events:
        _apply(states, event, lateness_ms)
    return states


def _apply(states: dict[str, FeatureState], event: Event, lateness_ms: int) -> bool:
    """Apply a feature event to its customer's state (made when new); False for a label, which has none."""
    if isinstance(event, LabelEvent):
        return False
    state = states.get(event.customer_id)
    if state is None:
        state = states[event.customer_id] = new_state()
    apply_customer_event(state, event, lateness_ms=lateness_ms)
    return True


def apply_customer_event(state: FeatureState, event: Event, *, lateness_ms: int) -> None:
    """:func:`apply_event`, skipping what the online store would dead-letter (a reused ``event_id`` with
    other content), so a log with such events replays as the workers saw it."""
    with contextlib.suppress(ProcessingError):
        apply_event(state, event, lateness_ms=lateness_ms)


def snapshot(
    events: Iterable[Event], t: int, *, lateness_ms: int
) -> dict[str, dict[str, float | int | None]]:
    """Features of every customer with an event <= ``t``, as of ``t``."""
    states = replay((e for e in events if e.timestamp <= t), lateness_ms=lateness_ms)
    return {cid: features_as_of(state, t) for cid, state in states.items()}


def training_rows(
    events: Sequence[Event],
    cutoffs: Sequence[int],
    *,
    horizon_ms: int,
    lateness_ms: int,
    active_within_ms: int | None = None,
    progress: bool = True,
) -> Iterator[dict[str, Any]]:
    """Yield one labelled row per (customer, cutoff): features as of the cutoff plus ``label``.

    ``events`` must be sorted by event time. ``active_within_ms`` keeps only customers with a
    completed order or any event within that span before the cutoff.
    """
    answers = AnswerLog.from_events(events)
    states: dict[str, FeatureState] = {}
    i = 0
    bar = _progress(len(cutoffs), "cutoffs") if progress else None
    for t in sorted(cutoffs):
        while i < len(events) and events[i].timestamp <= t:
            _apply(states, events[i], lateness_ms)
            i += 1
        for cid, state in states.items():
            last = state["max"]  # never None: a customer's first event is always applied
            if active_within_ms is not None and last is not None and last < t - active_within_ms:
                continue
            known = answers.label(cid, t, horizon_ms=horizon_ms)
            if known is None:
                continue
            row: dict[str, Any] = {"customer_id": cid, "as_of": t}
            row.update(features_as_of(state, t))
            row["label"], row["label_source"] = known.label, known.source
            yield row
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()


def training_table(
    events: Sequence[Event],
    cutoffs: Sequence[int],
    *,
    horizon_ms: int,
    lateness_ms: int,
    active_within_ms: int | None = None,
    progress: bool = True,
) -> Any:
    """:func:`training_rows` as a pandas DataFrame with columns customer_id, as_of, features, label."""
    import pandas as pd

    rows = list(
        training_rows(
            events,
            cutoffs,
            horizon_ms=horizon_ms,
            lateness_ms=lateness_ms,
            active_within_ms=active_within_ms,
            progress=progress,
        )
    )
    columns = ["customer_id", "as_of", *FEATURE_NAMES, "label", "label_source"]
    return pd.DataFrame(rows, columns=columns)


def _progress(total: int, unit: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, file=sys.stderr, disable=not sys.stderr.isatty())


def serving_rows(
    events: Sequence[Event],
    start: int,
    end: int,
    *,
    lateness_ms: int,
    milestones_ms: Sequence[int],
    tick_ms: int,
) -> Iterator[dict[str, Any]]:
    """The rows a scoring worker would have scored in [``start``, ``end``): one per event, as of its time,
    and one per silent customer whose silence reached a milestone, as of the sweep tick.

    A drift reference drawn from these rows matches what the monitor will see from the scorer; rows at
    fixed cutoffs over every customer (the training table) do not — most of those are long gone.
    ``events`` must be sorted by event time.
    """
    states: dict[str, FeatureState] = {}
    last_seen: dict[str, int] = {}
    next_tick = (start // tick_ms + 1) * tick_ms
    previous = next_tick - tick_ms
    for event in [*events, None]:
        ts = event.timestamp if event is not None else end
        while next_tick <= min(ts, end):
            windows = silence_windows(previous, next_tick, milestones_ms)  # the scorer's sweep rule
            for cid, seen in last_seen.items():
                if crossed_milestone(seen, windows):
                    row: dict[str, Any] = {"customer_id": cid, "as_of": next_tick, "trigger": "sweep"}
                    row.update(features_as_of(states[cid], next_tick))
                    yield row
            previous, next_tick = next_tick, next_tick + tick_ms
        if event is None or ts >= end:
            break
        if not _apply(states, event, lateness_ms):
            continue
        last_seen[event.customer_id] = max(last_seen.get(event.customer_id, ts), ts)
        if ts >= start:
            row = {"customer_id": event.customer_id, "as_of": ts, "trigger": "event"}
            row.update(features_as_of(states[event.customer_id], ts))
            yield row
