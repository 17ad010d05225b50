"""The monitor pages' reader: one read for requests that arrive together, results reused while fresh."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from churnstream.settings import Settings
from churnstream.streams import monitor_views
from churnstream.streams.monitor_views import PublishedViews


def test_requests_arriving_together_share_one_read_and_a_fresh_result_is_reused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    release = threading.Event()

    def report_view(settings: Settings) -> list[dict[str, Any]]:
        calls.append(settings.topic_prefix)
        release.wait(30)  # held until both requests wait on it
        return [{"day": "2024-05-01", "n": len(calls)}]

    monkeypatch.setattr(monitor_views, "report_view", report_view)

    async def run() -> tuple[list[Any], list[Any], list[Any]]:
        views = PublishedViews(Settings(topic_prefix="p."), fresh_seconds=3600, in_thread=True)
        try:
            first = asyncio.ensure_future(views.report())
            second = asyncio.ensure_future(views.report())
            deadline = time.monotonic() + 30
            while not calls:
                assert time.monotonic() < deadline, "the report view was never asked"
                await asyncio.sleep(0.01)
            release.set()
            together = await asyncio.gather(first, second)
            again = await views.report()
            views.fresh_seconds = 0.0
            stale = await views.report()
            return together, [again], [stale]
        finally:
            views.close()

    together, (again,), (stale,) = asyncio.run(run())
    assert together[0] == together[1] == again == [{"day": "2024-05-01", "n": 1}]
    assert stale == [{"day": "2024-05-01", "n": 2}] and calls == ["p.", "p."]


def test_a_failed_read_is_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    from churnstream.errors import InfraError

    outcomes: list[Any] = [InfraError("topic churn_alerts does not exist"), {"month": None, "alerts": []}]

    def alerts_view(settings: Settings) -> Any:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    monkeypatch.setattr(monitor_views, "alerts_view", alerts_view)

    async def run() -> dict[str, Any]:
        views = PublishedViews(Settings(), fresh_seconds=3600, in_thread=True)
        try:
            with pytest.raises(InfraError, match="does not exist"):
                await views.alerts()
            return await views.alerts()
        finally:
            views.close()

    assert asyncio.run(run()) == {"month": None, "alerts": []}
