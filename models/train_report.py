"""What a training run reports: split and threshold summaries, the held-out table, the model card.

>>> print(summary_table({"chosen": "m", "splits": {"test": {"rows": 10, "cutoffs": 2, "from": "a",
...     "to": "b", "churn_rate": 0.5}}, "metrics": {"candidates": {"m": {"roc_auc": 0.75}}, "baselines": {}}},
...     "v1", promoted=False))
model v1 (m)
held-out test: 10 rows, 2 cutoffs a .. b, churn rate 0.500
model                    role      ROC-AUC  PR-AUC   Brier     ECE  fit s
m*                       candidate   0.750       -       -       -      -
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


def summary_table(metadata: dict[str, Any], version: str, *, promoted: bool) -> str:
    """The held-out comparison as a plain-text table."""
    test = metadata["splits"]["test"]
    lines = [
        f"model {version} ({metadata['chosen']}){' promoted to current' if promoted else ''}",
        f"held-out test: {test['rows']} rows, {test['cutoffs']} cutoffs {test['from']} .. {test['to']}, "
        f"churn rate {test['churn_rate']:.3f}",
        f"{'model':<24} {'role':<9} {'ROC-AUC':>7} {'PR-AUC':>7} {'Brier':>7} {'ECE':>7} {'fit s':>6}",
    ]
    for name, role, r in metrics_rows(metadata):
        mark = "*" if name == metadata["chosen"] else " "
        lines.append(
            f"{name + mark:<24} {role:<9} {_f(r.get('roc_auc')):>7} {_f(r.get('pr_auc')):>7} "
            f"{_f(r.get('brier')):>7} {_f(r.get('ece')):>7} {r.get('fit_seconds', '-'):>6}"
        )
    return "\n".join(lines)


def model_card(metadata: dict[str, Any]) -> str:
    """A short Markdown model card (``{version}`` is filled in by the registry)."""
    m, th = metadata, metadata["thresholds"]
    metric_rows = [
        f"| {name}{' (chosen)' if name == m['chosen'] else ''} | {role} | {_f(r.get('roc_auc'))} | "
        f"{_f(r.get('pr_auc'))} | {_f(r.get('brier'))} | {_f(r.get('ece'))} |"
        for name, role, r in metrics_rows(m)
    ]
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
        "**Held-out evaluation** (each model fitted on train, calibrated on calibration, scored on test; "
        f"chosen by {SELECTION_METRIC}):",
        "",
        "| model | role | ROC-AUC | PR-AUC | Brier | ECE |",
        "|---|---|---|---|---|---|",
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
