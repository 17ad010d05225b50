"""What a training run reports: split and threshold summaries, the held-out table, the model card.

The table shows every candidate's ranking metric on each time split it was compared on and their mean
(what selection uses), then its calibrated held-out metrics.

>>> print(summary_table({"chosen": "m", "splits": {"test": {"rows": 10, "cutoffs": 2, "from": "a",
...     "to": "b", "churn_rate": 0.5}}, "metrics": {"candidates": {"m": {"roc_auc": 0.75, "splits":
...     {"test": {"pr_auc": 0.8}}, "selection_score": 0.8}}, "baselines": {}, "splits": ["test"]}},
...     "v1", promoted=False))
model v1 (m)
held-out test: 10 rows, 2 cutoffs a .. b, churn rate 0.500
                                        pr_auc by split    held out
model                          role         test    mean   ROC-AUC  PR-AUC   Brier     ECE  fit s
m*                             candidate  0.8000  0.8000     0.750       -       -       -      -
"""

from __future__ import annotations

from typing import Any

import numpy as np

from churnstream.models.candidates import SELECTION_METRIC
from churnstream.settings import Settings
from churnstream.timefmt import format_time


def split_summary(as_of: np.ndarray, y: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
    if not mask.any():
        return {"rows": 0}
    return {
        "from": format_time(int(as_of[mask].min())),
        "to": format_time(int(as_of[mask].max())),
        "cutoffs": int(len(np.unique(as_of[mask]))),
        "rows": int(mask.sum()),
        "churn_rate": round(float(y[mask].mean()), 4),
    }


def threshold_summary(settings: Settings, y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    out: dict[str, Any] = {"high": settings.high_threshold, "medium": settings.medium_threshold}
    for name, t in (("high", settings.high_threshold), ("medium", settings.medium_threshold)):
        flagged = p >= t
        out[f"{name}_share"] = round(float(flagged.mean()), 4)
        out[f"{name}_precision"] = round(float(y[flagged].mean()), 4) if flagged.any() else None
        out[f"{name}_recall"] = round(float(flagged[y == 1].mean()), 4) if (y == 1).any() else None
    return out


def _f(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else "-"


def metrics_rows(metadata: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    m = metadata["metrics"]
    rows = [(name, "candidate", r) for name, r in m["candidates"].items()]
    rows += [(name, "baseline", r) for name, r in m["baselines"].items()]
    return rows


def _split_cells(metadata: dict[str, Any], r: dict[str, Any]) -> list[str]:
    names = metadata["metrics"].get("splits", [])
    if not names:
        return []
    by_split = r.get("splits", {})
    cells = [_f4(by_split.get(name, {}).get(SELECTION_METRIC)) for name in names]
    return [*cells, _f4(r.get("selection_score"))]


def _f4(value: Any) -> str:
    """Split scores of good candidates differ in the fourth decimal, where selection decides."""
    return f"{value:.4f}" if isinstance(value, float) else "-"


def summary_table(metadata: dict[str, Any], version: str, *, promoted: bool) -> str:
    """The comparison as a plain-text table: the plan, then one row per model."""
    test = metadata["splits"]["test"]
    plan = metadata.get("plan")
    lines = [f"model {version} ({metadata['chosen']}){' promoted to current' if promoted else ''}"]
    if plan is not None:
        lines.append(f"plan {plan['kind']}: {plan['summary']}")
        lines += [f"  not checked: {what}" for what in plan["unchecked"]]
    if test.get("rows"):
        lines.append(
            f"held-out test: {test['rows']} rows, {test['cutoffs']} cutoffs {test['from']} .. {test['to']}, "
            f"churn rate {test['churn_rate']:.3f}"
        )
    else:
        lines.append(f"no held-out period: {metadata['metrics'].get('evaluated_on', '')}")
    split_names = [name[:11] for name in metadata["metrics"].get("splits", [])]
    columns = [*split_names, "mean"] if split_names else []
    split_header = "".join(f" {name:>7}" for name in columns)
    over_splits = (SELECTION_METRIC + " by split").ljust(len(split_header)) if columns else ""
    lines += [
        f"{'':<40}{over_splits}   held out",
        f"{'model':<30} {'role':<9}{split_header}   {'ROC-AUC':>7} {'PR-AUC':>7} {'Brier':>7} {'ECE':>7} "
        f"{'fit s':>6}",
    ]
    for name, role, r in metrics_rows(metadata):
        mark = "*" if name == metadata["chosen"] else " "
        cells = "".join(
            f" {c:>{max(7, len(n))}}" for c, n in zip(_split_cells(metadata, r), columns, strict=True)
        )
        lines.append(
            f"{name + mark:<30} {role:<9}{cells}   {_f(r.get('roc_auc')):>7} {_f(r.get('pr_auc')):>7} "
            f"{_f(r.get('brier')):>7} {_f(r.get('ece')):>7} {r.get('fit_seconds', '-'):>6}"
        )
    return "\n".join(lines)


def model_card(metadata: dict[str, Any]) -> str:
    """A short Markdown model card (``{version}`` is filled in by the registry)."""
    m, th = metadata, metadata["thresholds"]
    split_names = m["metrics"].get("splits", [])
    metric_rows = [
        f"| {name}{' (chosen)' if name == m['chosen'] else ''} | {role} | "
        + "".join(f"{cell} | " for cell in _split_cells(m, r))
        + f"{_f(r.get('roc_auc'))} | {_f(r.get('pr_auc'))} | {_f(r.get('brier'))} | {_f(r.get('ece'))} |"
        for name, role, r in metrics_rows(m)
    ]
    split_columns = [f"{name} {SELECTION_METRIC}" for name in split_names] + (["mean"] if split_names else [])
    plan = m.get("plan", {"kind": "full", "summary": "", "unchecked": []})
    unchecked = [f"- {what}" for what in plan["unchecked"]] or ["- nothing left out by the plan"]
    split_rows = [
        f"| {name} | {s.get('from', '-')} | {s.get('to', '-')} | {s.get('rows', 0)} "
        f"| {s.get('churn_rate', '-')} |"
        for name, s in m["splits"].items()
    ]
    lines = [
        "# Churn model {version}",
        "",
        "**What it predicts.** The probability that a customer places no completed order in the next "
        f"{m['horizon_days']:g} days (the contract's label rule), from the features as of the scoring time. "
        f"Model: `{m['chosen']}`, calibrated ({m['calibration']['method']}) so that 0.7 means about 70 %.",
        "",
        f"**Data.** Events {m['training_window']['start']} .. {m['training_window']['end']} "
        f"({m['events']['count']} events). Population: {m['population']}. Cutoffs every "
        f"{m['cutoffs']['step_days']:g} days; customer sample fraction {m['sampling']['customer_fraction']}.",
        "",
        "| split | from | to | rows | churn rate |",
        "|---|---|---|---|---|",
        *split_rows,
        "",
        f"**Plan** `{plan['kind']}`: {plan['summary']}. Not checked:",
        "",
        *unchecked,
        "",
        f"**Evaluation** ({m['metrics'].get('evaluated_on', '')}; "
        f"chosen by {m.get('selection', SELECTION_METRIC)}):",
        "",
        "| model | role | " + "".join(f"{c} | " for c in split_columns) + "ROC-AUC | PR-AUC | Brier | ECE |",
        "|---|---|" + "---|" * len(split_columns) + "---|---|---|---|",
        *metric_rows,
        "",
        f"At the HIGH threshold {th['high']}: {th['high_share']} of held-out rows flagged, "
        f"precision {th['high_precision']}, recall {th['high_recall']}.",
        "",
        "**Limits.** Labels come from inactivity, so a customer who buys rarely by habit looks like a "
        "churner until their next order. The model knows only the behaviour in its data window; the drift "
        "monitor compares live features with the reference sample. Retrain when drift is reported or "
        "the online model starts to outweigh this one in the blend.",
        "",
    ]
    return "\n".join(lines)
