"""Champion against shadow on the same labelled predictions: the evidence a promotion rests on (#24).

Every outcome of a prediction made while a model was in shadow carries both the current model's batch
probability and the shadow's (``shadow_probability``, the shadow's batch probability: the online learner
and its blend belong to the serving path, so the batch models are compared like for like). On those
paired rows :func:`compare` computes, for each model, the ROC-AUC, the PR-AUC (average precision) and the
*alert value* — the alert policy replayed on the model's own priorities: in each calendar month of
``as_of``, the top ``share`` of the month's predictions by priority (probability, times the customer's
value over the horizon where known) are the alerts, and the alert value is the share of them that churned
(value-weighted where values are known) — and a percentile bootstrap interval on each paired difference
(shadow minus champion, the same resampled rows for both). The bootstrap resamples whole customers when
their ids are given: a customer's predictions (one per event and one per sweep) share their features, the
models' errors and mostly their label, so resampling single rows makes the interval several times too
narrow, and two equally good models would read ``better`` or ``worse`` in about half of all shops.

Only labels that are final count (:func:`evidence_from_outcomes`): a "stayed" label comes with the
customer's next order, days after a prediction, a "churned" one only a horizon plus the allowed lateness
after it. Counting every outcome read so far pairs old churners with non-churners of every age, and any
drift of a model's scores over time then reads as a difference in ranking.

The verdict reads the ROC-AUC difference: ``better`` when its whole interval lies above ``margin``,
``worse`` when it lies below zero, ``undecided`` otherwise, and ``too few labels`` under ``min_labels``
labels or with one class only.

>>> rng = np.random.default_rng(0)
>>> y = (rng.random(2000) < 0.3).astype(int)
>>> champion = np.clip(0.3 + 0.1 * (y - 0.3) + rng.normal(0, 0.2, 2000), 0, 1)
>>> shadow = np.clip(0.3 + 0.4 * (y - 0.3) + rng.normal(0, 0.2, 2000), 0, 1)
>>> found = compare(y, champion, shadow, samples=100)
>>> found["verdict"], found["roc_auc"]["shadow"] > found["roc_auc"]["champion"]
('better', True)
>>> compare(y, shadow, champion, samples=100)["verdict"]
'worse'
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

METRICS = ("roc_auc", "pr_auc", "alert_value")
MONTH_MS = 30 * 86_400_000


def roc_auc(y: np.ndarray, p: np.ndarray) -> float | None:
    """ROC-AUC by ranks (ties share their mean rank); None with one class only.

    >>> roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    0.75
    """
    positives = int(y.sum())
    negatives = len(y) - positives
    if positives == 0 or negatives == 0:
        return None
    order = np.argsort(p, kind="mergesort")
    ranks = np.empty(len(p), dtype=float)
    sorted_p = p[order]
    # mean rank of each group of ties
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_p)) + 1]
    ends = np.r_[starts[1:], len(p)]
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return float((ranks[y == 1].sum() - positives * (positives + 1) / 2.0) / (positives * negatives))


def pr_auc(y: np.ndarray, p: np.ndarray) -> float | None:
    """Average precision (the PR-AUC scikit-learn reports); None without positives.

    >>> pr_auc(np.array([0, 1, 1]), np.array([0.1, 0.9, 0.5]))
    1.0
    """
    positives = int(y.sum())
    if positives == 0:
        return None
    order = np.argsort(-p, kind="mergesort")
    ys, ps = y[order], p[order]
    last = np.r_[np.flatnonzero(np.diff(ps)), len(ps) - 1]  # the last row of each group of ties
    tp = np.cumsum(ys)[last]
    precision = tp / (last + 1.0)
    recall_step = np.diff(np.r_[0, tp]) / positives
    return float((precision * recall_step).sum())


def alert_value(
    y: np.ndarray, priority: np.ndarray, months: np.ndarray, value: np.ndarray, *, share: float
) -> float | None:
    """The alert policy replayed: in each month the top ``share`` of the predictions by ``priority`` are
    alerted; the value of the churners among them over the value of all alerted (their count when every
    value is 1).

    >>> alert_value(np.array([1, 0, 0, 1]), np.array([0.9, 0.8, 0.1, 0.2]), np.zeros(4), np.ones(4),
    ...             share=0.5)
    0.5
    """
    picked_value = 0.0
    churned_value = 0.0
    for month in np.unique(months):
        idx = np.flatnonzero(months == month)
        k = max(1, int(round(share * len(idx))))
        top = idx[np.argsort(-priority[idx], kind="mergesort")[:k]]
        picked_value += float(value[top].sum())
        churned_value += float((value[top] * y[top]).sum())
    if picked_value <= 0.0:
        return None
    return churned_value / picked_value


def compare(
    labels: Sequence[int] | np.ndarray,
    champion: Sequence[float] | np.ndarray,
    shadow: Sequence[float] | np.ndarray,
    *,
    as_of: Sequence[int] | np.ndarray | None = None,
    values: Sequence[float | None] | np.ndarray | None = None,
    share: float = 0.1,
    samples: int = 200,
    level: float = 0.9,
    margin: float = 0.0,
    min_labels: int = 100,
    seed: int = 0,
    groups: Sequence[Any] | np.ndarray | None = None,
) -> dict[str, Any]:
    """Champion vs shadow on paired rows (see the module docstring): each metric's value for both, the
    difference (shadow minus champion) and its bootstrap interval at ``level``, and the verdict.
    ``groups``: each row's customer; the bootstrap then draws customers, each with all their rows."""
    y = np.asarray(labels, dtype=int)
    pc = np.asarray(champion, dtype=float)
    ps = np.asarray(shadow, dtype=float)
    n = len(y)
    months = np.zeros(n, dtype=np.int64) if as_of is None else np.asarray(as_of, dtype=np.int64) // MONTH_MS
    value = (
        np.ones(n)
        if values is None
        else np.array([1.0 if v is None else float(v) for v in values], dtype=float)
    )
    metric_of: dict[str, Callable[[np.ndarray, np.ndarray], float | None]] = {
        "roc_auc": lambda idx, p: roc_auc(y[idx], p[idx]),
        "pr_auc": lambda idx, p: pr_auc(y[idx], p[idx]),
        "alert_value": lambda idx, p: alert_value(
            y[idx], p[idx] * value[idx], months[idx], value[idx], share=share
        ),
    }
    out: dict[str, Any] = {"labels": n, "positives": int(y.sum())}
    everything = np.arange(n)
    rng = np.random.default_rng(seed)
    draws = _draws(n, groups, samples, rng) if n else []
    tail = (1.0 - level) / 2.0
    for name, metric in metric_of.items():
        c = metric(everything, pc) if n else None
        s = metric(everything, ps) if n else None
        entry: dict[str, Any] = {
            "champion": _round(c),
            "shadow": _round(s),
            "difference": None,
            "interval": None,
        }
        if c is not None and s is not None:
            entry["difference"] = _round(s - c)
            diffs = []
            for idx in draws:
                dc, ds = metric(idx, pc), metric(idx, ps)
                if dc is not None and ds is not None:
                    diffs.append(ds - dc)
            if diffs:
                low, high = np.quantile(diffs, [tail, 1.0 - tail])
                entry["interval"] = [_round(float(low)), _round(float(high))]
        out[name] = entry
    out["verdict"] = verdict(out, margin=margin, min_labels=min_labels)
    return out


def _draws(n: int, groups: Sequence[Any] | np.ndarray | None, samples: int, rng: Any) -> list[np.ndarray]:
    """``samples`` bootstrap index sets of ``n`` rows: rows drawn with replacement, or, with ``groups``,
    as many groups as there are, each with all of its rows.

    >>> rng = np.random.default_rng(0)
    >>> [sorted(d.tolist()) for d in _draws(5, ["a", "b", "a", "c", "b"], 2, rng)]  # a: 0, 2; b: 1, 4
    [[1, 1, 3, 4, 4], [0, 0, 0, 2, 2, 2]]
    """
    if groups is None:
        return [rng.integers(0, n, n) for _ in range(samples)]
    codes = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)[1].ravel()
    order = np.argsort(codes, kind="stable")  # the rows of group g: order[start[g] : start[g] + size[g]]
    size = np.bincount(codes)
    start = np.r_[0, np.cumsum(size)[:-1]]
    out = []
    for _ in range(samples):
        picked = rng.integers(0, len(size), len(size))
        lengths = size[picked]
        begins = np.r_[0, np.cumsum(lengths)[:-1]]
        out.append(order[np.arange(int(lengths.sum())) + np.repeat(start[picked] - begins, lengths)])
    return out


def verdict(found: dict[str, Any], *, margin: float = 0.0, min_labels: int = 100) -> str:
    """``better``, ``worse``, ``undecided`` or ``too few labels`` from :func:`compare`'s ROC-AUC entry."""
    auc = found.get("roc_auc") or {}
    interval = auc.get("interval")
    if found.get("labels", 0) < min_labels or interval is None:
        return "too few labels"
    low, high = interval
    if low > margin:
        return "better"
    if high < 0.0:
        return "worse"
    return "undecided"


def evidence_from_outcomes(
    outcomes: Sequence[dict[str, Any]],
    *,
    shadow_version: str,
    champion_version: str | None = None,
    final_until: Mapping[int, int] | None = None,
    after: int | None = None,
    window_ms: int = 7 * 86_400_000,
    **options: Any,
) -> dict[str, Any]:
    """The evidence for ``shadow_version`` from outcome messages (as on ``churn_outcomes``, ``as_of`` in
    epoch ms): cumulative and per window of ``window_ms`` of ``as_of``. The champion's probability is an
    outcome's ``batch_probability``. An outcome counts when it carries that shadow's probability and:

    - its prediction was made by ``champion_version`` (its ``model_version``, where it names one);
    - every label of its time is final: ``as_of <= final_until[partition]`` (per partition, the event
      time up to which predictions have all their labels; no entry: none yet);
    - it was made after ``after`` (the later of the two models' training ends): a model is not judged on
      the days whose outcomes it learned from.

    ``left_out`` counts the others by reason. The bootstrap draws customers (``customer_id``) when every
    outcome names one."""
    left_out: Counter[str] = Counter()
    rows = []
    for o in outcomes:
        if o.get("shadow_model_version") != shadow_version or o.get("shadow_probability") is None:
            continue
        made_by = o.get("model_version")
        if champion_version is not None and made_by is not None and made_by != champion_version:
            left_out[f"made by {made_by}, not the champion"] += 1
        elif after is not None and o["as_of"] <= after:
            left_out["made before a model's training end"] += 1
        elif final_until is not None and o["as_of"] > final_until.get(o.get("partition", 0), o["as_of"] - 1):
            left_out["labels not all known yet"] += 1
        else:
            rows.append(o)
    rows.sort(key=lambda o: o["as_of"])
    as_of = np.array([o["as_of"] for o in rows], dtype=np.int64)
    by_customer = all(o.get("customer_id") is not None for o in rows)

    def of(part: list[dict[str, Any]], times: np.ndarray) -> dict[str, Any]:
        return compare(
            [o["label"] for o in part],
            [o["batch_probability"] for o in part],
            [o["shadow_probability"] for o in part],
            as_of=times,
            values=[o.get("customer_value") for o in part],  # the policy's priority: probability x value
            groups=[o["customer_id"] for o in part] if by_customer else None,
            **options,
        )

    windows = []
    if len(rows):
        starts = as_of // window_ms
        for start in np.unique(starts):
            idx = np.flatnonzero(starts == start)
            found = of([rows[i] for i in idx], as_of[idx])
            found["start"] = int(start * window_ms)
            found["end"] = int((start + 1) * window_ms)
            windows.append(found)
    return {
        "shadow_version": shadow_version,
        "champion_version": champion_version,
        "probabilities": "batch",
        "final_until": None if final_until is None else {str(p): t for p, t in sorted(final_until.items())},
        "after": after,
        "left_out": dict(sorted(left_out.items())),
        "cumulative": of(rows, as_of),
        "windows": windows,
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)


__all__ = ["METRICS", "alert_value", "compare", "evidence_from_outcomes", "pr_auc", "roc_auc", "verdict"]
