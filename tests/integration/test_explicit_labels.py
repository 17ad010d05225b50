"""``churn_labels`` through real Kafka and Redis: an explicit label overrides the inactivity rule.

The contract: a prediction as of t is labelled by the first answer in (t, t + H]: a completed order (0),
or a ``churn_labels`` event (its own ``churned``), the label first at the same instant; with neither,
1 at t + H (``inactivity``). Labels are published beside a simulated business's events: some say
"churned" an hour before the customer's next order (that order must not relabel the predictions the label
answered), some "stayed" days after a customer's last order (the inactivity rule must not answer those).
Every outcome on the topic is checked against the rule computed here from the event log.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from bisect import bisect_right
from collections import defaultdict
from pathlib import Path

import orjson
import pytest

from churnstream.events import LabelEvent, OrderEvent, format_time, parse_time
from churnstream.features.offline import read_events
from churnstream.settings import DAY_MS, Settings, Topics
from churnstream.streams.scorer import build_scorer
from tests.integration.conftest import (
    committed_everything,
    consume_all,
    event_time_records,
    produce_records,
    simulate_world,
    wait_until,
)

HOUR = 3_600_000


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return simulate_world(tmp_path_factory.mktemp("labels"), customers=120, days=240, train_days=150, seed=8)


def _labels(events_dir: Path) -> list[LabelEvent]:
    """'churned' an hour before some customers' third order, 'stayed' ten days after others' last one."""
    completed: dict[str, list[int]] = defaultdict(list)
    for e in read_events(events_dir).events:
        if isinstance(e, OrderEvent) and e.status == "completed":
            completed[e.customer_id].append(e.timestamp)
    labels = []
    for i, (cid, times) in enumerate(sorted(completed.items())):
        times.sort()
        if i % 3 == 0 and len(times) >= 3:
            labels.append(LabelEvent(f"lab-churned-{cid}", cid, times[2] - HOUR, True))
        elif i % 3 == 1:
            labels.append(LabelEvent(f"lab-stayed-{cid}", cid, times[-1] + 10 * DAY_MS, False))
    return labels


def test_explicit_labels_answer_first_and_a_later_order_does_not_relabel(
    settings: Settings, topics: Topics, world: Path
) -> None:
    s = dataclasses.replace(settings, model_dir=world / "models", metrics_port=-1)
    events_dir = world / "events"
    labels = _labels(events_dir)
    assert sum(label.churned for label in labels) >= 10 and sum(not label.churned for label in labels) >= 10
    records = event_time_records(s, events_dir)
    records += [
        (label.timestamp, s.topics.churn_labels, label.customer_id, json.dumps(label.to_json()).encode())
        for label in labels
    ]
    records.sort()
    produce_records(s, records, as_they_happen=True)

    scorer = build_scorer(s)
    thread = threading.Thread(target=scorer.run, name="scorer", daemon=True)
    thread.start()
    try:
        wait_until(lambda: committed_everything(s, s.consumer_group), 300, "the scorer to commit every input")
    finally:
        scorer.stop()
        thread.join(timeout=60)
    assert not thread.is_alive(), "the scorer did not stop"

    # the rule, from the event log: every answer of each customer, in time order, a label first at a tie
    answers: dict[str, list[tuple[int, int, int, str]]] = defaultdict(list)
    for e in read_events(events_dir).events:
        if isinstance(e, OrderEvent) and e.status == "completed":
            answers[e.customer_id].append((e.timestamp, 1, 0, "order"))
    for label in labels:
        answers[label.customer_id].append((label.timestamp, 0, int(label.churned), "explicit"))
    for held in answers.values():
        held.sort()

    outcomes = [orjson.loads(m.value() or b"") for m in consume_all(s, s.topics.churn_outcomes)]
    assert len({o["prediction_id"] for o in outcomes}) == len(outcomes), "a prediction labelled twice"
    horizon = s.horizon_ms
    by_source: dict[str, int] = defaultdict(int)
    overridden = 0  # explicit 'churned' where the customer's next order would have said 0
    for o in outcomes:
        t = parse_time(o["as_of"])
        held = answers.get(o["customer_id"], [])
        i = bisect_right([a[0] for a in held], t)
        first = held[i] if i < len(held) and held[i][0] <= t + horizon else None
        if first is None:
            expected = (1, format_time(t + horizon), "inactivity")
        else:
            expected = (first[2], format_time(first[0]), first[3])
            later = held[i + 1] if i + 1 < len(held) else None
            overridden += (
                first[3] == "explicit" and first[2] == 1 and later is not None and later[3] == "order"
            )
        assert (o["label"], o["labeled_at"], o["source"]) == expected, o
        by_source[o["source"]] += 1
    # the labels answered, both ways, and overrode orders that came after them
    explicit = [o for o in outcomes if o["source"] == "explicit"]
    assert {o["label"] for o in explicit} == {0, 1}, by_source
    assert overridden >= 10 and by_source["order"] and by_source["inactivity"], (overridden, by_source)
