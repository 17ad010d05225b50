"""Per-customer state: what must be kept so that features as of any recent time t are exact.

The state keeps a log of the customer's recent events (sorted by event time, then event id) and folds
events older than the longest feature window plus the allowed lateness into running totals, so memory
stays bounded while features as of any t >= ``max_ts - lateness`` remain exact. Event ids of folded events
are kept a while longer so that a redelivered event is still recognised.

Money and hours are summed as integer micro-units, so totals do not depend on the order in which
events were applied or folded — the online store and the offline builder get identical numbers.

The state is a plain JSON-serialisable dict (the Redis store keeps it as one JSON value per customer),
typed as :class:`CustomerState`: the feature state (:class:`FeatureState`, what the feature functions
read and write) and, under ``"scoring"``, the scoring worker's own part (:class:`ScoringState`), so
both are written in one atomic step but neither reads the other's keys by accident.

>>> from churnstream.events import OrderEvent
>>> s = new_state()
>>> apply_event(s, OrderEvent(event_id="e1", customer_id="c", timestamp=1000, order_id="o", amount=2.5),
...             lateness_ms=0)
'applied'
>>> apply_event(s, OrderEvent(event_id="e1", customer_id="c", timestamp=1000, order_id="o", amount=2.5),
...             lateness_ms=0)
'duplicate'
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable
from typing import Any, Literal, NotRequired, TypedDict

import orjson

from churnstream.errors import ProcessingError
from churnstream.events import Event, OrderEvent, ProfileEvent, TicketEvent, format_time

DAY_MS = 86_400_000
LONGEST_WINDOW_MS = 90 * DAY_MS
MICRO = 1_000_000
STATUS_CODE = {"completed": 0, "returned": 1, "cancelled": 2}

# Log entries (lists, so they round-trip through JSON unchanged):
#   order:   [ts, event_id, amount_micros, status_code]
#   ticket:  [ts, event_id, ticket_id, resolution_micros | None, satisfaction | None]
#   profile: [ts, event_id, {field: value}]
O_TS, O_ID, O_AMOUNT, O_STATUS = range(4)
T_TS, T_ID, T_TICKET, T_RES, T_SAT = range(5)

FOLD_STEP_MS = DAY_MS
MAX_RETAINED_EVENTS = 5_000
"""The most events one customer's state holds in its logs (orders, tickets and profile events of the
retained history: the longest window plus the allowed lateness). An event beyond it is refused (its dead
letter names this), so that one customer cannot slow every other: each event's features read the whole
log, and a review's bot account at an order a second took a worker from ~660 to ~40 events/s, keeping a
customer of another partition waiting three minutes. Over a day's fold step, a log may briefly hold more
(events that have left the window, not yet folded)."""
APPLIED = "applied"
DUPLICATE = "duplicate"


class FoldedTotals(TypedDict):
    """Running totals of the events folded out of the log (see :func:`fold`)."""

    n: int  # completed orders
    s: int  # their amount, micros
    r: int  # returned orders
    fo: int | None  # first completed order time
    lo: int | None  # last completed order time
    gq: NotRequired[int]  # sum of squared gaps between consecutive completed orders, in whole minutes
    tn: int  # tickets
    tneg: int  # tickets with satisfaction <= 2
    rs: int  # resolution hours of tickets with one, micros
    rc: int  # tickets with a resolution
    op: int  # tickets still open (no resolution)
    ss: int  # satisfaction sum
    sc: int  # tickets with a satisfaction score
    lt: int | None  # last ticket time
    prof: dict[str, Any]  # folded profile fields


class FeatureState(TypedDict):
    """What the feature functions need of a customer: the recent log and the folded totals."""

    o: list[list[Any]]  # recent orders
    t: list[list[Any]]  # recent ticket events
    p: list[list[Any]]  # recent profile updates
    first: int | None  # earliest event time of any kind (including folded events)
    max: int | None  # latest event time applied
    fu: int | None  # folded-until: every event with ts < fu is folded into "f"
    f: FoldedTotals
    seen: dict[str, int]  # event_id -> ts, for folded events (dedup)
    ft: dict[str, list[Any]]  # ticket_id -> summary, for folded tickets (so an update does not count twice)


class ScoringState(TypedDict, total=False):
    """The scoring worker's part of a customer's state (see :mod:`churnstream.features.labels`)."""

    pend: list[list[Any]]  # pending predictions (see churnstream.features.labels)
    kept: list[int]  # as_of of the kept predictions still open
    lab: list[list[Any]]  # explicit labels remembered: [ts, 0 or 1, event_id] ([ts, 0 or 1] before ids)
    risk: str  # risk category of the latest prediction (high_risk: as the alert rule last saw it)
    alerted: int  # as_of of the latest alert
    au: int  # active until (last completed order + 365 d), as the alert budget counted the customer
    last: list[Any]  # the latest prediction, kept after its label (see churnstream.features.labels)


class CustomerState(FeatureState, total=False):
    """A customer's whole state, one JSON value in the store: features, and the scorer's part apart."""

    scoring: ScoringState


class Packed:
    """A value of a state kept as its JSON text: written into the state's JSON as it is, decoded only when
    read (:func:`unpacked`). The JSON written is the same as for the value itself.

    For what is written many times and read once. A pending prediction's feature vector is rewritten
    with its customer's state on every change, until its label comes, and read then. As a list, it is
    ~30 objects, cold in memory by the next write: serializing states was the worker's largest cost
    (18% of a replay in ``bench/bench_scorer.py``), half of it pending predictions.

    A numpy vector packs to the same JSON as its list (``tolist()``), without the ~30 float objects: the
    scorer packs the rows of its batch matrix as they are.

    >>> v = Packed([1.5, None, float("nan")])
    >>> dump_state({"v": v}), unpacked(v), unpacked([2.0])
    (b'{"v":[1.5,null,null]}', [1.5, None, None], [2.0])
    >>> import numpy as np
    >>> Packed(np.array([1.5, np.nan, 3.0])) == Packed([1.5, None, 3.0])
    True
    """

    __slots__ = ("raw",)

    def __init__(self, value: Any) -> None:
        self.raw = _kept(orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Packed) and other.raw == self.raw

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Packed({self.raw.decode()})"


def unpacked(value: Any) -> Any:
    """``value`` as decoded JSON: what a :class:`Packed` holds, anything else as it is (a state read back
    from the store holds plain values)."""
    return orjson.loads(value.raw) if isinstance(value, Packed) else value


def _packed_json(value: Any) -> orjson.Fragment:
    if isinstance(value, Packed):
        return orjson.Fragment(value.raw)
    raise TypeError(f"a customer state holds a {type(value).__name__}, which is not JSON")


def dump_state(state: CustomerState | dict[str, Any]) -> bytes:
    """A state as the JSON the stores keep (the one place states are serialized), in a buffer of its own
    size, not orjson's: the Redis store keeps what it wrote for every customer it caches (see
    :func:`_kept`)."""
    return dump_state_parts(state)[0]


def dump_state_parts(
    state: CustomerState | dict[str, Any], feature_part: bytes | memoryview | None = None
) -> tuple[bytes, int]:
    """A state's JSON, as :func:`dump_state`, and the length ``n`` of its feature part: ``json[:n]`` is
    that part's JSON without its closing brace, and ``"scoring"`` follows it as the last key.

    ``feature_part``: that ``json[:n]`` of the state's previous JSON, when only its scoring part changed
    since; the feature part is then not serialized again. A worker's writes are mostly of that kind
    (sweeps, labels: 45% in ``bench/bench_scorer.py``), and the feature part is most of a dump's cost.

    >>> s = {"o": [[1, "e1", 2, 0]], "max": 1, "scoring": {"risk": "LOW"}}
    >>> written, n = dump_state_parts(s)
    >>> written, written[:n]
    (b'{"o":[[1,"e1",2,0]],"max":1,"scoring":{"risk":"LOW"}}', b'{"o":[[1,"e1",2,0]],"max":1')
    >>> s["scoring"]["risk"] = "HIGH"
    >>> dump_state_parts(s, written[:n])[0]
    b'{"o":[[1,"e1",2,0]],"max":1,"scoring":{"risk":"HIGH"}}'
    """
    if feature_part is None:
        feature_part = dump_feature_part(state)
    n = len(feature_part)
    scoring = state.get("scoring")
    if scoring is None:
        return b"".join((feature_part, b"}")), n
    key = b',"scoring":' if n > 1 else b'"scoring":'
    return b"".join((feature_part, key, orjson.dumps(scoring, default=_packed_json), b"}")), n


def dump_feature_part(state: CustomerState | dict[str, Any]) -> bytes:
    """The JSON of a state without its scoring part and without the closing brace: the ``json[:n]`` of
    :func:`dump_state_parts`.

    >>> dump_feature_part({"o": [], "max": 1, "scoring": {"risk": "LOW"}})
    b'{"o":[],"max":1'
    """
    features = {k: v for k, v in state.items() if k != "scoring"}
    return orjson.dumps(features, default=_packed_json)[:-1]  # a copy of its own size


def _kept(written: bytes) -> bytes:
    """orjson's output copied into a bytes object of its own size, for JSON that is kept for long.

    orjson hands back the buffer it wrote into, rounded up and never shrunk: 8 KiB for a state of 0.6-4.3
    KB, 64 KiB for a list of 300 floats (``malloc_usable_size``, orjson 3.13). 100,000 states of 1 KB kept
    took 791 MB of resident memory, their copies 120 MB: about 7 KB too much per customer the Redis store
    caches (200,000 by default). The copy costs well under a microsecond.
    """
    return bytes(memoryview(written))


def scoring_state(state: CustomerState) -> ScoringState:
    """The scoring part of a customer's state, added empty to the state when it has none yet."""
    return state.setdefault("scoring", {})


def new_state() -> CustomerState:
    """An empty customer state."""
    return {
        "o": [],
        "t": [],
        "p": [],
        "first": None,
        "max": None,
        "fu": None,
        "f": {
            "n": 0,
            "s": 0,
            "r": 0,
            "fo": None,
            "lo": None,
            "gq": 0,
            "tn": 0,
            "tneg": 0,
            "rs": 0,
            "rc": 0,
            "op": 0,
            "ss": 0,
            "sc": 0,
            "lt": None,
            "prof": {},
        },
        "seen": {},
        "ft": {},
    }


LogKey = Literal["o", "t", "p"]
_LOG_OF: dict[type[Event], LogKey] = {OrderEvent: "o", TicketEvent: "t", ProfileEvent: "p"}


def is_duplicate(state: FeatureState, event: Event) -> bool:
    """Whether this event id was applied before; :class:`ProcessingError` when it was, with other content.

    Idempotence is per ``event_id`` and customer: the same id again with the same content is a silent
    duplicate; the same id with another timestamp, kind or content (as far as the state keeps it: an
    order's amount and status, a ticket's id, resolution and score, a profile's fields) is a conflict.
    Ids are remembered for the recent log plus, once folded, the allowed lateness (``seen``); a folded id
    keeps only its timestamp, so a reuse with the same timestamp is then taken as a duplicate.
    """
    event_id = event.event_id
    ts = event.timestamp
    folded = state["seen"].get(event_id)
    if folded is not None:
        if folded != ts:
            raise id_conflict(event, f"an event at {format_time(folded)}")
        return True
    log = state[_LOG_OF[type(event)]]
    i = bisect_left(log, ts, key=entry_time)  # the common duplicate carries the same timestamp
    while i < len(log) and log[i][0] == ts:
        if log[i][1] == event_id:
            if log[i] != _entry(event):
                raise id_conflict(event, "an event with other content at the same time")
            return True
        i += 1
    used = event_used_at(state, event_id)  # the same id elsewhere: another time or another kind of event
    if used is not None:
        raise id_conflict(event, f"an event at {format_time(used)}")
    labels: list[list[Any]] = state.get("scoring", {}).get("lab", [])  # type: ignore[attr-defined]
    for entry in labels:  # ... or an explicit label (see churnstream.features.labels.remember_label)
        if len(entry) > 2 and entry[2] == event_id:
            raise id_conflict(event, f"a churn label at {format_time(entry[0])}")
    return False


def event_used_at(state: FeatureState, event_id: str) -> int | None:
    """The time of the customer's order, ticket or profile event with this id, while the state remembers
    it (see :func:`is_duplicate`); None when it does not.

    >>> from churnstream.events import OrderEvent
    >>> s = new_state()
    >>> _ = apply_event(s, OrderEvent("e1", "c", 1000, "o", 2.5), lateness_ms=0)
    >>> event_used_at(s, "e1"), event_used_at(s, "e2")
    (1000, None)
    """
    folded = state["seen"].get(event_id)
    if folded is not None:
        return folded
    kinds: tuple[LogKey, ...] = ("o", "t", "p")
    for kind in kinds:
        for entry in state[kind]:
            if entry[1] == event_id:
                return int(entry[0])
    return None


def id_conflict(event: Event, other: str) -> ProcessingError:
    """The error of ``event`` reusing an ``event_id`` that ``other`` (e.g. "an event at <time>") took: the
    one wording of every kind of event's conflict, labels' too."""
    return ProcessingError(
        f"event_id {event.event_id!r} was already used by {other} of customer {event.customer_id!r}; "
        "an event_id may be reused only for the same event (a redelivery)"
    )


def _entry(event: Event) -> list[Any]:
    """The log entry of an order, ticket or profile event (see the layout above)."""
    if type(event) is OrderEvent:
        return [event.timestamp, event.event_id, round(event.amount * MICRO), STATUS_CODE[event.status]]
    if type(event) is TicketEvent:
        res = event.resolution_time_hours
        return [
            event.timestamp,
            event.event_id,
            event.ticket_id,
            None if res is None else round(res * MICRO),
            event.satisfaction_score,
        ]
    return [event.timestamp, event.event_id, dict(event.fields)]  # type: ignore[union-attr]


def apply_event(state: FeatureState, event: Event, *, lateness_ms: int) -> str:
    """Apply one validated event in place; returns ``'applied'`` or ``'duplicate'``.

    Raises :class:`ProcessingError` for an event older than what was already folded into totals (it can
    no longer be placed in the log) — the caller dead-letters it. Events between the folded-until time
    and the longest window after it are applied, but features as of their own time are no longer exact
    (see :func:`churnstream.features.store.is_servable`).
    """
    kind = type(event)
    if kind not in _LOG_OF:  # labels do not touch feature state
        return APPLIED
    if is_duplicate(state, event):
        return DUPLICATE
    ts = event.timestamp
    fu = state["fu"]
    if fu is not None and ts < fu:
        raise ProcessingError(
            f"event at {format_time(ts)} is older than this customer's retained history (events before "
            f"{format_time(fu)} are folded into totals): an event may be at most 90 days plus "
            "CHURN_ALLOWED_LATENESS_DAYS behind the customer's latest event (a topic of a history loaded "
            "after the others while the scorer ran? see the README's 'Backfills and live events')"
        )
    _check_room(state, ts, lateness_ms)
    entry = _entry(event)
    log = state[_LOG_OF[kind]]
    if not log or log[-1][0] < ts or (log[-1][0] == ts and log[-1][1] < event.event_id):
        log.append(entry)  # the common case: in order
    else:
        insort(log, entry, key=_ts_id)
    if state["first"] is None or ts < state["first"]:
        state["first"] = ts
    if state["max"] is None or ts > state["max"]:
        state["max"] = ts
        fold(state, lateness_ms=lateness_ms)
    return APPLIED


def _check_room(state: FeatureState, ts: int, lateness_ms: int) -> None:
    """:class:`ProcessingError` when the customer's logs already hold :data:`MAX_RETAINED_EVENTS` events of
    the history retained as of this event (those a fold will drop do not count)."""
    logs = (state["o"], state["t"], state["p"])
    if sum(map(len, logs)) < MAX_RETAINED_EVENTS:  # the common case: no need to look at times
        return
    newest = ts if state["max"] is None else max(ts, state["max"])
    since = newest - LONGEST_WINDOW_MS - lateness_ms
    held = sum(len(log) - bisect_left(log, since, key=entry_time) for log in logs)
    if held >= MAX_RETAINED_EVENTS:
        raise ProcessingError(
            f"this customer already has {held:,} events within the retained history (since "
            f"{format_time(since)}), the most one customer may hold ({MAX_RETAINED_EVENTS:,}): a bot or a "
            "load test? Its further events are refused until older ones leave the history, so that it "
            "cannot slow every other customer"
        )


def event_ids_at(state: FeatureState, t: int) -> list[str]:
    """The ids of the customer's events (orders, ticket updates, profile changes) at exactly ``t``, of
    those its logs still hold (every event after its folded-until time).

    >>> state = new_state()
    >>> state["o"] = [[5, "o1", 10.0, 0], [7, "o2", 20.0, 0]]
    >>> state["p"] = [[7, "p1", {}]]
    >>> event_ids_at(state, 7), event_ids_at(state, 6)
    (['o2', 'p1'], [])
    """
    return [e[1] for log in (state["o"], state["t"], state["p"]) for e in log if e[0] == t]


def entry_time(entry: list[Any]) -> int:
    """A log entry's event time (the first item of an order, ticket or profile entry): the logs' sort key."""
    return entry[0]  # type: ignore[no-any-return]


def _ts_id(entry: list[Any]) -> tuple[int, str]:
    return entry[0], entry[1]


def fold(state: FeatureState, *, lateness_ms: int) -> None:
    """Fold events older than the longest window plus lateness into totals; forget old dedup ids."""
    if state["max"] is None:
        return
    horizon = state["max"] - LONGEST_WINDOW_MS - lateness_ms
    # Folding in steps of a day keeps the per-event cost low; any horizon this far back keeps features exact.
    if state["fu"] is not None and horizon < state["fu"] + FOLD_STEP_MS:
        return
    if state["fu"] is None and not _has_older(state, horizon):
        return
    f = state["f"]
    seen = state["seen"]
    orders = state["o"]
    k = 0
    while k < len(orders) and orders[k][O_TS] < horizon:
        ts, eid, amount, status = orders[k]
        if status == 0:
            f["n"] += 1
            f["s"] += amount
            f["fo"] = ts if f["fo"] is None else min(f["fo"], ts)
            _fold_gap(f, ts)
            f["lo"] = ts if f["lo"] is None else max(f["lo"], ts)
        elif status == 1:
            f["r"] += 1
        seen[eid] = ts
        k += 1
    del orders[:k]
    # A ticket folds only when all of its events are old: group the ticket's events first.
    tickets = state["t"]
    old: set[str] = set()
    if tickets and tickets[0][T_TS] < horizon:
        newest: dict[str, int] = {}
        for e in tickets:
            newest[e[T_TICKET]] = max(newest.get(e[T_TICKET], e[T_TS]), e[T_TS])
        old = {tid for tid, ts in newest.items() if ts < horizon}
    if old:
        gone = []
        keep = []
        for e in tickets:
            if e[T_TICKET] in old:
                gone.append(e)
                seen[e[T_ID]] = e[T_TS]
            else:
                keep.append(e)
        state["t"] = keep
        ft = state["ft"]
        for tid, summary in ticket_summaries(gone).items():
            if tid in ft:  # an update to a ticket folded earlier: it was counted then
                _unfold_ticket_values(f, ft[tid])
                summary = merge_ticket_summaries(ft[tid], summary)
            else:
                f["tn"] += 1
            ft[tid] = summary
            _fold_ticket_values(f, summary)
    profiles = state["p"]
    k = 0
    while k < len(profiles) and profiles[k][0] < horizon:
        f["prof"].update(profiles[k][2])
        seen[profiles[k][1]] = profiles[k][0]
        k += 1
    del profiles[:k]
    state["fu"] = horizon
    forget = horizon - lateness_ms
    # ids were remembered in (roughly) time order: drop from the oldest until one is still needed
    while seen:
        eid = next(iter(seen))
        if seen[eid] >= forget:
            break
        del seen[eid]
    ft = state["ft"]
    if ft:
        for tid in [tid for tid, summary in ft.items() if summary[1] < forget]:
            del ft[tid]


def gap_minutes(earlier: int, later: int) -> int:
    """The gap between two order times in whole minutes: the unit of the folded squared gaps, which stay
    exact integers well inside 64 bits (a century of gaps sums to under 3e15 squared minutes)."""
    return (later - earlier) // 60_000


def _fold_gap(f: FoldedTotals, ts: int) -> None:
    # A state folded before "gq" existed cannot know its old gaps: it stays without, and the gap features
    # that need it are missing for that customer (never wrong) until a rebuild.
    if "gq" in f and f["lo"] is not None:
        f["gq"] += gap_minutes(f["lo"], ts) ** 2
    elif "gq" not in f and f["n"] <= 1:
        f["gq"] = 0


def _has_older(state: FeatureState, horizon: int) -> bool:
    o, t, p = state["o"], state["t"], state["p"]
    return bool((o and o[0][0] < horizon) or (t and t[0][0] < horizon) or (p and p[0][0] < horizon))


def ticket_summaries(log: Iterable[list[Any]], until: int | None = None) -> dict[str, list[Any]]:
    """Each ticket's ``[opened_ts, last_ts, resolution_micros, satisfaction]`` from ticket events in log
    order (by time, then event id), those after ``until`` left out.

    The ticket opens at its earliest event; resolution and satisfaction come from the latest event that
    carries them (an update with null leaves an earlier value in place).

    >>> ticket_summaries([[1, "a", "t1", None, 4], [2, "b", "t2", 3, None], [5, "c", "t1", 7, None]])
    {'t1': [1, 5, 7, 4], 't2': [2, 2, 3, None]}
    """
    out: dict[str, list[Any]] = {}
    for e in log:
        ts = e[T_TS]
        if until is not None and ts > until:
            break
        summary = out.get(e[T_TICKET])
        if summary is None:
            out[e[T_TICKET]] = [ts, ts, e[T_RES], e[T_SAT]]
        else:
            summary[1] = ts
            if e[T_RES] is not None:
                summary[2] = e[T_RES]
            if e[T_SAT] is not None:
                summary[3] = e[T_SAT]
    return out


def merge_ticket_summaries(old: list[Any], new: list[Any]) -> list[Any]:
    """One summary of a ticket whose events were summarised in two parts (``new`` is the later part)."""
    return [
        min(old[0], new[0]),
        max(old[1], new[1]),
        new[2] if new[2] is not None else old[2],
        new[3] if new[3] is not None else old[3],
    ]


def _fold_ticket_values(f: FoldedTotals, summary: list[Any]) -> None:
    _, _, res, sat = summary
    f["lt"] = summary[0] if f["lt"] is None else max(f["lt"], summary[0])
    if res is None:
        f["op"] += 1
    else:
        f["rs"] += res
        f["rc"] += 1
    if sat is not None:
        f["ss"] += sat
        f["sc"] += 1
        if sat <= 2:
            f["tneg"] += 1


def _unfold_ticket_values(f: FoldedTotals, summary: list[Any]) -> None:
    _, _, res, sat = summary
    if res is None:
        f["op"] -= 1
    else:
        f["rs"] -= res
        f["rc"] -= 1
    if sat is not None:
        f["ss"] -= sat
        f["sc"] -= 1
        if sat <= 2:
            f["tneg"] -= 1
