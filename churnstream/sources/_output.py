"""Shared pieces of the event sources: fast RFC 3339 formatting, ticket outcomes and JSON-lines writing.

The sources build JSON lines with f-strings over numpy arrays rather than one ``json.dumps`` per event;
every value they interpolate is a number or an ASCII identifier that needs no escaping, and the tests
check every line with :func:`churnstream.events.parse_event`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from churnstream.errors import ConfigError

CHANNELS = ("email", "chat", "phone", "social")
CHANNEL_SHARES = (0.35, 0.35, 0.22, 0.08)
HOUR_MS = 3_600_000


def rfc3339_seconds(ms: np.ndarray) -> list[str]:
    """RFC 3339 UTC strings of whole-second epoch milliseconds, identical to ``format_time``.

    >>> rfc3339_seconds(np.array([0, 1714557600000]))
    ['1970-01-01T00:00:00Z', '2024-05-01T10:00:00Z']
    """
    ms = np.asarray(ms, dtype=np.int64)
    if ms.size and np.any(ms % 1000):
        raise ValueError("rfc3339_seconds needs whole seconds")
    text = np.datetime_as_string(ms.astype("datetime64[ms]"), unit="s")
    return [f"{t}Z" for t in text.tolist()]


def ticket_outcomes(
    rng: np.random.Generator, quality: np.ndarray, *, rated_share: float = 0.7
) -> tuple[np.ndarray, np.ndarray]:
    """Resolution hours and satisfaction (0 = not rated) of tickets handled with ``quality`` in (0, 1).

    Poor handling means slow resolution and low scores: resolution hours are lognormal around
    ``4 * exp(2.5 * (1 - quality))`` (4 h at best, about 50 h at worst) and the score falls with both.
    """
    n = quality.size
    hours = np.exp(np.log(4.0) + 2.5 * (1.0 - quality) + rng.normal(0.0, 0.8, n))
    latent = 1.0 + 4.2 * quality - 0.45 * np.log1p(hours / 24.0) + rng.normal(0.0, 0.7, n)
    score = np.clip(np.rint(latent), 1, 5).astype(np.int64)
    rated = rng.random(n) < rated_share
    return np.round(hours, 2), np.where(rated, score, 0)


def ticket_lines(
    *,
    prefix: str,
    customer_ids: list[str],
    customer: np.ndarray,
    opened_ms: np.ndarray,
    hours: np.ndarray,
    score: np.ndarray,
    channel: np.ndarray,
    end_ms: int,
) -> tuple[list[str], int, int]:
    """JSON lines of tickets (``customer`` indexes ``customer_ids``), sorted by event time.

    Each ticket opened before ``end_ms`` gives an opening event with ``resolution_time_hours: null``
    (still open) and, when resolved before ``end_ms``, a resolution event at open time plus the hours,
    carrying the hours and the satisfaction score (null when not rated). Tickets are numbered by
    opening time. Returns (lines, tickets, tickets still open at ``end_ms``).
    """
    keep = np.flatnonzero(opened_ms < end_ms)
    n = keep.size
    order = keep[np.lexsort((keep, opened_ms[keep]))]
    opened_ms = opened_ms[order]
    hours = hours[order]
    score = score[order]
    channel = channel[order]
    cids = [customer_ids[i] for i in customer[order].tolist()]
    resolved_ms = opened_ms + np.round(hours * 3600.0).astype(np.int64) * 1000
    resolved = resolved_ms < end_ms
    ticket_no = np.arange(1, n + 1)
    # Events: every opening, then the resolutions; sorted by (time, opening before resolution, ticket).
    ev_ticket = np.concatenate([ticket_no, ticket_no[resolved]])
    ev_ms = np.concatenate([opened_ms, resolved_ms[resolved]])
    ev_kind = np.concatenate([np.zeros(n, np.int64), np.ones(int(resolved.sum()), np.int64)])
    ev_order = np.lexsort((ev_ticket, ev_kind, ev_ms))
    times = rfc3339_seconds(ev_ms[ev_order])
    channels = [CHANNELS[c] for c in channel.tolist()]
    hours_l = hours.tolist()
    score_l = score.tolist()
    lines = []
    for n_ev, (k, kind, ts) in enumerate(
        zip(ev_ticket[ev_order].tolist(), ev_kind[ev_order].tolist(), times, strict=True), 1
    ):
        i = k - 1
        if kind:
            sat = score_l[i]
            res = f"{hours_l[i]:.2f}"
            sat_text = str(sat) if sat else "null"
        else:
            res = sat_text = "null"
        lines.append(
            f'{{"event_id":"{prefix}-s-{n_ev}","customer_id":"{cids[i]}","ticket_id":"{prefix}-ticket-{k}",'
            f'"timestamp":"{ts}","resolution_time_hours":{res},"satisfaction_score":{sat_text},'
            f'"channel":"{channels[i]}"}}\n'
        )
    return lines, n, n - int(resolved.sum())


def write_lines(path: Path, lines: list[str]) -> None:
    """Write JSON lines as UTF-8 with ``\\n`` line ends, so the bytes do not depend on the platform."""
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        handle.write("".join(lines))


def write_json(path: Path, obj: Any) -> None:
    """Write a JSON document with sorted keys (byte-stable for the same content)."""
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        json.dump(obj, handle, indent=2, sort_keys=True)
        handle.write("\n")


def prepare_out_dir(out: str | Path) -> Path:
    """The output directory, created if needed; refuses a path that is a file."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--out {path} exists and is not a directory")
    path.mkdir(parents=True, exist_ok=True)
    return path


def progress(total: int, desc: str, unit: str, *, enabled: bool) -> Any:
    """A tqdm bar on stderr (hidden when stderr is not a terminal or ``enabled`` is false)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=not enabled or None, leave=False)
