"""The model's ROC-AUC per window: estimated without labels, realized once labels are known, and the verdict.

**Estimated** (:func:`estimate_roc_auc`): confidence-based performance estimation, the method of NannyML's
CBPE (NannyML docs, "Confidence-based Performance Estimation"): when the model's probabilities are
calibrated, a prediction of probability p is a positive with probability p, so at every threshold the
expected true-positive count is the sum of p over the predictions above it and the expected
false-positive count the sum of 1 - p. Those give the expected ROC curve; its area is the estimate. The
interval is the spread of the AUC over label vectors drawn from the probabilities (seeded, so a replay
gives the same numbers). It holds while calibration holds: a change in the relation between features and
churn (concept drift) is invisible to it, and only labels show it. NannyML itself is not used: it pins
plotly < 6, lightgbm, FLAML, s3fs, gcsfs, kaleido and segment's telemetry client beside this stack.

**Realized** (:class:`LabelBook`): outcomes arrive a horizon after their predictions, carrying the
prediction's ``as_of`` and probability. The book keeps, for every closed window whose labels are not
all known yet, a histogram of its labelled predictions' probabilities by class (so the monitor's saved
state stays small); once event time has passed the window's end by the label delay (horizon plus allowed
lateness) its realized ROC-AUC is known, provided it has ``min_labels`` labels of both classes.
Windows overlap in ``as_of``: the scorer's sweep predictions reach the monitor a lateness after their
time, so a window holds its own events and the previous week's sweep ticks. A label therefore goes to
the window whose ``as_of`` values (covered by a few spans, :func:`as_of_spans`) hold its prediction's
time, not to the one whose bounds do, so each window's realized ROC-AUC is that of its own predictions.

**Action** (:func:`advise`): see its docstring.

>>> p = [0.1, 0.2, 0.3, 0.6, 0.8, 0.9]
>>> est = estimate_roc_auc(p, samples=200)
>>> est["metric"], est["value"], est["lower"] <= est["value"] <= est["upper"]
('roc_auc', 0.8393, True)
"""

from __future__ import annotations

import bisect
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from churnstream.monitoring.concept import error_shift

log = logging.getLogger(__name__)

METRIC = "roc_auc"
ACTIONS = ("none", "watch", "retrain")


def estimate_roc_auc(
    probabilities: Sequence[float] | np.ndarray,
    *,
    samples: int = 200,
    level: float = 0.95,
    seed: int = 0,
    max_rows: int = 20_000,
    calibration: Calibration | None = None,
) -> dict[str, Any] | None:
    """``{metric, value, lower, upper, calibrated_on}``: the ROC-AUC expected of calibrated
    ``probabilities`` (CBPE) and the central ``level`` interval of the AUC over ``samples`` label vectors
    drawn from them; None when fewer than two finite probabilities or no expected positive or negative.
    With ``calibration`` the probabilities are first mapped through it (:meth:`LabelBook.calibration`),
    and ``calibrated_on`` says on how many labels of how many windows; without, it is None and the estimate
    trusts the probabilities as they are.

    >>> estimate_roc_auc([0.0, 0.0, 1.0, 1.0])["value"]
    1.0
    >>> estimate_roc_auc([0.5] * 10)["value"], estimate_roc_auc([]) is None
    (0.5, True)
    """
    p = np.asarray(probabilities, dtype="float64")
    p = np.clip(p[np.isfinite(p)], 0.0, 1.0)
    if p.size > max_rows:  # an even sample: the estimate of a large window needs no more
        p = p[np.linspace(0, p.size - 1, max_rows).astype(np.int64)]
    if p.size < 2:
        return None
    if calibration is not None:
        p = calibration.apply(p)
    value = expected_roc_auc(p)
    if value is None:
        return None
    lower = upper = None
    if samples > 0:
        aucs = _sampled_aucs(p, samples, seed)
        if aucs.size:
            tail = (1.0 - level) / 2.0
            lower, upper = (float(q) for q in np.quantile(aucs, [tail, 1.0 - tail]))
    calibrated_on = (
        None if calibration is None else {"labels": calibration.labels, "windows": calibration.windows}
    )
    return {
        "metric": METRIC,
        "value": _round(value),
        "lower": _round(lower),
        "upper": _round(upper),
        "calibrated_on": calibrated_on,
    }


@dataclass(frozen=True, slots=True)
class Calibration:
    """What a probability of the model meant on labelled predictions: a monotone map from probability to
    the share that churned (isotonic regression over the label book's probability bins).

    The estimate is only as good as the probabilities' calibration, and the served probability (batch and
    online model blended, on the live population) is not the one the batch model was calibrated on: on the
    demo's shop the uncalibrated estimate lay 0.026-0.052 below the realized ROC-AUC in every window, its
    interval never covering it; read through the version's first labelled windows, within about 0.02.

    >>> c = Calibration.fit(np.array([0, 2, 0, 8]), np.array([4, 6, 0, 2]), windows=1)
    >>> [round(float(x), 2) for x in c.apply(np.array([0.1, 0.375, 0.9]))], c.labels
    ([0.0, 0.25, 0.8], 22)
    """

    x: tuple[float, ...]  # bin centres with labels
    y: tuple[float, ...]  # the isotonic share of churned there
    labels: int
    windows: int
    # the estimate of the labelled predictions themselves read through the map: what a window's estimate
    # is compared with (the map fits its own labels a little too well, more the fewer they are; compared
    # with the pool's realized value, a pool of 100 labels read +0.03 high, the watch line)
    pool_estimate: float | None = None

    @classmethod
    def fit(
        cls, positives: np.ndarray, negatives: np.ndarray, *, windows: int, min_labels: int = 0
    ) -> Calibration | None:
        """From per-bin counts (bins of equal width over [0, 1]); None without both classes or with fewer
        than ``min_labels`` labels."""
        from sklearn.isotonic import IsotonicRegression

        pos, neg = np.asarray(positives, dtype=np.float64), np.asarray(negatives, dtype=np.float64)
        counts = pos + neg
        if pos.sum() == 0 or neg.sum() == 0 or counts.sum() < min_labels:
            return None
        used = np.flatnonzero(counts)
        centres = (used + 0.5) / len(counts)
        fitted = IsotonicRegression(y_min=0.0, y_max=1.0).fit(
            centres, pos[used] / counts[used], sample_weight=counts[used]
        )
        x = tuple(float(v) for v in centres)
        y = tuple(float(v) for v in fitted.predict(centres))
        own = expected_roc_auc(np.repeat(np.asarray(y), counts[used].astype(np.int64)))
        return cls(x, y, int(counts.sum()), windows, None if own is None else round(own, 4))

    def apply(self, p: np.ndarray) -> np.ndarray:
        """``p`` mapped (linearly between bin centres, flat beyond the outer ones)."""
        return np.interp(p, self.x, self.y)


def expected_roc_auc(p: np.ndarray) -> float | None:
    """The area under the expected ROC curve of calibrated probabilities ``p`` (CBPE), or None."""
    ps = np.sort(p)[::-1]
    tp = np.cumsum(ps)
    fp = np.cumsum(1.0 - ps)
    positives, negatives = tp[-1], fp[-1]
    if positives <= 0.0 or negatives <= 0.0:
        return None
    last = np.r_[np.flatnonzero(np.diff(ps)), ps.size - 1]  # one point per distinct threshold
    tpr = np.r_[0.0, tp[last] / positives]
    fpr = np.r_[0.0, fp[last] / negatives]
    return float(np.sum((fpr[1:] - fpr[:-1]) * (tpr[1:] + tpr[:-1]) / 2.0))


def _sampled_aucs(p: np.ndarray, samples: int, seed: int) -> np.ndarray:
    from scipy.stats import rankdata

    ranks = rankdata(p)
    rng = np.random.default_rng(seed)
    labels = rng.random((samples, p.size)) < p
    n1 = labels.sum(axis=1).astype("float64")
    n0 = p.size - n1
    ok = (n1 > 0) & (n0 > 0)
    rank_sums = labels.astype("float64") @ ranks
    return ((rank_sums - n1 * (n1 + 1) / 2.0)[ok]) / (n1[ok] * n0[ok])


def binned_roc_auc(positives: np.ndarray, negatives: np.ndarray) -> float | None:
    """ROC-AUC from per-bin counts of positives and negatives (bins in increasing probability; a pair in
    one bin counts one half), or None without both classes.

    >>> binned_roc_auc(np.array([0, 0, 2]), np.array([1, 1, 0])), binned_roc_auc(np.array([1]), np.array([1]))
    (1.0, 0.5)
    """
    pos, neg = positives.astype("float64"), negatives.astype("float64")
    n1, n0 = pos.sum(), neg.sum()
    if n1 == 0 or n0 == 0:
        return None
    below = np.cumsum(neg) - neg
    return float(np.sum(pos * (below + neg / 2.0)) / (n1 * n0))


def roc_auc_interval(value: float, positives: int, negatives: int) -> tuple[float, float]:
    """A 95% interval of a ROC-AUC of ``value`` measured on ``positives`` and ``negatives`` labels, by
    Hanley and McNeil's standard error (Radiology 143, 1982), clipped to [0, 1]: what a window of that many
    labels can show by chance alone.

    >>> [round(x, 3) for x in roc_auc_interval(0.77, 140, 60)]
    [0.705, 0.835]
    >>> [round(x, 3) for x in roc_auc_interval(0.77, 3500, 1500)]
    [0.757, 0.783]
    >>> [round(x, 3) for x in roc_auc_interval(1.0, 1, 99)]  # one churner ranked first: not certainty
    [0.429, 1.0]
    """
    n1, n0 = max(int(positives), 1), max(int(negatives), 1)
    # at 0 or 1 the formula's error is 0 whatever the counts: taken half a rank from the end instead
    edge = 0.5 / min(n1, n0)
    a = min(max(float(value), edge), 1.0 - edge)
    q1, q2 = a / (2.0 - a), 2.0 * a * a / (1.0 + a)
    se = math.sqrt(max(a * (1.0 - a) + (n1 - 1) * (q1 - a * a) + (n0 - 1) * (q2 - a * a), 0.0) / (n1 * n0))
    return max(float(value) - 1.96 * se, 0.0), min(float(value) + 1.96 * se, 1.0)


def binned_roc_auc_interval(positives: np.ndarray, negatives: np.ndarray) -> tuple[float, float] | None:
    """A 95% interval of the ROC-AUC of per-bin label counts (as :func:`binned_roc_auc`), by DeLong's
    variance (Biometrics 44, 1988: each positive's share of negatives ranked below it, each negative's of
    positives above it), clipped to [0, 1]; None without both classes. Hanley and McNeil's formula
    (:func:`roc_auc_interval`, from the counts alone) assumes a shape of the score distributions; on a
    simulated stationary model in windows of 500 labels it was too narrow (2.4 % of windows told to
    retrain at a one-sided 1 % gate), DeLong's reads the spread the labels have.

    >>> pos, neg = np.array([0, 10, 30, 60]), np.array([40, 30, 20, 10])
    >>> [round(x, 3) for x in binned_roc_auc_interval(pos, neg)]
    [0.817, 0.913]
    >>> binned_roc_auc_interval(np.array([0, 3]), np.array([0, 0])) is None
    True
    """
    pos, neg = np.asarray(positives, dtype=np.float64), np.asarray(negatives, dtype=np.float64)
    n1, n0 = pos.sum(), neg.sum()
    if n1 == 0 or n0 == 0:
        return None
    # a positive in bin b ranks above the negatives of lower bins and half of those in b; a negative in b
    # below the positives of higher bins and half of those in b
    v10 = (np.cumsum(neg) - neg + neg / 2.0) / n0
    v01 = (pos[::-1].cumsum()[::-1] - pos + pos / 2.0) / n1
    auc = float(np.sum(pos * v10) / n1)
    var10 = float(np.sum(pos * (v10 - auc) ** 2) / max(n1 - 1, 1))
    var01 = float(np.sum(neg * (v01 - auc) ** 2) / max(n0 - 1, 1))
    se = math.sqrt(var10 / n1 + var01 / n0)
    if se == 0.0:  # every pair ordered the same way: no spread to read; the formula's edge instead
        return roc_auc_interval(auc, int(n1), int(n0))
    return max(auc - 1.96 * se, 0.0), min(auc + 1.96 * se, 1.0)


BASELINE_WINDOWS = 6  # windows of a version pooled as its realized reference (see LabelBook)
LEFT_OUT_SHOWN = 5  # the latest windows left out of a pool that a report names
CALIBRATION_LABELS = 1000  # labels a version's pool needs before its map is trusted (fewer: too rough)

SPAN_LIMIT = 32  # spans of as_of a waiting window keeps, merged windows too


def as_of_spans(as_of: Sequence[int] | np.ndarray, *, limit: int = SPAN_LIMIT) -> list[tuple[int, int]]:
    """At most ``limit`` disjoint ``(first, last)`` spans, in order, covering every time in ``as_of``
    and as little else as they can: cut at the largest gaps between the sorted distinct times.

    >>> as_of_spans([50, 10, 11, 12, 30, 30], limit=3)
    [(10, 12), (30, 30), (50, 50)]
    >>> as_of_spans([50, 10, 11, 12, 30], limit=2), as_of_spans([])
    ([(10, 30), (50, 50)], [])
    """
    times = np.unique(np.asarray(as_of, dtype=np.int64))
    if times.size == 0:
        return []
    return [(int(a), int(b)) for a, b in _fewest_spans(times, times, limit).tolist()]


def _fewest_spans(firsts: np.ndarray, lasts: np.ndarray, limit: int) -> np.ndarray:
    """Disjoint spans in order (``firsts[i]..lasts[i]``, not empty) as at most ``limit`` spans, ``(k, 2)``:
    the largest gaps between them stay, the others are bridged.

    >>> _fewest_spans(np.array([0, 8, 15]), np.array([4, 10, 20]), 2).tolist()
    [[0, 10], [15, 20]]
    """
    gaps = firsts[1:] - lasts[:-1]
    cuts = np.sort(np.argsort(-gaps, kind="stable")[: max(limit - 1, 0)])
    cuts = cuts[gaps[cuts] > 0]
    return np.column_stack([np.r_[firsts[0], firsts[cuts + 1]], np.r_[lasts[cuts], lasts[-1]]])


@dataclass(slots=True)
class _Open:
    """A closed window whose labels are still arriving: per-bin counts of its labelled predictions, and
    the spans of ``as_of`` its predictions cover (empty: all of ``start``..``end``). ``windows``: how many
    adjacent windows it holds (:meth:`LabelBook.open` merges them past its cap)."""

    seq: int
    model_version: str
    start: int
    end: int
    positives: np.ndarray
    negatives: np.ndarray
    spans: np.ndarray | None = None  # (n, 2) int64
    windows: int = 1

    def covered(self) -> np.ndarray:
        """The spans, ``[[start, end]]`` when it has none."""
        spans = getattr(self, "spans", None)  # None in a book saved before spans existed
        if spans is None or not len(spans):
            return np.array([[self.start, self.end]], dtype=np.int64)
        return spans

    def merged(self, later: _Open) -> _Open:
        """One window holding this one's labels and ``later``'s (of the same model version): over both
        time ranges, its spans the union of theirs.

        >>> a = _Open(1, "v", 0, 10, np.array([1, 0]), np.array([0, 2]), np.array([[0, 4], [8, 10]]))
        >>> b = _Open(2, "v", 9, 20, np.array([0, 3]), np.array([1, 0]), np.array([[9, 9], [15, 20]]))
        >>> m = a.merged(b)
        >>> m.seq, m.start, m.end, m.windows, m.positives.tolist(), m.negatives.tolist(), m.spans.tolist()
        (1, 0, 20, 2, [1, 3], [1, 2], [[0, 4], [8, 10], [15, 20]])
        """
        spans = np.concatenate([self.covered(), later.covered()])
        spans = spans[np.argsort(spans[:, 0], kind="stable")]
        union: list[list[int]] = []
        for first, last in spans.tolist():
            if union and first <= union[-1][1]:
                union[-1][1] = max(union[-1][1], last)
            else:
                union.append([first, last])
        firsts, lasts = np.array(union, dtype=np.int64).T
        return _Open(
            min(self.seq, later.seq),
            self.model_version,
            min(self.start, later.start),
            max(self.end, later.end),
            self.positives + later.positives,
            self.negatives + later.negatives,
            _fewest_spans(firsts, lasts, SPAN_LIMIT),  # the smallest gaps bridged: the book stays bounded
            getattr(self, "windows", 1) + getattr(later, "windows", 1),
        )

    def widths(self, times: np.ndarray) -> np.ndarray:
        """Per time, the length of this window's span that holds it (int64 max when none does)."""
        out = np.full(times.size, np.iinfo(np.int64).max)
        inside = (times >= self.start) & (times <= self.end)
        spans = self.covered()
        i = np.searchsorted(spans[:, 0], times, side="right") - 1
        held = inside & (i >= 0) & (times <= spans[np.maximum(i, 0), 1])
        out[held] = (spans[:, 1] - spans[:, 0])[i[held]]
        return out


@dataclass(slots=True)
class LabelBook:
    """Labels of closed windows as they arrive; the realized ROC-AUC of each window once they are known.

    ``delay_ms``: how long after a window's last prediction (in event time) its labels are all known, the
    horizon plus the allowed lateness; ``min_labels``: fewer labels than this (or one class only) and
    the window's realized performance is not reported. ``latest`` holds, per model version, the realized
    performance of its most recent window whose labels are known; ``baseline`` that of its first
    ``baseline_windows`` such windows pooled (the realized reference: one window alone is noisy, and so
    is a pool of three: on a simulated model that never changes, 10 shops of 300 windows of 500 labels,
    59 windows were told to retrain against a pool of 3, 20 against a pool of 6 with windows a retrain
    below it left out (24 and 19 at 200 labels), most of the 59 in the one shop whose small pool came out
    high; 10 windows gained nothing more).

    >>> book = LabelBook(delay_ms=10, min_labels=2)
    >>> book.open(1, "v1", 0, 5)
    >>> book.add({"as_of": [1, 2, 3, 9], "label": [0, 1, 1, 1], "churn_probability": [0.2, 0.9, 0.7, 0.5]})
    3
    >>> book.advance(14), book.advance(15)
    ([], [1])
    >>> book.latest["v1"]["value"], book.latest["v1"]["labels"]
    (1.0, 3)
    """

    delay_ms: int
    min_labels: int = 100
    bins: int = 200
    max_open: int = 400
    baseline_windows: int = BASELINE_WINDOWS
    # a window this far or more below the pool, and beyond chance, is not pooled (the retrain drop)
    apart_drop: float = 0.05
    clock: int = 0
    opened: list[_Open] = field(default_factory=list)
    latest: dict[str, dict[str, Any]] = field(default_factory=dict)
    baseline: dict[str, dict[str, Any]] = field(default_factory=dict)
    _pooled: dict[str, tuple[int, _Open]] = field(default_factory=dict)
    # past max_open once: windows are merged (logged once). Last: a book pickled before it read the same
    merging: bool = False
    # per version: the baseline as it stood before its latest window entered it (None: none stood yet),
    # what that window is judged against (reference_of); a book saved before it has none
    compared: dict[str, dict[str, Any] | None] = field(default_factory=dict)

    def open(
        self,
        seq: int,
        model_version: str,
        start: int,
        end: int,
        spans: Sequence[tuple[int, int]] | None = None,
    ) -> None:
        """Start collecting the labels of window ``seq``: its predictions' ``as_of`` lie in [start, end],
        within ``spans`` when given (:func:`as_of_spans`)."""
        zeros = np.zeros(self.bins, dtype=np.uint32)
        covered = np.asarray(spans, dtype=np.int64).reshape(-1, 2) if spans else None
        entry = _Open(seq, model_version, start, end, zeros, zeros.copy(), covered)
        starts = [e.start for e in self.opened]
        self.opened.insert(bisect.bisect_right(starts, start), entry)
        if len(self.opened) > self.max_open:
            self._merge()

    def _merge(self) -> None:
        """Past ``max_open`` waiting windows, the two adjacent ones of one model version that together span
        the least time are counted as one from now on: every label still counts, and the realized
        performance, once known, is theirs together (``windows`` says how many). So the book stays
        bounded at any prediction rate; a shop with many windows a horizon gets coarser realized
        performance, never none."""
        pairs = [
            (b.end - a.start, j)
            for j, (a, b) in enumerate(zip(self.opened, self.opened[1:], strict=False))
            if a.model_version == b.model_version
        ]
        if not pairs:  # every neighbour of another version: nothing merges, the oldest goes
            oldest = min(self.opened, key=lambda e: e.seq)
            self.opened.remove(oldest)
            log.warning(
                "labels of window %d are no longer collected: %d windows of alternating model versions "
                "wait for theirs: its realized performance will not be known",
                oldest.seq,
                self.max_open,
            )
            return
        _, j = min(pairs)
        a, b = self.opened[j], self.opened[j + 1]
        if not getattr(self, "merging", False):  # a book saved before merging existed
            self.merging = True
            log.info(
                "%d windows wait for their labels (a horizon plus the lateness): adjacent windows now share "
                "one realized ROC-AUC (windows %d and %d first); CHURN_DRIFT_WINDOW_ROWS sets how many "
                "predictions a window holds",
                self.max_open + 1,
                a.seq,
                b.seq,
            )
        self.opened[j : j + 2] = [a.merged(b)]

    def add(self, outcomes: dict[str, list[Any]]) -> int:
        """Count outcomes (``as_of``, ``label``, ``churn_probability`` columns) in the windows their
        predictions fell in; returns how many found one (those of older records, without ``as_of``, or of
        windows no longer collected, do not). An outcome with a ``model_version`` counts only in windows of
        that version: after a promotion, a partition behind the others still scores with the old version at
        times the new version's first window spans. When the spans of two windows hold a time (a sweep tick
        inside the previous window's events), the narrower span wins: a tick is a span of its own."""
        as_of, labels = outcomes.get("as_of"), outcomes.get("label")
        probs = outcomes.get("churn_probability")
        if not as_of or not labels or not probs or not self.opened:
            return 0
        rows = zip(as_of, labels, probs, strict=False)
        keep = [k for k, (t, y, q) in enumerate(rows) if t is not None and y is not None and q is not None]
        if not keep:
            return 0
        times = np.array([as_of[k] for k in keep], dtype=np.int64)
        made_by = outcomes.get("model_version")
        versions = None if made_by is None else np.array([made_by[k] for k in keep], dtype=object)
        best = np.full(times.size, -1)
        narrowest = np.full(times.size, np.iinfo(np.int64).max)
        for j, entry in enumerate(self.opened):
            width = entry.widths(times)
            if versions is not None:  # None: a record written before outcomes named their version
                other = (versions != entry.model_version) & (versions != None)  # noqa: E711 - elementwise
                width[other] = np.iinfo(np.int64).max  # never narrower than none
            better = width < narrowest
            best[better], narrowest[better] = j, width[better]
        found = np.flatnonzero(best >= 0)
        bins = np.array([float(probs[k]) for k in keep], dtype="float64")[found] * self.bins
        bins = np.clip(bins.astype(np.int64), 0, self.bins - 1)
        positive = np.array([bool(labels[k]) for k in keep], dtype=bool)[found]
        for j in np.unique(best[found]).tolist():
            mine = best[found] == j
            entry = self.opened[j]
            np.add.at(entry.positives, bins[mine & positive], 1)
            np.add.at(entry.negatives, bins[mine & ~positive], 1)
        return int(found.size)

    def advance(self, clock: int) -> list[int]:
        """Event time is now ``clock``: windows whose labels are all known leave the book; returns their
        numbers (those with enough labels now give ``latest`` of their model version)."""
        self.clock = max(self.clock, clock)
        done = [e for e in self.opened if e.end + self.delay_ms <= self.clock]
        if not done:
            return []
        self.opened = [e for e in self.opened if e.end + self.delay_ms > self.clock]
        for entry in sorted(done, key=lambda e: e.seq):
            labels = int(entry.positives.sum() + entry.negatives.sum())
            value = binned_roc_auc(entry.positives, entry.negatives)
            if labels < self.min_labels:
                log.info("window %d: %d labels, too few for its realized performance", entry.seq, labels)
                continue
            if value is None:
                log.info(
                    "window %d: %d labels, all of one class (%s): no realized ROC-AUC",
                    entry.seq,
                    labels,
                    "churned" if entry.positives.sum() else "stayed",
                )
                continue
            lower, upper = binned_roc_auc_interval(entry.positives, entry.negatives) or (value, value)
            realized = {
                "metric": METRIC,
                "value": _round(value),
                "lower": _round(lower),
                "upper": _round(upper),
                "labels": labels,
                "window_start": entry.start,
                "window_end": entry.end,
                "windows": getattr(entry, "windows", 1),
            }
            self.latest[entry.model_version] = realized
            if getattr(self, "compared", None) is None:  # a book saved before it
                self.compared = {}
            self.compared[entry.model_version] = self.baseline.get(entry.model_version)
            self._pool(entry, realized)
        return [e.seq for e in done]

    def reference_of(self, version: str) -> dict[str, Any] | None:
        """The realized reference ``version``'s latest realized window is judged against: its first
        windows pooled as they stood before that window entered them, so no window is its own reference
        (None before any: then the reference sample's estimate is, see :func:`advise`).

        >>> book = LabelBook(delay_ms=10, min_labels=2, baseline_windows=2)
        >>> for seq, start in enumerate((0, 20, 40)):
        ...     book.open(seq, "v1", start, start + 5)
        ...     _ = book.add({"as_of": [start + 1, start + 2, start + 3], "label": [0, 1, 1],
        ...                   "churn_probability": [0.2, 0.9, 0.7]})
        ...     _ = book.advance(start + 15)
        ...     print(seq, book.reference_of("v1") and book.reference_of("v1")["windows"])
        0 None
        1 1
        2 2
        """
        compared = getattr(self, "compared", None)
        if compared is None or version not in compared:  # a book saved before: as it judged then
            return self.baseline.get(version)
        return compared[version]

    def calibration(self, version: str) -> Calibration | None:
        """``version``'s probabilities as its first windows with known labels, pooled, showed them to mean
        (the reference :meth:`reference_of` pools); None before any."""
        windows, pool = self._pooled.get(version, (0, None))
        if pool is None:
            return None
        return Calibration.fit(pool.positives, pool.negatives, windows=windows, min_labels=CALIBRATION_LABELS)

    def _pool(self, entry: _Open, realized: dict[str, Any]) -> None:
        version = entry.model_version
        windows, pool = self._pooled.get(version, (0, None))
        if windows >= self.baseline_windows:
            return
        standing = self.baseline.get(version)
        if pool is not None and standing and standing.get("upper") is not None:
            # a window a retrain below the pool and beyond chance (a model that broke meanwhile) would
            # make the reference of what came after it; it is judged against the pool, never pooled. Only
            # then: windows whose true value varies (a weekly mix of customers) all belong in the pool
            below = standing["value"] - realized["value"]
            chance = _chance(
                realized["value"],
                (realized["lower"], realized["upper"]),
                standing["value"],
                (standing["lower"], standing["upper"]),
            )
            if below >= max(chance, getattr(self, "apart_drop", 0.05)):
                log.info(
                    "window %d ranks %.3f, a retrain below the pool of %s's first windows (%.3f): not pooled",
                    entry.seq,
                    realized["value"],
                    version,
                    standing["value"],
                )
                # said with the pool (a new dict: the one a window was judged against stays as it was):
                # how many, and the latest few (a model that stays broken leaves out every window)
                left = {"window_start": entry.start, "window_end": entry.end, "value": realized["value"]}
                self.baseline[version] = {
                    **standing,
                    "left_out": [*standing.get("left_out", ()), left][-LEFT_OUT_SHOWN:],
                    "left_out_count": standing.get("left_out_count", 0) + 1,
                }
                return
        if pool is None:
            pool = _Open(entry.seq, version, entry.start, entry.end, entry.positives, entry.negatives)
        else:
            pool.end = max(pool.end, entry.end)
            pool.positives = pool.positives + entry.positives
            pool.negatives = pool.negatives + entry.negatives
        windows += getattr(entry, "windows", 1)
        self._pooled[version] = (windows, pool)
        value = binned_roc_auc(pool.positives, pool.negatives)
        lower, upper = (
            (None, None) if value is None else binned_roc_auc_interval(pool.positives, pool.negatives)
        ) or (None, None)
        self.baseline[version] = {
            "metric": METRIC,
            "value": _round(value),
            "lower": _round(lower),
            "upper": _round(upper),
            "labels": int(pool.positives.sum() + pool.negatives.sum()),
            "window_start": pool.start,
            "window_end": pool.end,
            "windows": windows,
        }
        if standing and standing.get("left_out"):  # windows between its first and last, not pooled
            self.baseline[version]["left_out"] = list(standing["left_out"])
            self.baseline[version]["left_out_count"] = standing["left_out_count"]


def windows_named(realized: dict[str, Any]) -> str:
    """What a realized performance covers, in words: one window, or several adjacent ones the label book
    counted together (:meth:`LabelBook.open`).

    >>> windows_named({"value": 0.8}), windows_named({"value": 0.8, "windows": 3})
    ('the window', '3 adjacent windows')
    """
    windows = int(realized.get("windows") or 1)
    return "the window" if windows == 1 else f"{windows} adjacent windows"


# What a person does about an action (the reason ends with it).
RETRAIN_STEP = "retrain (churnstream retrain, or CHURN_RETRAIN_ON_ADVICE=1 to let the monitor do it)"
RETRAIN_ITSELF = (
    "retrain: the monitor runs churnstream retrain itself (CHURN_RETRAIN_ON_ADVICE=1), once no model in "
    "shadow waits for its evidence (its log says when one does)"
)
WATCH_STEP = "watch the next windows' realized ROC-AUC as their labels come in"


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Drops of ROC-AUC below the reference at which the monitor advises ``watch`` and ``retrain``."""

    watch: float = 0.03
    retrain: float = 0.05


def advise(
    *,
    drifted: bool,
    estimated: float | None,
    estimated_reference: float | None,
    realized: float | None,
    realized_reference: float | None,
    thresholds: Thresholds,
    concept: dict[str, Any] | None = None,
    retrain_step: str = RETRAIN_STEP,
    realized_interval: tuple[float, float] | None = None,
    realized_labels: int | None = None,
    reference_interval: tuple[float, float] | None = None,
    estimate_base: float | None = None,
) -> tuple[str, str]:
    """``(action, reason)`` for one window; a ``retrain`` reason ends with ``retrain_step`` (what a person
    does, or :data:`RETRAIN_ITSELF` when the monitor retrains on its own advice).

    - ``retrain``: the realized ROC-AUC (labels known) lies ``thresholds.retrain`` or more below the
      realized reference (the first windows of the model version whose labels are known, pooled, or the
      reference estimate before any), and the drop is beyond chance: at least 2.33 standard errors (one
      sided, 99%) of the window's value (``realized_interval``) and of the reference's
      (``reference_interval``), :func:`binned_roc_auc_interval`. One window's drop that far within chance is a
      ``watch`` that says so. A review's model that never changes, judged on its value alone in windows
      of 200 labels, was told to retrain in 3 of 84 reports (rates in ``tests/unit/
      test_monitoring_performance.py``).
    - ``watch``: the realized ROC-AUC lies ``thresholds.watch`` or more below it; or the window drifted
      (dataset or prediction drift) and its estimated ROC-AUC lies ``thresholds.watch`` or more below the
      reference's estimated one (``estimate_base`` when given: a calibrated estimate's pool, read the same
      way).
    - ``none`` otherwise: feature drift alone, with performance holding, asks for nothing; and without
      labels the monitor never says ``retrain`` (the estimate assumes the relation between features and
      churn still holds, so only labels can show that it broke). A concept drift (``concept``, the detector's
      state) the reason names, with whether the online model's error rose or fell; it gives no ``watch``
      of its own: on a stationary simulated shop (``bench/bench_monitor.py``) the error moves while the
      online model warms up, and a ``watch`` there put five false alarms in its first six windows.

    >>> t = Thresholds(watch=0.03, retrain=0.05)
    >>> advise(drifted=True, estimated=0.80, estimated_reference=0.81, realized=None,
    ...        realized_reference=None, thresholds=t)[0]
    'none'

    The estimate asks to watch; the labels of an earlier window, which say otherwise, are said too:

    >>> action, reason = advise(drifted=True, estimated=0.75, estimated_reference=0.81, realized=0.80,
    ...                         realized_reference=0.81, thresholds=t)
    >>> print(action, reason)  # doctest: +NORMALIZE_WHITESPACE +ELLIPSIS
    watch drift, and estimated ROC-AUC 0.750 is 0.060 below the reference's 0.810; the latest realized
    ROC-AUC, 0.800, holds against 0.810: ...
    >>> action, reason = advise(drifted=False, estimated=0.80, estimated_reference=0.81, realized=0.70,
    ...                         realized_reference=0.81, thresholds=t)
    >>> action, reason.split(": ")[0], reason.endswith(RETRAIN_STEP)
    ('retrain', 'realized ROC-AUC 0.700 is 0.110 below the reference 0.810', True)

    A window with neither an estimate nor labels says so, rather than that performance holds:

    >>> advise(drifted=True, estimated=None, estimated_reference=None, realized=None,
    ...        realized_reference=None, thresholds=t)
    ('none', 'drift; performance not measured (no estimate, no labels yet)')

    Concept drift: whether the errors rose, and whether labels already tell:

    >>> rose = {"detected": True, "error_mean_before": 0.30, "error_mean": 0.36}
    >>> print(advise(drifted=True, estimated=0.80, estimated_reference=0.81, realized=None,
    ...        realized_reference=None, thresholds=t, concept=rose)[1])  # doctest: +NORMALIZE_WHITESPACE
    drift, but performance holds (estimated ROC-AUC 0.800 against 0.810); concept drift (the online
    model's error rose from 0.300 to 0.360): the labels will tell
    """
    base = realized_reference if realized_reference is not None else estimated_reference
    if realized is not None and base is not None:
        drop = base - realized
        span = ""
        if realized_interval is not None:
            counted = f", {realized_labels:,} labels" if realized_labels is not None else ""
            span = f" (95% {realized_interval[0]:.3f}..{realized_interval[1]:.3f}{counted})"
        said = f"realized ROC-AUC {realized:.3f}{span} is {drop:.3f} below the reference {base:.3f}"
        chance = _chance(realized, realized_interval, base, reference_interval)
        if drop >= thresholds.retrain and drop >= chance:
            return "retrain", f"{said}: {retrain_step}"
        if drop >= thresholds.retrain:
            return "watch", (
                f"{said}, but a window of this many labels, against a reference of its own noise, can fall "
                f"that far by chance: {WATCH_STEP}"
            )
        if drop >= thresholds.watch:
            return "watch", f"{said}: {WATCH_STEP}"
    # a calibrated estimate compares with its pool read the same way (estimate_base), else with the
    # reference sample's estimate
    estimated_reference = estimate_base if estimate_base is not None else estimated_reference
    if drifted and estimated is not None and estimated_reference is not None:
        drop = estimated_reference - estimated
        if drop >= thresholds.watch:
            # the labels of an earlier window may say otherwise: said beside the estimate, not hidden
            held = (
                f"; the latest realized ROC-AUC, {realized:.3f}, holds against {base:.3f}"
                if realized is not None and base is not None
                else ""
            )
            return "watch", (
                f"drift, and estimated ROC-AUC {estimated:.3f} is {drop:.3f} below the reference's "
                f"{estimated_reference:.3f}{held}: {WATCH_STEP}"
            )
    measured = realized is not None or (estimated is not None and estimated_reference is not None)
    if not measured:
        verdict = "drift" if drifted else "no drift"
        return "none", f"{verdict}; performance not measured (no estimate, no labels yet)"
    verdict = "drift, but performance holds" if drifted else "no drift, performance holds"
    if realized is not None and base is not None:  # the numbers it holds by, however close to a line
        verdict += f" (realized ROC-AUC {realized:.3f} against {base:.3f})"
    elif estimated is not None and estimated_reference is not None:
        verdict += f" (estimated ROC-AUC {estimated:.3f} against {estimated_reference:.3f})"
    shift = error_shift(concept)
    if shift is None:
        return "none", verdict
    before, after, change = shift
    if after <= before:
        return "none", f"{verdict}; concept drift ({change}: it predicts better)"
    if realized is None:  # not watch: the online model's error moves while it warms up (bench_monitor)
        return "none", f"{verdict}; concept drift ({change}): the labels will tell"
    return "none", f"{verdict}; concept drift ({change}), but the realized ROC-AUC holds"


def _chance(
    value: float,
    interval: tuple[float, float] | None,
    reference: float,
    reference_interval: tuple[float, float] | None,
) -> float:
    """How far below ``reference`` a window's ``value`` can fall by chance alone: 2.33 standard errors
    (one-sided 99%) of the value and of the reference's own (a pool of the version's first windows),
    each from its 95% interval; 0 without the value's interval (judged on the value alone), the
    reference's counting 0 without its own."""
    if interval is None:
        return 0.0
    se_reference = 0.0 if reference_interval is None else _se(reference, reference_interval)
    return 2.33 * math.hypot(_se(value, interval), se_reference)


def _se(value: float, interval: tuple[float, float] | Sequence[float]) -> float:
    """The standard error the 95% interval of :func:`roc_auc_interval` around ``value`` stands for: its
    wider side, as the interval is clipped to [0, 1] (near an AUC of 1 its width alone understates it).

    >>> lower, upper = roc_auc_interval(0.99, 30, 30)
    >>> round(upper, 3), round(_se(0.99, (lower, upper)), 4), round((upper - lower) / 3.92, 4)
    (1.0, 0.017, 0.011)
    """
    return max(float(value) - float(interval[0]), float(interval[1]) - float(value)) / 1.96


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)
