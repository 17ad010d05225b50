"""The real CDNOW order log as contract events, plus simulated support tickets for the same customers.

``churnstream dataset cdnow --out DIR [--seed S]`` reads ``CDNOW_master.txt`` as shipped in the
``lifetimes==0.11.3`` wheel: the complete purchase history, January 1997 to June 1998, of the 23,570
customers who first bought at the online music retailer CDNOW in the first quarter of 1997 (Fader &
Hardie, 2001). Each of its 69,659 rows (customer id, date YYYYMMDD, number of CDs, dollar amount)
becomes one completed order:

- ``event_id`` ``cdnow-<row>`` and ``order_id`` ``cdnow-order-<row>``, ``row`` being the 1-based data
  row of the file (stable across runs and seeds); ``customer_id`` the id without leading zeros.
- ``timestamp``: the row's date, at a time of day between 08:00 and 22:00 UTC derived from the row
  number (the file has dates only; spreading them makes a replay look like a stream). Orders of one
  customer on one day keep the file's order. The date itself is never changed.
- ``amount``: the dollar amount as given (80 rows are 0.00, which the contract allows);
  ``items``: the number of CDs (every row has at least one; a row with 0 would omit ``items``).

``customer_profiles.jsonl`` has one event per customer at the first purchase, whose ``signup_date`` is
that time (CDNOW has no other profile data). ``support_tickets.jsonl`` is simulated (seeded): a
completed order leads to a routine, mostly well-handled ticket with probability 5 %, and a customer
files a badly handled "trouble" ticket between 14 days before and 3 days after the last purchase
with probability 35 % when that purchase is more than 180 days before the end of the log (the
customer lapsed) and 7 % otherwise — so tickets carry a planted, plausible signal about churn.
The planted signal is this project's invention (and it looks at the whole log, future included), so
``--tickets none`` writes an empty ``support_tickets.jsonl``: the real orders alone.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.metadata
import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from churnstream.errors import ChurnstreamError
from churnstream.events import format_time
from churnstream.settings import DAY_MS, Settings
from churnstream.sources._output import (
    CHANNEL_SHARES,
    HOUR_MS,
    prepare_out_dir,
    rfc3339_seconds,
    ticket_lines,
    ticket_outcomes,
    write_json,
    write_lines,
)

CDNOW_FILE = "datasets/CDNOW_master.txt"
INSTALL_HINT = "pip install --no-deps lifetimes==0.11.3"
PROVENANCE = (
    "CDNOW master data set: the entire purchase history up to the end of June 1998 of the cohort of "
    "23,570 customers who made their first purchase at the online music retailer CDNOW in the first quarter "
    "of 1997; introduced by P. S. Fader and B. G. S. Hardie, 'Forecasting Repeat Sales at CDNOW: A Case "
    "Study', Interfaces 31(3), 2001; distributed by Bruce Hardie (brucehardie.com) and bundled as "
    "lifetimes/datasets/CDNOW_master.txt in the lifetimes package"
)
LICENCE = (
    "unknown: the lifetimes package is MIT-licensed, but neither it nor this project has found a licence "
    "stated for the data set itself; it is widely used in research and teaching. Check the terms before "
    "redistributing the data"
)
TICKETS = ("simulated", "none")
TICKET_MODEL: dict[str, Any] = {
    "routine_ticket_per_order": 0.05,
    "routine_delay_hours": [1, 72],
    "routine_service_quality": {"distribution": "beta", "a": 5.0, "b": 2.0},
    "trouble_ticket_if_lapsed": 0.35,
    "trouble_ticket_otherwise": 0.07,
    "lapsed_after_days": 180,
    "trouble_window_days_around_last_purchase": [-14, 3],
    "trouble_service_quality": {"distribution": "beta", "a": 2.0, "b": 5.0},
    "satisfaction_rated_share": 0.7,
}


def cdnow_path() -> Path:
    """Where ``CDNOW_master.txt`` of the installed lifetimes package is, found without importing it.

    (Importing ``lifetimes.datasets`` fails on current setuptools, so only its location is looked up.)
    """
    candidates: list[Path] = []
    spec = importlib.util.find_spec("lifetimes")
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(loc) / CDNOW_FILE for loc in spec.submodule_search_locations]
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        located = importlib.metadata.distribution("lifetimes").locate_file(f"lifetimes/{CDNOW_FILE}")
        candidates.append(Path(str(located)))
    for path in candidates:
        if path.is_file():
            return path
    raise ChurnstreamError(
        f"the CDNOW order log (lifetimes/{CDNOW_FILE}) was not found; it ships with the lifetimes package: "
        f"{INSTALL_HINT}"
    )


def _lifetimes_version() -> str | None:
    try:
        return importlib.metadata.version("lifetimes")
    except importlib.metadata.PackageNotFoundError:
        return None


class _Rows:
    """The raw columns of ``CDNOW_master.txt``, in file order."""

    def __init__(self, path: Path) -> None:
        ids: list[int] = []
        dates: list[str] = []
        cds: list[int] = []
        amounts: list[str] = []
        with path.open(encoding="ascii") as handle:
            header = handle.readline().split()
            if header[:2] != ["customer_id", "date"]:
                raise ChurnstreamError(f"{path}: unexpected header {header}")
            for line_no, line in enumerate(handle, 2):
                parts = line.split()
                if not parts:
                    continue
                try:
                    cid, date, n_cds, amount = parts
                    ids.append(int(cid))
                    dates.append(f"{date[:4]}-{date[4:6]}-{date[6:8]}")
                    cds.append(int(n_cds))
                    float(amount)
                except ValueError as exc:
                    raise ChurnstreamError(f"{path}:{line_no}: cannot read {line.strip()!r}: {exc}") from None
                amounts.append(amount)
        self.customer = np.asarray(ids, dtype=np.int64)
        self.day = np.asarray(dates, dtype="datetime64[D]").astype(np.int64)  # days since 1970-01-01
        self.cds = np.asarray(cds, dtype=np.int64)
        self.amount_text = amounts
        self.amount = np.asarray([float(a) for a in amounts])
        self.row = np.arange(1, len(ids) + 1, dtype=np.int64)


def _order_times(rows: _Rows) -> np.ndarray:
    """Epoch ms of every row: its date at a row-derived second in [08:00, 22:00), file order kept per day."""
    sec = 8 * 3600 + (rows.row * 2_654_435_761 % 2**32) % (14 * 3600)
    # Within each (customer, day), hand out that group's seconds in ascending order along the file order.
    by_time = np.lexsort((sec, rows.day, rows.customer))
    by_file = np.lexsort((rows.row, rows.day, rows.customer))
    ordered = np.empty_like(sec)
    ordered[by_file] = sec[by_time]
    return rows.day * DAY_MS + ordered * 1000


def _tickets(
    rng: np.random.Generator, customer: np.ndarray, ms: np.ndarray, end_ms: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Simulated tickets (customer index, opened ms, hours, score, channel) for the orders given."""
    n_customers = int(customer.max()) + 1
    first = np.full(n_customers, np.iinfo(np.int64).max)
    last = np.full(n_customers, -1)
    np.minimum.at(first, customer, ms)
    np.maximum.at(last, customer, ms)
    known = np.flatnonzero(last >= 0)
    m = TICKET_MODEL

    routine = rng.random(ms.size) < m["routine_ticket_per_order"]
    r_cust = customer[routine]
    r_ms = ms[routine] + rng.integers(1 * 3600, 72 * 3600, int(routine.sum())) * 1000
    r_quality = rng.beta(5.0, 2.0, r_cust.size)

    lapsed = end_ms - last[known] > m["lapsed_after_days"] * DAY_MS
    share = np.where(lapsed, m["trouble_ticket_if_lapsed"], m["trouble_ticket_otherwise"])
    u = rng.random(known.size)
    offset_s = rng.integers(-14 * 86_400, 3 * 86_400, known.size)
    quality = rng.beta(2.0, 5.0, known.size)
    pick = u < share
    t_cust = known[pick]
    t_ms = np.maximum(last[t_cust] + offset_s[pick] * 1000, first[t_cust] + HOUR_MS)

    cust = np.concatenate([r_cust, t_cust])
    opened = np.concatenate([r_ms, t_ms])
    hours, score = ticket_outcomes(
        rng, np.concatenate([r_quality, quality[pick]]), rated_share=m["satisfaction_rated_share"]
    )
    channel = rng.choice(len(CHANNEL_SHARES), cust.size, p=np.asarray(CHANNEL_SHARES))
    return cust, opened, hours, score, channel


def convert_cdnow(
    out: str | Path, *, seed: int = 7, source: Path | None = None, tickets: str = "simulated"
) -> dict[str, Any]:
    """Write CDNOW orders, tickets (``simulated``, or ``none``: an empty file), profiles and
    ``manifest.json`` to ``out``; returns it."""
    if tickets not in TICKETS:
        raise ChurnstreamError(f"tickets must be one of {', '.join(TICKETS)}, got {tickets!r}")
    path = cdnow_path() if source is None else source
    rows = _Rows(path)
    out_dir = prepare_out_dir(out)
    ms = _order_times(rows)
    end_ms = int(rows.day.max() + 1) * DAY_MS
    order = np.lexsort((rows.row, ms))
    times = rfc3339_seconds(ms[order])
    items = [f'"items":{k},' if k >= 1 else "" for k in rows.cds[order].tolist()]
    row_l = rows.row[order].tolist()
    cust_l = rows.customer[order].tolist()
    amount_l = rows.amount[order].tolist()
    order_lines = [
        f'{{"event_id":"cdnow-{r}","customer_id":"{c}","order_id":"cdnow-order-{r}","timestamp":"{ts}",'
        f'"amount":{a!r},{k}"status":"completed"}}\n'
        for r, c, ts, a, k in zip(row_l, cust_l, times, amount_l, items, strict=True)
    ]

    n_customers = int(rows.customer.max()) + 1
    first = np.full(n_customers, np.iinfo(np.int64).max)
    np.minimum.at(first, rows.customer, ms)
    known = np.flatnonzero(first < np.iinfo(np.int64).max)
    p_order = np.lexsort((known, first[known]))
    p_cust = known[p_order].tolist()
    p_times = rfc3339_seconds(first[known][p_order])
    profile_lines = [
        f'{{"event_id":"cdnow-p-{c}","customer_id":"{c}","timestamp":"{ts}","signup_date":"{ts}"}}\n'
        for c, ts in zip(p_cust, p_times, strict=True)
    ]

    rng = np.random.default_rng(np.random.SeedSequence([seed, 100]))
    t_cust, t_ms, hours, score, channel = _tickets(rng, rows.customer, ms, end_ms)
    if tickets == "none":  # the same draws, none kept: orders and profiles stay byte-identical
        t_cust, t_ms, hours, score, channel = (a[:0] for a in (t_cust, t_ms, hours, score, channel))
    ticket_events, n_tickets, still_open = ticket_lines(
        prefix="cdnow",
        customer_ids=[str(i) for i in range(n_customers)],
        customer=t_cust,
        opened_ms=t_ms,
        hours=hours,
        score=score,
        channel=channel,
        end_ms=end_ms,
    )

    write_lines(out_dir / "orders.jsonl", order_lines)
    write_lines(out_dir / "support_tickets.jsonl", ticket_events)
    write_lines(out_dir / "customer_profiles.jsonl", profile_lines)
    manifest = {
        "generator": "churnstream.sources.cdnow",
        "seed": seed,
        "tickets": tickets,
        "source": {
            "file": path.name,
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "package": f"lifetimes {_lifetimes_version()}" if source is None else None,
            "rows": len(order_lines),
            "columns": ["customer_id", "date (YYYYMMDD)", "number_of_cds", "dollar_value"],
        },
        "provenance": PROVENANCE,
        "licence": LICENCE,
        "first_order": format_time(int(ms.min())),
        "last_order": format_time(int(ms.max())),
        "end": format_time(end_ms),
        "counts": {
            "customers": len(profile_lines),
            "orders": len(order_lines),
            "orders_with_zero_amount": int((rows.amount == 0).sum()),
            "orders_without_items": int((rows.cds < 1).sum()),
            "amount_total": round(float(rows.amount.sum()), 2),
            "tickets": n_tickets,
            "tickets_open_at_end": still_open,
            "ticket_events": len(ticket_events),
            "profiles": len(profile_lines),
        },
        "conversion": {
            "event_id": "cdnow-<row>, row = 1-based data row of the file; order_id cdnow-order-<row>",
            "customer_id": "the file's id without leading zeros",
            "timestamp": "the row's date at a row-derived time of day in [08:00, 22:00) UTC; "
            "one customer's orders of a day keep the file's order",
            "amount": "dollar_value as given (zero amounts kept)",
            "items": "number_of_cds; omitted when 0 (the contract needs >= 1; no such row in the file)",
            "status": "completed",
            "customer_profiles": "one event per customer at the first purchase, signup_date = that time",
            "support_tickets": "simulated, see tickets_model" if tickets == "simulated" else "none",
        },
        "tickets_model": TICKET_MODEL if tickets == "simulated" else None,
        "files": ["orders.jsonl", "support_tickets.jsonl", "customer_profiles.jsonl"],
    }
    write_json(out_dir / "manifest.json", manifest)
    return manifest


def cli(args: argparse.Namespace, settings: Settings) -> int:
    """``churnstream dataset cdnow``: convert the CDNOW log and say what was written."""
    manifest = convert_cdnow(args.out, seed=args.seed, tickets=getattr(args, "tickets", "simulated"))
    counts = manifest["counts"]
    print(
        f"wrote {counts['orders']:,} CDNOW orders of {counts['customers']:,} customers "
        f"({manifest['first_order'][:10]} to {manifest['last_order'][:10]}), {counts['ticket_events']:,} "
        f"simulated ticket events and {counts['profiles']:,} profiles to {args.out}"
    )
    return 0
