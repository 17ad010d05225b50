"""Output ids are UUID 5 of what the output answers: the same input gives the same id after a replay."""

from __future__ import annotations

import uuid

from churnstream.ids import ID_NAMESPACE, alert_id_for, prediction_id_for_event, prediction_id_for_sweep


def test_ids_are_uuid5_in_the_churnstream_namespace() -> None:
    assert prediction_id_for_event("e-1") == str(uuid.uuid5(ID_NAMESPACE, "event:e-1"))
    assert prediction_id_for_sweep("C7", 1_700_000_000_000) == str(
        uuid.uuid5(ID_NAMESPACE, "sweep:C7:1700000000000")
    )
    assert alert_id_for("p") == str(uuid.uuid5(ID_NAMESPACE, "alert:p"))
    assert uuid.UUID(alert_id_for("p")).version == 5


def test_ids_of_different_things_never_collide() -> None:
    ids = {
        prediction_id_for_event("x"),
        prediction_id_for_sweep("x", 0),
        alert_id_for("x"),
        prediction_id_for_event("y"),
        prediction_id_for_sweep("x", 1),
        prediction_id_for_sweep("y", 0),
    }
    assert len(ids) == 6


def test_the_namespace_is_the_one_published_ids_were_made_with() -> None:
    # changing it would give every replayed output a new id: consumers would see duplicates
    assert str(ID_NAMESPACE) == "6f1c2a3e-7d4b-4c1a-9e8f-3b2d1c0a9f8e"
    assert prediction_id_for_event("e1") == "0792baae-87c1-5b55-8857-42d7d7cc888b"
