"""The drift monitor's report list page: one row per window with its verdict and report, newest first.

>>> page = render_report_list([], {"windows_reported": 0, "windows_done": 0, "rows_pending": 5,
...     "window_rows": 10, "reports_rendered": 0, "windows_merged": 0, "reports_pending": 0,
...     "last_report_at": None})
>>> "No reports yet" in page, "5 rows in the open window (of 10)" in page
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
            drawn = "not drawn (error)"
        elif evidently.get("shared"):
            drawn = f"shared by {evidently.get('windows')} windows ({evidently.get('window')} of them)"
        else:
            drawn = "own"
        rows.append(
            "<tr class='{cls}'>"
            "<td><a href='/reports/{rid}'>{rid}</a></td>"
            "<td>{start}<br>{end}</td><td class='num'>{rows}</td><td>{model}</td>"
            "<td class='verdict'>{verdict}</td><td class='num'>{share:.0%}</td><td>{cols}</td>"
            "<td>{pred}</td><td>{concept}</td><td class='num'>{auc}</td>"
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
                drawn=html.escape(drawn),
            )
        )
    body = "".join(rows) or "<tr><td colspan='12'>No reports yet: a window is still filling.</td></tr>"
    status = html.escape(
        f"{health['windows_reported']} windows reported of {health['windows_done']} closed, "
        f"{health['rows_pending']} rows in the open window (of {health['window_rows']}), "
        f"{health['reports_rendered']} Evidently reports drawn, "
        f"{health['windows_merged']} windows sharing a report with others (they closed faster than "
        f"reports are drawn; none is skipped), {health['reports_pending']} windows waiting for their "
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
<th>AUC (blend)</th><th>links</th><th>Evidently report</th></tr></thead>
<tbody>{body}</tbody></table>
</body></html>
"""
