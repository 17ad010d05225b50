"""Deterministic ids of the outputs: the same input gives the same prediction and alert ids.

A replay after a crash re-emits what it emitted before with the same ids, so consumers deduplicate by
id (the exactly-once effect of :mod:`churnstream.streams.scorer`). Every id is a UUID version 5 in
:data:`ID_NAMESPACE`.

>>> prediction_id_for_event("e1") == prediction_id_for_event("e1") != prediction_id_for_event("e2")
True
"""

from __future__ import annotations

import hashlib
import uuid

ID_NAMESPACE = uuid.UUID("6f1c2a3e-7d4b-4c1a-9e8f-3b2d1c0a9f8e")
_NAMESPACE_BYTES = ID_NAMESPACE.bytes


def _uuid5(name: str) -> str:
    """``str(uuid.uuid5(ID_NAMESPACE, name))``, without building UUID objects (it runs per message).

    >>> _uuid5("event:e1") == str(uuid.uuid5(ID_NAMESPACE, "event:e1"))
    True
    """
    h = bytearray(hashlib.sha1(_NAMESPACE_BYTES + name.encode()).digest()[:16])
    h[6] = (h[6] & 0x0F) | 0x50
    h[8] = (h[8] & 0x3F) | 0x80
    x = h.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


def event_fingerprint(event_id: str) -> str:
    """A short fingerprint of an event id, kept where the event id itself should not be (the learner
    history, which ``churnstream forget`` leaves: it says which event reached a tick, not whose).

    >>> event_fingerprint("e1"), len(event_fingerprint("another event"))
    ('1b5d5e51f54f0f04', 16)
    """
    return hashlib.blake2b(event_id.encode(), digest_size=8).hexdigest()


def prediction_id_for_event(event_id: str) -> str:
    """The id of the prediction an input event triggers.

    >>> prediction_id_for_event("e1") == str(uuid.uuid5(ID_NAMESPACE, "event:e1"))
    True
    """
    return _uuid5(f"event:{event_id}")


def prediction_id_for_sweep(customer_id: str, tick: int) -> str:
    """The id of a silent customer's prediction at a sweep tick (event time, ms).

    >>> prediction_id_for_sweep("c1", 86_400_000) == str(uuid.uuid5(ID_NAMESPACE, "sweep:c1:86400000"))
    True
    """
    return _uuid5(f"sweep:{customer_id}:{tick}")


def alert_id_for(prediction_id: str) -> str:
    """The id of the alert a prediction raises (at most one per prediction).

    >>> alert_id_for("p1") == str(uuid.uuid5(ID_NAMESPACE, "alert:p1")) != prediction_id_for_event("p1")
    True
    """
    return _uuid5(f"alert:{prediction_id}")


__all__ = ["ID_NAMESPACE", "alert_id_for", "prediction_id_for_event", "prediction_id_for_sweep"]
