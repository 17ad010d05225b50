"""A quiet outbox (``churnstream rebuild``) drops a unit's outputs, but not the copies of keyless input
messages sent to their customer's partition: without them a rebuild would leave those events in no state."""

from __future__ import annotations

from churnstream.settings import Settings
from churnstream.streams.outbox import Outbox


def test_a_quiet_outbox_drops_outputs_and_keeps_input_copies() -> None:
    box = Outbox(settings=Settings(kafka_bootstrap="127.0.0.1:1"), quiet=True)
    box.emit("churn_predictions", b"c1", b"{}")
    box.emit("orders", b"c1", b'{"event_id": "e1"}', partition=2, input_copy=True)
    assert box._queued == [("orders", b"c1", b'{"event_id": "e1"}', 2)]
    loud = Outbox(settings=Settings(kafka_bootstrap="127.0.0.1:1"))
    loud.emit("churn_predictions", "c1", {"p": 1})
    assert loud._queued == [("churn_predictions", "c1", b'{"p":1}', None)]
