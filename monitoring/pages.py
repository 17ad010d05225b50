"""The drift monitor's own pages: the report list (one row per window, newest first), the page of a window
whose full Evidently report was not drawn, and the note above a drawn one; each names its window. Beside
them, the current top alerts (:func:`render_alerts_page`) and the daily report (:func:`render_report_page`,
the records of :class:`~churnstream.monitoring.daily.DailyReport`).

>>> page = render_report_list([], {"windows_reported": 0, "windows_done": 0, "rows_pending": 5,
...     "window_rows": 10, "reports_rendered": 0, "windows_merged": 0, "reports_pending": 0,
...     "last_report_at": None})
>>> "No reports yet" in page, "5 rows in the open window (of 10)" in page
(True, True)
>>> message = {"report_id": "r1", "window_start": "2024-06-01T00:00:00Z",
...     "window_end": "2024-06-02T00:00:00Z", "rows": 10, "model_version": "v1", "dataset_drift": True,
...     "drift_share": 0.5, "drifted_columns": ["x"], "columns": {"x": {"method": "K-S p_value",
...     "score": 0.001, "threshold": 0.05, "drifted": True}}, "action": "watch"}
>>> print(window_banner(message).replace(", model", ",\\nmodel"))
Drift window r1: 2024-06-01T00:00:00Z .. 2024-06-02T00:00:00Z (event time), 10 predictions,
model v1: DRIFT (share 50%: x), action watch.
>>> page = render_window_page(message, note="drawn light")
>>> "2024-06-01T00:00:00Z .. 2024-06-02T00:00:00Z" in page, "<td>x</td>" in page
(True, True)

While a model is in shadow the report carries its ``evidence`` (:mod:`churnstream.monitoring.evidence`): the
list, the banner and the window's page show it, cumulative and per week of labelled predictions.

>>> auc = {"champion": 0.8, "shadow": 0.86, "difference": 0.06, "interval": [0.04, 0.08]}
>>> message["evidence"] = {"champion_version": "v1", "shadow_version": "v2", "cumulative": {"labels": 1200,
...     "positives": 300, "roc_auc": auc, "verdict": "better"}, "windows": []}
>>> print(evidence_summary(message["evidence"]).replace(" (", "\\n("))
shadow v2 vs champion v1 on 1,200 labels: better
(ROC-AUC shadow 0.860, champion 0.800, difference +0.060 [+0.040, +0.080])
"""

from __future__ import annotations

import html
import json
from typing import Any

from churnstream.errors import ChurnstreamError
from churnstream.monitoring.concept import error_shift
from churnstream.monitoring.performance import windows_named
from churnstream.predictions import reasons_text
from churnstream.timefmt import format_time, parse_time


def headline(reports: list[dict[str, Any]]) -> str:
    """What to do, first: the newest window's action and why, with its model and bounds (the table below
    is the evidence). Empty before the first report.

    >>> print(headline([{"report_id": "w1", "window_start": "1998-01-01T00:00:00Z",
    ...     "window_end": "1998-02-01T00:00:00Z", "model_version": "v0001", "action": "watch",
    ...     "action_reason": "estimated ROC-AUC 0.74 is 0.03 below 0.77"}]))  # doctest: +NORMALIZE_WHITESPACE
    <p id="headline" class="watch"><b>Latest window (1998-01-01 .. 1998-02-01, model v0001): watch</b>
    \u2014 estimated ROC-AUC 0.74 is 0.03 below 0.77</p>
    """
    if not reports:
        return ""
    r = reports[-1]
    action = str(r.get("action") or "none")
    esc = html.escape
    start, end = str(r.get("window_start", ""))[:10], str(r.get("window_end", ""))[:10]
    return (
        f'<p id="headline" class="{esc(action)}"><b>Latest window ({esc(start)} .. {esc(end)}, model '
        f"{esc(str(r.get('model_version', '')))}): {esc(action)}</b> "
        f"\u2014 {esc(str(r.get('action_reason') or '-'))}</p>"
    )


def _realized_cell(performance: dict[str, Any] | None) -> str:
    """A window's realized ROC-AUC is that of an *earlier* window whose labels are all known: named.

    >>> _realized_cell({"value": 0.7841, "lower": 0.76, "upper": 0.81, "labels": 6090,
    ...                 "window_start": "1998-02-10T00:00:00Z", "window_end": "1998-03-25T00:00:00Z"})
    '0.784 [0.760, 0.810]<br><small>(6,090 labels of 1998-02-10 .. 1998-03-25)</small>'
    >>> _realized_cell(None)
    '-'
    """
    if not performance or performance.get("value") is None:
        return "-"
    start = html.escape(str(performance.get("window_start") or "")[:10])
    end = html.escape(str(performance.get("window_end") or "")[:10])
    interval = _interval(performance)
    labels = performance.get("labels")
    counted = f"{int(labels):,} labels" if isinstance(labels, int) else "labels"
    return f"{_fixed(performance['value'], 3)}{interval}<br><small>({counted} of {start} .. {end})</small>"


def render_report_list(reports: list[dict[str, Any]], health: dict[str, Any], *, base: str = "") -> str:
    """The report list page: one row per window with its rows, verdict and report, newest first.

    ``base``: the path the pages are served under (the path of ``CHURN_PUBLIC_URL``, e.g. ``/churn``
    behind a proxy; empty at the site's root): every link of a page starts with it."""
    rows = []
    for r in reversed(reports):
        rid = html.escape(str(r.get("report_id", "")))
        concept = r.get("concept_drift") or {}
        prediction = r.get("prediction_drift") or {}
        estimated = (r.get("estimated_performance") or {}).get("value")
        evidence = r.get("evidence") or {}
        drift = bool(r.get("dataset_drift"))
        evidently = r.get("evidently_report") or {}
        if evidently.get("drawn") == "none":
            drawn = "no page: the report directory refused it"
        elif evidently.get("error"):
            drawn = "not drawn (error): light page"
        elif evidently.get("shared"):  # reports of monitors before one run per window
            drawn = f"shared by {evidently.get('windows')} windows ({evidently.get('window')} of them)"
        elif evidently.get("drawn") == "light":
            drawn = "light page (full report not drawn)"
        elif evidently.get("drawn_later"):
            drawn = "full report (drawn once the monitor caught up; light when published)"
        else:
            drawn = "full report"
        if r.get("evidently_run"):  # in full: the ids of a project's runs share their first characters
            drawn += " \u00b7 Evidently run " + str(r["evidently_run"])
        rows.append(
            "<tr class='{cls}'>"
            "<td><a href='{base}/reports/{rid}'>{rid}</a></td>"
            "<td>{start}<br>{end}</td><td class='num'>{rows}</td><td>{model}</td>"
            "<td class='verdict'>{verdict}</td><td class='num'>{share:.0%}</td><td>{cols}</td>"
            "<td>{pred}</td><td>{concept}</td><td class='num'>{auc}</td><td>{action}</td>"
            "<td class='evidence'>{evidence}</td>"
            "<td><a href='{base}/reports/{rid}'>HTML</a> <a href='{base}/reports/{rid}.json'>JSON</a></td>"
            "<td class='drawn'>{drawn}</td></tr>".format(
                cls="drift" if drift else "ok",
                base=html.escape(base),
                rid=rid,
                start=html.escape(str(r.get("window_start", ""))),
                end=html.escape(str(r.get("window_end", ""))),
                rows=int(r.get("rows") or 0),
                model=html.escape(str(r.get("model_version", ""))),
                verdict="DRIFT" if drift else "no drift",
                share=float(r.get("drift_share") or 0.0),
                cols=html.escape(", ".join(r.get("drifted_columns") or [])) or "&ndash;",
                pred="drift" if prediction.get("drifted") else "&ndash;",
                concept=(
                    f"detected at {html.escape(str(concept.get('at')))}"
                    if concept.get("detected")
                    else "&ndash;"
                ),
                auc=f"{_fixed(estimated, 3)} / {_realized_cell(r.get('realized_performance'))}",
                action=(html.escape(str(r.get("action") or "")) or "&ndash;")
                + (
                    f"<br><small>{html.escape(str(r['action_reason']))}</small>"
                    if r.get("action_reason")
                    else ""
                ),
                evidence=html.escape(evidence_summary(evidence)) if evidence else "&ndash;",
                drawn=html.escape(drawn),
            )
        )
    body = "".join(rows) or "<tr><td colspan='14'>No reports yet: a window is still filling.</td></tr>"
    status = html.escape(
        f"{health['windows_reported']} windows reported of {health['windows_done']} closed, "
        f"{health['rows_pending']} rows in the open window (of {health['window_rows']}), "
        f"{health['reports_rendered']} Evidently reports drawn, "
        f"{sum(1 for r in reports if (r.get('evidently_report') or {}).get('drawn') == 'light')} of the "
        "windows listed have a light page of their own (they closed faster than reports are drawn; drifted "
        f"windows are drawn first; none is skipped; {health.get('windows_drawn_later', 0)} light windows "
        f"drawn in full since the monitor caught up), {health['reports_pending']} windows waiting for their "
        f"report, last report at {health['last_report_at'] or '-'} (wall clock)"
    )
    b = html.escape(base)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>churnstream drift reports</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; width: 100%; font-size: 14px; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 6px 8px; text-align: left; vertical-align: top; }}
th {{ background: #f4f4f4; }} td.num {{ text-align: right; }}
tr.drift td.verdict {{ color: #b00020; font-weight: bold; }} tr.ok td.verdict {{ color: #1b7f3b; }}
#headline {{ font-size: 18px; padding: 10px 14px; border: 1px solid #ccc; background: #f8f8f8; }}
#headline.retrain {{ background: #fde7e9; border-color: #b00020; }}
#headline.watch {{ background: #fff4ce; border-color: #e0c060; }}
</style></head><body>
<h1>churnstream drift reports</h1>
{headline(reports)}
<p id="status">{status} &middot; <a href="{b}/alerts">top alerts</a> &middot; <a href="{b}/report">daily
report</a> &middot; <a href="{b}/health">health</a> &middot; <a href="{b}/metrics">metrics</a></p>
<table id="drift-reports"><thead><tr>
<th>window</th><th>window (event time)</th><th>rows</th><th>model</th><th>dataset drift</th>
<th>drift share</th><th>drifted columns</th><th>prediction drift</th><th>concept drift</th>
<th>ROC-AUC estimated / realized</th><th>action (why)</th><th>champion vs shadow (realized)</th><th>links</th>
<th>Evidently report</th></tr></thead>
<tbody>{body}</tbody></table>
</body></html>
"""


_STYLE = """<style>
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; font-size: 14px; margin-bottom: 1.5em; }
th, td { border-bottom: 1px solid #ddd; padding: 6px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; } p.error { color: #b00020; }
</style>"""


def _nav(base: str) -> str:
    b = html.escape(base)
    return (
        f"<p><a href='{b}/'>drift reports</a> &middot; <a href='{b}/alerts'>top alerts</a> &middot; "
        f"<a href='{b}/report'>daily report</a></p>"
    )


def render_alerts_page(
    month: str | None,
    alerts: list[dict[str, Any]],
    *,
    scanned: int,
    error: str | None = None,
    base: str = "",
) -> str:
    """The current top alerts: ``alerts`` (of event-time ``month``, highest priority first) as a work list,
    one row per customer with what a retention team acts on; ``scanned`` says how many were looked at.

    >>> page = render_alerts_page("2024-05", [{"customer_id": "C<1>", "as_of": "2024-05-02T00:00:00Z",
    ...     "churn_probability": 0.8, "value_at_risk": 120.0, "priority": 120.0, "policy": "value_at_risk",
    ...     "holdout": False, "top_reasons": [{"feature": "recency_days", "value": 60, "contribution": 0.9}],
    ...     "recommended_actions": ["call"]}], scanned=7)
    >>> "data-customer='C&lt;1&gt;'" in page, "recency_days=60 (+0.9)" in page, "of 7 alerts" in page
    (True, True, True)
    >>> "picked by value_at_risk" in page, "<th>priority" in page  # priority is the value at risk here
    (True, False)
    """
    esc = html.escape
    # the policy is one for all, nearly always: said once; priority gets a column when it is not the value
    policies = sorted({str(a.get("policy") or "-") for a in alerts})
    own_priority = any(a.get("priority") != a.get("value_at_risk") for a in alerts)
    rows = []
    for rank, a in enumerate(alerts, 1):
        reasons = reasons_text(a)
        holdout = bool(a.get("holdout"))
        rows.append(
            f"<tr data-customer='{esc(str(a.get('customer_id')))}' "
            f"data-priority='{esc(str(a.get('priority')))}'>"
            f"<td class='num'>{rank}</td><td>{esc(str(a.get('customer_id')))}</td>"
            f"<td>{esc(str(a.get('as_of')))}</td><td class='num'>{_fixed(a.get('churn_probability'), 3)}</td>"
            f"<td>{esc(str(a.get('risk_category') or '-'))}</td>"
            f"<td class='num'>{_fixed(a.get('value_at_risk'), 2)}</td>"
            + (f"<td class='num'>{_fixed(a.get('priority'), 2)}</td>" if own_priority else "")
            + f"<td>{'held back: do not contact' if holdout else 'no'}</td>"
            f"<td>{esc(reasons) or '-'}</td>"
            f"<td>{esc('; '.join(str(x) for x in a.get('recommended_actions') or [])) or '-'}</td></tr>"
        )
    if error:
        status = f"<p class='error' id='status'>{esc(error)}</p>"
    elif month is None:
        status = f"<p id='status'>No alerts yet (of {scanned:,} alerts read).</p>"
    else:
        status = (
            f"<p id='status'>The {len(alerts)} alerts of highest priority in {esc(month)} (event time), "
            f"one per customer, of {scanned:,} alerts read from the end of the alerts topic; picked by "
            f"{esc('; '.join(policies))}. Value at risk: what the customer is expected to bring over the "
            "horizon, times the churn probability, in the unit of order amounts.</p>"
        )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>churnstream top alerts</title>
{_STYLE}</head><body>
<h1>Top alerts{"" if month is None else " of " + esc(month)}</h1>
{_nav(base)}
{status}
<table id="top-alerts"><thead><tr><th>#</th><th>customer</th><th>as of</th><th>churn probability</th>
<th>risk</th><th>value at risk</th>{"<th>priority</th>" if own_priority else ""}<th>holdout</th>
<th>top reasons</th><th>actions</th></tr></thead><tbody>{"".join(rows)}</tbody></table>
</body></html>
"""


def render_report_page(
    days: list[dict[str, Any]], *, day: str | None = None, error: str | None = None, base: str = ""
) -> str:
    """The daily report: the latest days (newest first, each linking to its own view), or with ``day`` every
    figure of that day; ``days`` are :meth:`DailyReport.days`' records, as ``churnstream report --json``.

    >>> from churnstream.monitoring.daily import DailyReport
    >>> report = DailyReport()
    >>> report.add_prediction({"as_of": "2024-05-01T10:00:00Z", "trigger": "event", "risk_category": "HIGH",
    ...     "churn_probability": 0.8}, latency_ms=12.0)
    >>> page = render_report_page(report.days())
    >>> "href='/report?day=2024-05-01'" in page, "field='predictions.by_risk.HIGH' data-value='1'" in page
    (True, True)
    >>> one = render_report_page(report.days(), day="2024-05-01")
    >>> "data-field='scoring_latency_ms.p50' data-value='12.0'" in one
    True
    """
    esc = html.escape
    if error:
        body = f"<p class='error' id='status'>{esc(error)}</p>"
    elif day is not None:
        found = [d for d in days if d.get("day") == day]
        if not found:
            body = f"<p id='status'>Nothing happened on {esc(day)}.</p>"
        else:
            facts = "".join(
                f"<tr><th>{esc(figure_label(name))}<br><small><code>{esc(name)}</code></small></th>"
                f"{_cell(name, value)}</tr>"
                for name, value in _flatten(found[0])
            )
            body = f"<p id='status'>Every figure of {esc(day)}.</p><table id='day'>{facts}</table>"
    elif not days:
        body = "<p id='status'>No predictions, alerts, outcomes or dead letters yet.</p>"
    else:
        head = "".join(f"<th>{esc(label)}</th>" for _, label in _REPORT_COLUMNS)
        rows = []
        for d in list(reversed(days))[:REPORT_DAYS]:
            flat = dict(_flatten(d))
            name = esc(str(d.get("day")))
            cells = "".join(_cell(field, flat.get(field, 0)) for field, _ in _REPORT_COLUMNS[1:])
            link = f"<a href='{esc(base)}/report?day={name}'>{name}</a>"
            rows.append(f"<tr data-day='{name}'><td>{link}</td>{cells}</tr>")
        body = (
            f"<p id='status'>The latest {len(rows)} of {len(days)} days (UTC days of event time), newest "
            "first; a day's link shows all its figures.</p>"
            f"<table id='days'><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        )
    title = "Daily report" + ("" if day is None else f" of {esc(day)}")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>churnstream {title.lower()}</title>
{_STYLE}</head><body>
<h1>{title}</h1>
{_nav(base)}
{body}
<p>What each figure means: <code>churnstream report --help</code> and docs/monitor.md; the same records
as JSON: <a href="{esc(base)}/report.json{"" if day is None else "?day=" + esc(day)}">report.json</a>.</p>
</body></html>
"""


REPORT_DAYS = 31  # days listed on the report page; older ones by ?day=


def figure_label(name: str) -> str:
    """A daily report figure's name as people read it (its JSON path stays beside it on the page).

    >>> figure_label("outcomes.realized_roc_auc_so_far"), figure_label("alerts.outcomes.contacted.labelled")
    ('outcomes: realized ROC-AUC so far', 'alerts: outcomes: contacted: labelled')
    >>> figure_label("scoring_latency_ms.p50")
    'scoring latency (ms): p50'
    """
    return ": ".join(
        part.replace("roc_auc", "ROC-AUC").replace("_ms", " (ms)").replace("_", " ")
        for part in name.split(".")
    )


_REPORT_COLUMNS = [
    ("day", "day"),
    ("predictions.total", "predictions"),
    ("predictions.by_trigger.event", "event"),
    ("predictions.by_trigger.sweep", "sweep"),
    ("predictions.by_risk.HIGH", "HIGH"),
    ("predictions.by_risk.MEDIUM", "MEDIUM"),
    ("predictions.by_risk.LOW", "LOW"),
    ("predicted_churn_rate", "predicted churn rate"),
    ("alerts.sent", "alerts"),
    ("alerts.holdout", "held back"),
    ("alerts.value_at_risk", "value at risk"),
    ("outcomes.labelled", "labelled"),
    ("outcomes.churned", "churned"),
    ("outcomes.realized_roc_auc_so_far", "ROC-AUC so far"),
    ("dead_letters.total", "dead letters"),
    ("scoring_latency_ms.p50", "latency p50 ms"),
    ("scoring_latency_ms.p95", "p95 ms"),
    ("scoring_latency_ms.p99", "p99 ms"),
]


def _flatten(record: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """``(dotted name, value)`` of every figure of a day's record; dead letters also get their total."""
    out: list[tuple[str, Any]] = []
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            if name == "dead_letters":
                out.append(("dead_letters.total", sum(value.values())))
            out.extend(_flatten(value, name + "."))
        elif name != "day":
            out.append((name, value))
    return out


def _cell(name: str, value: Any) -> str:
    shown = "-" if value is None else f"{value:,}" if isinstance(value, int) else str(value)
    return (
        f"<td class='num' data-field='{html.escape(name)}' "
        f"data-value='{html.escape(json.dumps(value))}'>{html.escape(shown)}</td>"
    )


def _fixed(value: Any, digits: int) -> str:
    return f"{value:,.{digits}f}" if isinstance(value, (int, float)) else "-"


BACK_TO_LIST = "<a id='churnstream-back' href='./'>&larr; all drift windows</a>"
"""A window's page links back to the list: served at ``<base>/reports/<id>``, ``./`` is the list
``<base>/reports/`` behind any proxy path, with no base to pass down to where pages are rendered."""


def window_banner(message: dict[str, Any]) -> str:
    """One line naming a window and its verdict, shown above its Evidently report."""
    drift = bool(message.get("dataset_drift"))
    columns = ", ".join(message.get("drifted_columns") or []) or "none"
    action = f", action {message['action']}" if message.get("action") else ""
    if message.get("action") and message.get("action_reason"):
        action += f" ({message['action_reason']})"
    evidence = f" Evidence: {evidence_summary(message['evidence'])}." if message.get("evidence") else ""
    concept = message.get("concept_drift") or {}
    if concept.get("detected"):
        action = f", concept drift {concept_text(concept)}{action}"
    return (
        f"Drift window {message.get('report_id')}: {message.get('window_start')} .. "
        f"{message.get('window_end')} (event time), {int(message.get('rows') or 0):,} predictions, model "
        f"{message.get('model_version')}: {'DRIFT' if drift else 'no drift'} "
        f"(share {float(message.get('drift_share') or 0.0):.0%}: {columns}){action}.{evidence}"
    )


def concept_text(concept: dict[str, Any] | None) -> str:
    """The concept drift detector's finding in words.

    >>> concept_text({"detected": True, "at": "1998-03-23T18:36:17Z", "error_mean_before": 0.3012,
    ...               "error_mean": 0.3662})
    "detected at 1998-03-23T18:36:17Z: the online model's error rose from 0.301 to 0.366"
    >>> concept_text({"detected": False}), concept_text(None)
    ('none detected', '-')
    """
    if not concept:
        return "-"
    if not concept.get("detected"):
        return "none detected"
    shift = error_shift(concept)
    return f"detected at {concept.get('at')}" + ("" if shift is None else f": {shift[2]}")


def evidence_summary(evidence: dict[str, Any]) -> str:
    """One line of a report's ``evidence``: the versions, the labels, the verdict and the cumulative ROC-AUC
    of each with the difference and its interval."""
    cumulative = evidence.get("cumulative") or {}
    auc = cumulative.get("roc_auc") or {}
    low, high = auc.get("interval") or (None, None)
    return (
        f"shadow {evidence.get('shadow_version')} vs champion {evidence.get('champion_version') or '-'} on "
        f"{int(cumulative.get('labels') or 0):,} labels: {cumulative.get('verdict') or '-'} (ROC-AUC "
        f"shadow {_fixed(auc.get('shadow'), 3)}, champion {_fixed(auc.get('champion'), 3)}, difference "
        f"{_diff(auc.get('difference'))} [{_diff(low)}, {_diff(high)}])"
    )


_EVIDENCE_METRICS = (("roc_auc", "ROC-AUC"), ("pr_auc", "PR-AUC"), ("alert_value", "alert value"))


def _ends_by(end: Any, t: int) -> bool:
    """Whether a window ending at ``end`` (its message's text) ends by time ``t``."""
    try:
        return parse_time(end) <= t
    except ChurnstreamError:
        return False


def _evidence_section(message: dict[str, Any]) -> str:
    """The window page's evidence table: cumulative, then each week of labelled predictions that overlaps
    the window (or, while none is labelled yet, the latest labelled week)."""
    evidence = message.get("evidence")
    if not evidence:
        return ""
    esc = html.escape
    weeks = list(evidence.get("windows") or [])
    try:
        start, end = parse_time(message.get("window_start")), parse_time(message.get("window_end"))
        own = [w for w in weeks if w.get("start", 0) <= end and w.get("end", 0) > start]
    except ChurnstreamError:
        own = []
    scopes = [("cumulative", evidence.get("cumulative") or {})]
    scopes += [(f"this window's week {_week(w)}", w) for w in own]
    if not own and weeks:
        after = evidence.get("after")  # predictions up to both models' training end never count
        never = after is not None and _ends_by(message.get("window_end"), int(after))
        why = (
            "this window's predate both models' training: they never count"
            if never
            else "none of this window's yet"
        )
        scopes.append((f"latest labelled week {_week(weeks[-1])} ({why})", weeks[-1]))
    head = "".join(
        f"<th>{label} champion</th><th>{label} shadow</th><th>{label} difference [interval]</th>"
        for _, label in _EVIDENCE_METRICS
    )
    rows = []
    for scope, found in scopes:
        cells = ""
        for metric, _ in _EVIDENCE_METRICS:
            m = found.get(metric) or {}
            low, high = m.get("interval") or (None, None)
            cells += (
                f"<td class='num' data-field='{metric}.champion'>{_fixed(m.get('champion'), 3)}</td>"
                f"<td class='num' data-field='{metric}.shadow'>{_fixed(m.get('shadow'), 3)}</td>"
                f"<td class='num'>{_diff(m.get('difference'))} [{_diff(low)}, {_diff(high)}]</td>"
            )
        rows.append(
            f"<tr><td>{esc(scope)}</td><td class='num'>{int(found.get('labels') or 0):,} "
            f"({int(found.get('positives') or 0):,} churned)</td>{cells}"
            f"<td class='verdict'>{esc(str(found.get('verdict') or '-'))}</td></tr>"
        )
    return (
        f"<h2>Champion {esc(str(evidence.get('champion_version') or '-'))} vs shadow "
        f"{esc(str(evidence.get('shadow_version')))}</h2>\n"
        "<p>Realized on the same labelled predictions (batch probabilities); the difference is the shadow's "
        "minus the champion's, with its bootstrap interval; the alert value is the alert policy replayed on "
        "each model's priorities.</p>\n"
        f"<table id='evidence'><thead><tr><th>labelled predictions</th><th>labels</th>{head}"
        f"<th>verdict</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _week(found: dict[str, Any]) -> str:
    if found.get("start") is None or found.get("end") is None:
        return ""
    return f"{format_time(int(found['start']))} .. {format_time(int(found['end']))}"


def _diff(value: Any) -> str:
    return f"{value:+.3f}" if isinstance(value, (int, float)) else "-"


def render_window_page(message: dict[str, Any], *, note: str) -> str:
    """The page of one window whose full Evidently report was not drawn: its bounds, verdict, every column's
    drift test, its performance and advice, and ``note`` saying why there is no full report."""
    esc = html.escape
    tests = []
    for name, test in sorted((message.get("columns") or {}).items()):
        tests.append(_test_row(name, test))
    if message.get("prediction_drift"):
        tests.append(_test_row("churn_probability (prediction)", message["prediction_drift"]))
    facts = [
        ("window (event time)", f"{message.get('window_start')} .. {message.get('window_end')}"),
        ("predictions", f"{int(message.get('rows') or 0):,}"),
        ("reference rows", f"{int(message.get('reference_rows') or 0):,}"),
        ("model version", str(message.get("model_version", ""))),
        ("dataset drift", "DRIFT" if message.get("dataset_drift") else "no drift"),
        ("share of drifted columns", f"{float(message.get('drift_share') or 0.0):.0%}"),
        ("concept drift", concept_text(message.get("concept_drift"))),
        ("action", str(message.get("action") or "-")),
        ("why", str(message.get("action_reason") or "-")),
        ("estimated performance", _performance(message.get("estimated_performance"))),
        ("realized performance", _performance(message.get("realized_performance"))),
    ]
    if message.get("evidence"):
        facts.append(("champion vs shadow", evidence_summary(message["evidence"])))
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in facts)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>drift window {esc(str(message.get("report_id")))}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; font-size: 14px; margin-bottom: 1.5em; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 6px 10px; text-align: left; }}
th {{ background: #f4f4f4; }} td.drift {{ color: #b00020; font-weight: bold; }}
#churnstream-note {{ background: #fff4ce; border: 1px solid #e0c060; padding: 10px 14px; }}
</style></head><body>
<p>{BACK_TO_LIST}</p>
<h1>Drift window {esc(str(message.get("report_id")))}</h1>
<p id="churnstream-note">{esc(note)}</p>
<table id="window">{rows}</table>
<h2>Drift test of each column</h2>
<table id="columns"><thead><tr><th>column</th><th>test</th><th>score</th><th>rule</th><th>drift</th>
</tr></thead><tbody>{"".join(tests)}</tbody></table>
{_evidence_section(message)}
</body></html>
"""


def _test_row(name: str, test: dict[str, Any]) -> str:
    drifted = bool(test.get("drifted"))
    return (
        f"<tr><td>{html.escape(name)}</td><td>{html.escape(str(test.get('method') or '-'))}</td>"
        f"<td>{_number(test.get('score'))}</td><td>{html.escape(drift_rule(test))}</td>"
        f"<td class='{'drift' if drifted else 'ok'}'>{'drift' if drifted else 'no drift'}</td></tr>"
    )


def drift_rule(test: dict[str, Any]) -> str:
    """When a column's score means drift: a p-value *below* its threshold, a distance *at or above* it.

    >>> drift_rule({"method": "K-S p_value", "threshold": 0.05})
    'drift if p-value <= 0.05'
    >>> drift_rule({"method": "Wasserstein distance (normed)", "threshold": 0.1})
    'drift if distance >= 0.1'
    """
    threshold, method = _number(test.get("threshold")), str(test.get("method") or "")
    if "p_value" in method:  # K-S flags a p-value at its threshold too (monitoring.stattests)
        return f"drift if p-value {'<=' if method.startswith('K-S') else '<'} {threshold}"
    return f"drift if distance >= {threshold}"


def _number(value: Any) -> str:
    return "-" if value is None else f"{float(value):.4g}"


def _interval(performance: dict[str, Any]) -> str:
    """`` [lower, upper]`` of a performance, or nothing without both ends."""
    if performance.get("lower") is None or performance.get("upper") is None:
        return ""
    return f" [{float(performance['lower']):.3f}, {float(performance['upper']):.3f}]"


def _performance(performance: dict[str, Any] | None) -> str:
    if not performance or performance.get("value") is None:
        return "-"
    text = f"{performance.get('metric', 'roc_auc')} {float(performance['value']):.3f}{_interval(performance)}"
    calibrated = performance.get("calibrated_on") or {}
    if calibrated.get("labels"):
        text += f" (probabilities read through {int(calibrated['labels']):,} labels)"
    if performance.get("labels") is not None:
        text += (
            f" on {performance['labels']} labels of {windows_named(performance)} from "
            f"{performance.get('window_start')} to "
            f"{performance.get('window_end')}"
        )
    return text
