"""The CDNOW conversion keeps every real order, as valid contract events, next to seeded tickets."""

from __future__ import annotations

import json
import sys
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from churnstream.cli import main
from churnstream.errors import ChurnstreamError
from churnstream.events import parse_event, parse_time
from churnstream.sources import cdnow
from churnstream.sources.cdnow import cdnow_path, convert_cdnow

KINDS = ("orders", "support_tickets", "customer_profiles")


def _raw_rows() -> list[tuple[str, str, int, Decimal]]:
    """(customer id, YYYY-MM-DD, CDs, dollars) of every data row of the raw file, read independently."""
    try:
        path = cdnow_path()
    except ChurnstreamError as exc:
        pytest.skip(str(exc))
    rows = []
    for line in path.read_text(encoding="ascii").splitlines()[1:]:
        cid, date, cds, dollars = line.split()
        rows.append((str(int(cid)), f"{date[:4]}-{date[4:6]}-{date[6:]}", int(cds), Decimal(dollars)))
    return rows


def _records(directory: Path, kind: str) -> list[dict[str, Any]]:
    with (directory / f"{kind}.jsonl").open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


@pytest.fixture(scope="module")
def raw() -> list[tuple[str, str, int, Decimal]]:
    return _raw_rows()


@pytest.fixture(scope="module")
def converted(raw: list[Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cdnow")
    convert_cdnow(out, seed=7)
    return out


@pytest.fixture(scope="module")
def orders(converted: Path) -> list[dict[str, Any]]:
    return _records(converted, "orders")


def test_every_order_is_kept_with_its_date_and_amount(
    raw: list[Any], converted: Path, orders: list[dict[str, Any]]
) -> None:
    assert len(raw) == len(orders) == 69_659
    assert len({r[0] for r in raw}) == len({o["customer_id"] for o in orders}) == 23_570
    assert sum(Decimal(repr(o["amount"])) for o in orders) == sum(r[3] for r in raw)

    def per_day(rows: list[tuple[str, str, int, Decimal]]) -> tuple[Counter[str], dict[str, Decimal]]:
        counts: Counter[str] = Counter()
        amounts: dict[str, Decimal] = {}
        for _, day, _, dollars in rows:
            counts[day] += 1
            amounts[day] = amounts.get(day, Decimal(0)) + dollars
        return counts, amounts

    converted_rows = [
        (o["customer_id"], o["timestamp"][:10], o.get("items", 0), Decimal(repr(o["amount"]))) for o in orders
    ]
    assert per_day(converted_rows) == per_day(raw)
    # Row by row (event ids name the file's rows): same customer, date, CDs and amount.
    by_row = {
        int(o["event_id"].removeprefix("cdnow-")): row for o, row in zip(orders, converted_rows, strict=True)
    }
    assert [by_row[i + 1] for i in range(len(raw))] == raw
    assert sum(Decimal(repr(o["amount"])) == 0 for o in orders) == 80
    assert {o["status"] for o in orders} == {"completed"}


def test_orders_of_one_customer_and_day_keep_the_file_order(
    converted: Path, orders: list[dict[str, Any]]
) -> None:
    groups: dict[tuple[str, str], list[tuple[str, int]]] = {}
    for o in orders:
        key = (o["customer_id"], o["timestamp"][:10])
        groups.setdefault(key, []).append((o["timestamp"], int(o["event_id"].removeprefix("cdnow-"))))
    shared = [g for g in groups.values() if len(g) > 1]
    assert shared
    for group in shared:
        assert [row for _, row in sorted(group)] == sorted(row for _, row in group)


def test_every_record_follows_the_contract(converted: Path) -> None:
    for kind in KINDS:
        seen: set[str] = set()
        last = 0
        for obj in _records(converted, kind):
            event = parse_event(kind, obj, key=obj["customer_id"])
            assert event.event_id not in seen
            seen.add(event.event_id)
            assert event.timestamp >= last, "files are sorted by event time"
            last = event.timestamp
    assert last <= parse_time("1998-07-01T00:00:00Z")


def test_profiles_sign_up_at_the_first_purchase(converted: Path, orders: list[dict[str, Any]]) -> None:
    first: dict[str, str] = {}
    for o in orders:
        first.setdefault(o["customer_id"], o["timestamp"])
    profiles = _records(converted, "customer_profiles")
    assert len(profiles) == 23_570
    assert all(p["timestamp"] == p["signup_date"] == first[p["customer_id"]] for p in profiles)


def test_tickets_belong_to_known_customers_and_lean_towards_lapsed_ones(
    converted: Path, orders: list[dict[str, Any]]
) -> None:
    last: dict[str, int] = {}
    for o in orders:
        last[o["customer_id"]] = parse_time(o["timestamp"])
    tickets = _records(converted, "support_tickets")
    opened = [t for t in tickets if t["resolution_time_hours"] is None]
    assert 5_000 < len(opened) < 20_000
    assert {t["customer_id"] for t in tickets} <= set(last)
    end = parse_time("1998-07-01T00:00:00Z")
    lapsed = {cid for cid, ts in last.items() if end - ts > 180 * 86_400_000}
    bad = {t["customer_id"] for t in tickets if (t["satisfaction_score"] or 5) <= 2}
    share_lapsed = len(bad & lapsed) / len(lapsed)
    share_active = len(bad - lapsed) / (len(last) - len(lapsed))
    assert share_lapsed > 2 * share_active


def test_same_seed_same_bytes_and_the_seed_only_changes_tickets(
    converted: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    again = tmp_path / "again"
    other = tmp_path / "other"
    convert_cdnow(again, seed=7)
    assert main(["dataset", "cdnow", "--out", str(other), "--seed", "8"]) == 0
    assert "69,659 CDNOW orders of 23,570 customers" in capsys.readouterr().out
    assert json.loads((other / "manifest.json").read_text())["seed"] == 8
    for name in ("orders.jsonl", "support_tickets.jsonl", "customer_profiles.jsonl", "manifest.json"):
        assert (again / name).read_bytes() == (converted / name).read_bytes(), name
    assert (other / "orders.jsonl").read_bytes() == (converted / "orders.jsonl").read_bytes()
    assert (other / "support_tickets.jsonl").read_bytes() != (
        converted / "support_tickets.jsonl"
    ).read_bytes()


def test_manifest_records_counts_and_provenance(converted: Path) -> None:
    manifest = json.loads((converted / "manifest.json").read_text())
    assert manifest["counts"]["orders"] == 69_659
    assert manifest["counts"]["customers"] == 23_570
    assert manifest["source"]["package"] == "lifetimes 0.11.3"
    assert len(manifest["source"]["sha256"]) == 64
    assert "Fader" in manifest["provenance"] and "Hardie" in manifest["provenance"]
    assert manifest["licence"]


def test_the_file_is_found_without_importing_lifetimes_datasets(raw: list[Any]) -> None:
    imported_before = "lifetimes.datasets" in sys.modules
    assert cdnow_path().name == "CDNOW_master.txt"
    assert imported_before or "lifetimes.datasets" not in sys.modules


def test_a_missing_package_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    def not_found(name: str) -> Any:
        raise cdnow.importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(cdnow.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(cdnow.importlib.metadata, "distribution", not_found)
    with pytest.raises(ChurnstreamError, match=r"pip install --no-deps lifetimes==0\.11\.3"):
        cdnow_path()


def test_tickets_none_writes_the_same_orders_and_no_tickets(
    converted: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bare = tmp_path / "bare"
    assert main(["dataset", "cdnow", "--out", str(bare), "--tickets", "none"]) == 0
    assert "69,659 CDNOW orders of 23,570 customers (1997-01-01 to 1998-06-30), 0 simulated" in (
        capsys.readouterr().out
    )
    assert (bare / "support_tickets.jsonl").read_bytes() == b""
    for name in ("orders.jsonl", "customer_profiles.jsonl"):
        assert (bare / name).read_bytes() == (converted / name).read_bytes(), name
    manifest = json.loads((bare / "manifest.json").read_text())
    assert (manifest["tickets"], manifest["counts"]["tickets"], manifest["tickets_model"]) == (
        "none",
        0,
        None,
    )
    with pytest.raises(ChurnstreamError, match="tickets must be one of simulated, none"):
        convert_cdnow(tmp_path / "bad", tickets="planted")
