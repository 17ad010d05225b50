"""The sweep rule: which silent customers are rescored at which tick, the same online and offline.

Event time is cut into ticks of ``CHURN_SWEEP_INTERVAL_DAYS``. A tick is swept once the allowed lateness
after it has passed (:func:`sweep_tick`). At a tick, a partition rescores the customers whose silence
(event time since their latest event) reached one of ``CHURN_SWEEP_MILESTONES_DAYS`` since the
partition's previous tick: their latest event lies in one of :func:`silence_windows`. A customer who
stops buying is so rescored a handful of times as the silence grows, not at every tick for ever.

The scoring worker asks the feature store for the customers in those windows
(:mod:`churnstream.streams.scorer`); the offline path (:func:`churnstream.features.offline.serving_rows`)
tests each customer with :func:`crossed_milestone`. Both use the windows below, so they sweep alike.

>>> DAY = 86_400_000
>>> windows = silence_windows(10 * DAY, 11 * DAY, [7 * DAY, 30 * DAY])
>>> crossed_milestone(3 * DAY + 1, windows), crossed_milestone(4 * DAY, windows)
(True, False)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field


def sweep_tick(watermark: int, *, lateness_ms: int, interval_ms: int) -> int:
    """The latest sweep tick that a watermark lets go (the allowed lateness after it has passed).

    >>> DAY = 86_400_000
    >>> sweep_tick(10 * DAY + 5, lateness_ms=2 * DAY, interval_ms=DAY) // DAY
    8
    >>> sweep_tick(10 * DAY - 1, lateness_ms=2 * DAY, interval_ms=DAY) // DAY
    7
    """
    return (watermark - lateness_ms) // interval_ms * interval_ms


def silence_windows(last_tick: int, tick: int, milestones_ms: Iterable[int]) -> list[tuple[int, int]]:
    """``[since, before)`` of latest-event times whose silence crossed a milestone in (``last_tick``,
    ``tick``], one window per milestone.

    >>> silence_windows(10, 12, [3, 5])
    [(7, 9), (5, 7)]
    """
    return [(last_tick - m, tick - m) for m in milestones_ms]


def crossed_milestone(last_event_at: int, windows: Sequence[tuple[int, int]]) -> bool:
    """Whether a customer whose latest event was at ``last_event_at`` is swept (see :func:`silence_windows`).

    >>> crossed_milestone(7, [(7, 9)]), crossed_milestone(9, [(7, 9)])
    (True, False)
    """
    return any(since <= last_event_at < before for since, before in windows)


@dataclass(slots=True)
class SweepPlan:
    """What a worker's partitions do at ``tick``.

    ``starting``: partitions without a previous tick; they start sweeping after this one (the tick is
    recorded, nobody is rescored). ``due``: ``{partition: previous tick}`` of partitions that sweep
    (previous tick, ``tick``]. ``groups``: the due partitions grouped by previous tick, in tick order,
    so each group is one question to the store per milestone.
    """

    tick: int
    starting: list[int] = field(default_factory=list)
    due: dict[int, int] = field(default_factory=dict)
    groups: list[tuple[int, list[int]]] = field(default_factory=list)


def plan_sweep(partitions: Iterable[int], last_ticks: Mapping[int, int], tick: int) -> SweepPlan:
    """Which partitions start, and which sweep from which previous tick, at ``tick``.

    >>> plan = plan_sweep([2, 0, 1, 3], {0: 5, 1: 8, 3: 5}, 8)
    >>> plan.starting, plan.due, plan.groups
    ([2], {0: 5, 3: 5}, [(5, [0, 3])])
    """
    plan = SweepPlan(tick=tick)
    for p in sorted(partitions):
        last = last_ticks.get(p)
        if last is None:
            plan.starting.append(p)
        elif tick > last:
            plan.due[p] = last
    for last in sorted(set(plan.due.values())):
        plan.groups.append((last, [p for p, at in plan.due.items() if at == last]))
    return plan


__all__ = ["SweepPlan", "crossed_milestone", "plan_sweep", "silence_windows", "sweep_tick"]
