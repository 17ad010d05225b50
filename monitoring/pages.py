"""The drift monitor's own pages: the report list (one row per window, newest first), the page of a window
whose full Evidently report was not drawn, and the note above a drawn one; each names its window.

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
"""

from __future__ import annotations

import html
from typing import Any


def render_report_list(reports: list[dict[str, Any]], health: dict[str, Any]) -> str:
    """The report list page: one row per window with its rows, verdict and report, newest first."""
    rows = []
    for r in reversed(reports):
        rid = html.escape(str(r.get("report_id", "")))
        concept = r.get("concept_drift") or {}
        prediction = r.get("prediction_drift") or {}
        auc = (r.get("model_auc") or {}).get("blend")
        drift = bool(r.get("dataset_drift"))
        evidently = r.get("evidently_report") or {}
        if evidently.get("error"):
            drawn = "not drawn (error): light page"
        elif evidently.get("shared"):  # reports of monitors before one run per window
            drawn = f"shared by {evidently.get('windows')} windows ({evidently.get('window')} of them)"
        elif evidently.get("drawn") == "light":
            drawn = "light page (full report not drawn)"
        else:
            drawn = "full report"
        if r.get("evidently_run"):
            drawn += " \u00b7 Evidently run " + str(r["evidently_run"])[:8]
        rows.append(
            "<tr class='{cls}'>"
            "<td><a href='/reports/{rid}'>{rid}</a></td>"
            "<td>{start}<br>{end}</td><td class='num'>{rows}</td><td>{model}</td>"
            "<td class='verdict'>{verdict}</td><td class='num'>{share:.0%}</td><td>{cols}</td>"
            "<td>{pred}</td><td>{concept}</td><td class='num'>{auc}</td><td>{action}</td>"
            "<td><a href='/reports/{rid}'>HTML</a> <a href='/reports/{rid}.json'>JSON</a></td>"
            "<td class='drawn'>{drawn}</td></tr>".format(
                cls="drift" if drift else "ok",
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
                auc="&ndash;" if auc is None else f"{auc:.3f}",
                action=html.escape(str(r.get("action") or "")) or "&ndash;",
                drawn=html.escape(drawn),
            )
        )
    body = "".join(rows) or "<tr><td colspan='13'>No reports yet: a window is still filling.</td></tr>"
    status = html.escape(
        f"{health['windows_reported']} windows reported of {health['windows_done']} closed, "
        f"{health['rows_pending']} rows in the open window (of {health['window_rows']}), "
        f"{health['reports_rendered']} Evidently reports drawn, "
        f"{sum(1 for r in reports if (r.get('evidently_report') or {}).get('drawn') == 'light')} of the "
        "windows listed have a light page of their own (they closed faster than reports are drawn; drifted "
        f"windows are drawn first; none is skipped), {health['reports_pending']} windows waiting for their "
        f"report, last report at {health['last_report_at'] or '-'}"
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>churnstream drift reports</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; width: 100%; font-size: 14px; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 6px 8px; text-align: left; vertical-align: top; }}
th {{ background: #f4f4f4; }} td.num {{ text-align: right; }}
tr.drift td.verdict {{ color: #b00020; font-weight: bold; }} tr.ok td.verdict {{ color: #1b7f3b; }}
</style></head><body>
<h1>churnstream drift reports</h1>
<p id="status">{status} &middot; <a href="/health">health</a> &middot; <a href="/metrics">metrics</a></p>
<table id="drift-reports"><thead><tr>
<th>window</th><th>window (event time)</th><th>rows</th><th>model</th><th>dataset drift</th>
<th>drift share</th><th>drifted columns</th><th>prediction drift</th><th>concept drift</th>
<th>AUC (blend)</th><th>action</th><th>links</th><th>Evidently report</th></tr></thead>
<tbody>{body}</tbody></table>
</body></html>
"""


def window_banner(message: dict[str, Any]) -> str:
    """One line naming a window and its verdict, shown above its Evidently report."""
    drift = bool(message.get("dataset_drift"))
    columns = ", ".join(message.get("drifted_columns") or []) or "none"
    action = f", action {message['action']}" if message.get("action") else ""
    return (
        f"Drift window {message.get('report_id')}: {message.get('window_start')} .. "
        f"{message.get('window_end')} (event time), {int(message.get('rows') or 0):,} predictions, model "
        f"{message.get('model_version')}: {'DRIFT' if drift else 'no drift'} "
        f"(share {float(message.get('drift_share') or 0.0):.0%}: {columns}){action}."
    )


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
        ("action", str(message.get("action") or "-")),
        ("estimated performance", _performance(message.get("estimated_performance"))),
        ("realized performance", _performance(message.get("realized_performance"))),
    ]
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
<h1>Drift window {esc(str(message.get("report_id")))}</h1>
<p id="churnstream-note">{esc(note)}</p>
<table id="window">{rows}</table>
<h2>Drift test of each column</h2>
<table id="columns"><thead><tr><th>column</th><th>test</th><th>score</th><th>threshold</th><th>drift</th>
</tr></thead><tbody>{"".join(tests)}</tbody></table>
</body></html>
"""


def _test_row(name: str, test: dict[str, Any]) -> str:
    drifted = bool(test.get("drifted"))
    return (
        f"<tr><td>{html.escape(name)}</td><td>{html.escape(str(test.get('method') or '-'))}</td>"
        f"<td>{_number(test.get('score'))}</td><td>{_number(test.get('threshold'))}</td>"
        f"<td class='{'drift' if drifted else 'ok'}'>{'drift' if drifted else 'no drift'}</td></tr>"
    )


def _number(value: Any) -> str:
    return "-" if value is None else f"{float(value):.4g}"


def _performance(performance: dict[str, Any] | None) -> str:
    if not performance or performance.get("value") is None:
        return "-"
    text = f"{performance.get('metric', 'roc_auc')} {float(performance['value']):.3f}"
    if performance.get("lower") is not None and performance.get("upper") is not None:
        text += f" [{float(performance['lower']):.3f}, {float(performance['upper']):.3f}]"
    if performance.get("labels") is not None:
        text += (
            f" on {performance['labels']} labels of the window from {performance.get('window_start')} to "
            f"{performance.get('window_end')}"
        )
    return text
