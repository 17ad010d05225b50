"""Why a customer is at risk, and what to do about it.

:func:`explain` splits a customer's score into additive contributions, in ``log-odds`` of the *blended*
probability (the one decisions use): for each row ``x``, with ``f = logit p`` and ``r`` the reference
customer (a typical customer who stayed: each feature at its median over the training rows labelled 0,
missing where most of them miss it; :meth:`~churnstream.models.batch.BatchModel.median_vector`)::

    base + sum(contributions) == f(x),    base = f(r)

to float precision. The contributions are baseline Shapley values against ``r`` (the players are the
reasons, below): each is the mean, over a fixed set of orderings, of what setting that reason's features
from the reference to the customer's values adds to ``f`` when the reasons before it in the ordering are
already set. Each ordering's marginal contributions telescope to ``f(x) - f(r)``, so the mean is exactly
additive whatever the model; the orderings come in antithetic pairs (one and its reverse) from a fixed
seed (so the same customer gets the same reasons in every run and every batch), and every ordering is
used when there are no more than ``permutations`` (:data:`PERMUTATIONS`). A reason whose features equal
the reference contributes exactly 0. For a model additive in log-odds every ordering gives the same,
exact, contributions. The inputs of the batch and the online model move together, and the whole batch of
rows is one vectorised ``predict_proba`` per model.

Correlated features share their credit unpredictably, so a reason is a *group* of features that measure
one thing (:data:`REASON_GROUPS`): e.g. the reason ``recency_days`` carries how overdue the customer is
(days since the last order, and the same against their own order rhythm) and ``orders_total`` what they
bought in all (orders, spend, order value). A reason is named after the feature of its group that moves the
score most the way the reason does (of those whose value differs from the reference's; by the batch model:
see :func:`_leads`), and shows that value (the lead feature when none differs): a customer whose tickets
are all closed but were slow to resolve reads ``avg_resolution_hours=52``, not ``open_tickets=0``, and one
who ordered today but buys every two months ``mean_days_between_orders=57.7``, not ``recency_days=0``.
Features in no group are a reason of their own; ``groups=()`` gives one reason per feature.

:func:`recommended_actions` turns the reasons that raise risk into retention actions, and weighs what the
customer is worth: a valuable customer with bad tickets gets a call and a goodwill credit, a one-time
buyer gone quiet a nudge toward a second order.

>>> from churnstream.messages import Reason
>>> for action in recommended_actions([Reason("recency_ratio", 3.2, 0.21), Reason("open_tickets", 2, 0.08)]):
...     print(action)
win-back offer timed to their usual order rhythm
apologise and expedite open tickets
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from churnstream.messages import EXPLANATION_DIGITS, Reason
from churnstream.models.alert_policy import HIGH_VALUE_AT_RISK
from churnstream.models.batch import BatchModel
from churnstream.models.blend import Blender
from churnstream.models.online import OnlineModel

MIN_REASONS = 3
UNIT = "log-odds"
PERMUTATIONS = 8  # orderings per explanation: 4 antithetic pairs
SEED = 20
_CHUNK_ROWS = 40_000  # model inputs scored at once: bounds memory, not results

REASON_GROUPS: tuple[tuple[str, ...], ...] = (
    # how overdue the next order is: days since the last one, against the customer's own rhythm
    ("recency_days", "recency_ratio", "recency_gap_z", "mean_days_between_orders", "order_gap_cv"),
    # what the customer has bought in all
    ("orders_total", "spent_total", "avg_order_value"),
    # what they bought lately
    ("orders_90d", "orders_30d", "spent_90d", "spent_30d", "orders_trend"),
    ("negative_tickets_total", "negative_ticket_share", "avg_satisfaction"),
    ("tickets_total", "tickets_90d", "tickets_30d", "days_since_last_ticket"),
    ("open_tickets", "avg_resolution_hours"),
    ("return_rate", "returns_total"),
    ("email_verified", "phone_verified"),
)
"""The reasons: groups of features credited together, each named after its first feature in the model."""


@dataclass(frozen=True, slots=True)
class Explained:
    """One customer's explanation: ``reasons`` (at least 3), those that raise the risk first, largest first,
    then those that lower it most (see :func:`shown_reasons`), and the ``base`` value that all the reasons'
    contributions add up to the score with, both in ``unit``."""

    reasons: list[Reason]
    base: float
    unit: str
    other: float = 0.0  # the contributions of the reasons not listed, summed

    def to_json(self) -> dict[str, Any]:
        """The ``explanation`` field of alerts and API answers: the unit, the base and the reasons not
        listed (``other``), to the digits the contributions are written with: ``base`` + the listed
        contributions + ``other`` is the score, so a consumer can check what the list leaves out.

        >>> Explained([], base=-0.41234567891, unit=UNIT, other=0.25).to_json()
        {'unit': 'log-odds', 'base': -0.412346, 'other': 0.25}
        """
        return {
            "unit": self.unit,
            "base": round(self.base, EXPLANATION_DIGITS),
            "other": round(self.other, EXPLANATION_DIGITS) + 0.0,  # never -0.0
        }


def explain(
    model: BatchModel,
    online: OnlineModel | None,
    blender: Blender,
    X: np.ndarray,
    rows: Sequence[Mapping[str, Any]],
    top_k: int = 3,
    *,
    groups: Sequence[Sequence[str]] = REASON_GROUPS,
    permutations: int = PERMUTATIONS,
    seed: int = SEED,
    learners: Sequence[tuple[OnlineModel | None, Blender]] | None = None,
    learner_of: Sequence[int] | None = None,
) -> list[Explained]:
    """The reasons of each row's blended log-odds an alert lists (:func:`shown_reasons`): the ``top_k`` (at
    least 3) that raise it most, then the one that lowers it most, so an alert says first why the customer
    is at risk and then what holds them.

    ``X`` holds the rows in ``model.feature_names`` order, ``rows`` the same rows as feature dicts (for the
    online model). See the module docstring for the rule.

    Rows of several online learners (a worker's partitions) are explained in one call, with one
    ``predict_proba`` of the batch model for all: ``learners`` lists their ``(online, blender)`` and
    ``learner_of`` gives each row's index into it (``online`` and ``blender`` are then not used).
    """
    X = np.asarray(X, dtype=np.float64)
    n, d = X.shape
    if n == 0:
        return []
    if learners is None or learner_of is None:
        learners, learner_of = [(online, blender)], [0] * n
    which = np.asarray(learner_of, dtype=np.intp)
    players = _players(model.feature_names, groups)
    n_players = len(players)
    player_of = np.empty(d, dtype=np.intp)
    for i, (_, columns) in enumerate(players):
        player_of[columns] = i
    k = min(max(top_k, MIN_REASONS), n_players)
    rank, states, state_of = _coalitions(n_players, permutations, seed)
    m = len(rank)
    reference = model.median_vector()
    take = states[:, player_of]  # (states, d): which batch columns hold the customer's values
    prob = np.empty((len(states), n))
    step = max(1, _CHUNK_ROWS // len(states))
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        batch_in = np.where(take[:, None, :], X[None, lo:hi], reference)
        prob[:, lo:hi] = model.predict_proba(batch_in.reshape(-1, d)).reshape(len(states), hi - lo)
    batch_full = _logit(prob[state_of[1]].copy())  # the batch model's log-odds of each customer as they are
    for j, (learner_online, learner_blender) in enumerate(learners):
        if learner_online is None or not (learner_online.ready and learner_blender.online_weight() > 0.0):
            continue  # the blend is the batch probability alone
        mine = np.flatnonzero(which == j)
        if not len(mine):
            continue
        X_online = learner_online.vectorize([rows[int(i)] for i in mine])
        position = {name: c for c, name in enumerate(model.feature_names)}
        mapped = [position.get(name) for name in learner_online.feature_names]
        ref_online = np.array([np.nan if c is None else reference[c] for c in mapped])
        take_online = np.column_stack(
            [np.ones(len(states), dtype=bool) if c is None else take[:, c] for c in mapped]
        )
        for lo in range(0, len(mine), step):
            hi = min(len(mine), lo + step)
            cols = mine[lo:hi]
            online_in = np.where(take_online[:, None, :], X_online[None, lo:hi], ref_online)
            online_prob = learner_online.predict_matrix(online_in.reshape(-1, X_online.shape[1]))
            blended = learner_blender.blend(prob[:, cols].reshape(-1), online_prob)
            prob[:, cols] = np.asarray(blended).reshape(len(states), hi - lo)
    f = _logit(prob)[state_of]  # (all_states, n)

    # f along each ordering, from the reference (step 0) to the customer (step n_players)
    along = np.empty((m, n_players + 1, n))
    along[:, 0] = f[0]
    along[:, n_players] = f[1]
    along[:, 1:n_players] = f[2:].reshape(m, n_players - 1, n)
    marginal = np.diff(along, axis=1)  # (m, n_players, n): what the ordering's step-th player added
    contributions = marginal[np.arange(m)[:, None], rank].mean(axis=0)  # (n_players, n)

    same = np.equal(X, reference) | (np.isnan(X) & np.isnan(reference))  # (n, d)
    names = model.feature_names
    orders = [shown_reasons(contributions[:, r], k) for r in range(n)]
    leads = _leads(model, X, reference, batch_full, same, players, contributions, orders)
    explanations: list[Explained] = []
    for r in range(n):
        order = orders[r]
        shown = [leads[r, p] for p in order]
        reasons = [
            Reason(feature=names[c], value=_value(X[r, c]), contribution=float(contributions[p, r]))
            for p, c in zip(order, shown, strict=True)
        ]
        other = float(contributions[:, r].sum()) - sum(reason.contribution for reason in reasons)
        explanations.append(Explained(reasons=reasons, base=float(f[0, r]), unit=UNIT, other=other))
    return explanations


def _leads(
    model: BatchModel,
    X: np.ndarray,
    reference: np.ndarray,
    batch_full: np.ndarray,
    same: np.ndarray,
    players: Sequence[tuple[str, list[int]]],
    contributions: np.ndarray,
    orders: Sequence[Sequence[int]],
) -> np.ndarray:
    """The feature each shown reason is named after, per row (``(n, players)`` column indices): of the
    group's members whose value is not the reference's, the one that moves the score most the way the
    reason does (its value taken back to the reference's alone, the batch model's log-odds fall most for
    a reason raising the risk); the lead feature when no member differs, the one that differs when only
    one does. Named by the first member that differed, a customer who ordered today and buys every two
    months read ``recency_days=0`` as the reason raising their risk, and was offered a win-back."""
    n = X.shape[0]
    leads = np.tile(np.array([columns[0] for _, columns in players], dtype=np.intp), (n, 1))
    asks: list[tuple[int, int, int]] = []  # (row, player, column) whose move back to the reference is scored
    for r in range(n):
        for p in orders[r]:
            differing = [c for c in players[p][1] if not same[r, c]]
            if len(differing) == 1:
                leads[r, p] = differing[0]
            elif differing:
                asks.extend((r, p, c) for c in differing)
    if not asks:
        return leads
    rows = np.array([a[0] for a in asks], dtype=np.intp)
    cols = np.array([a[2] for a in asks], dtype=np.intp)
    back = X[rows].copy()
    back[np.arange(len(asks)), cols] = reference[cols]
    moved = batch_full[rows] - _logit(model.predict_proba(back))  # what each member alone adds
    best: dict[tuple[int, int], tuple[float, int]] = {}
    for (r, p, c), delta in zip(asks, moved.tolist(), strict=True):
        toward = delta if contributions[p, r] >= 0 else -delta
        if (r, p) not in best or toward > best[(r, p)][0]:
            best[(r, p)] = (toward, c)
    for (r, p), (_, c) in best.items():
        leads[r, p] = c
    return leads


def shown_reasons(contributions: Sequence[float] | np.ndarray, top_k: int = MIN_REASONS) -> list[int]:
    """Which reasons an explanation lists, in its order: the ``top_k`` (at least 3) that raise the risk
    most, largest first, then the one that lowers it most; fewer raising it leave room for more lowering
    it, by size, so at least ``top_k`` are listed while there are that many. A team reads first why the
    customer is at risk, then what holds them (a loyal customer's long record no longer crowds out the
    silence that raises the risk).

    >>> shown_reasons([-1.7, 0.3, 0.0, 0.9, -0.2])  # two raise it: then the one lowering it most
    [3, 1, 0]
    >>> shown_reasons([-1.7, 0.3, 0.0, -0.9, -0.2])  # one raises it: then the two lowering it most
    [1, 0, 3]
    >>> shown_reasons([0.5, 0.4, 0.3, 0.2, -0.1, -0.6])  # three of four raising, then one lowering
    [0, 1, 2, 5]
    >>> shown_reasons([0.5, 0.4, 0.3, 0.2, 0.0])  # nothing lowers it
    [0, 1, 2]
    """
    c = np.asarray(contributions, dtype=np.float64)
    k = max(top_k, MIN_REASONS)
    raising = np.flatnonzero(c > 0)
    raising = raising[np.argsort(-c[raising], kind="stable")][:k]
    rest = np.flatnonzero(c <= 0)
    rest = rest[np.argsort(c[rest], kind="stable")]  # most lowering first, those not moving it last
    lowering = int(np.count_nonzero(c < 0))
    extra = max(k - len(raising), min(1, lowering))
    return [int(i) for i in (*raising, *rest[:extra])]


def _players(names: Sequence[str], groups: Sequence[Sequence[str]]) -> list[tuple[str, list[int]]]:
    """The reasons over ``names``: (name, columns, lead first) of each group present, then each feature in
    no group, in ``names`` order."""
    position = {name: j for j, name in enumerate(names)}
    taken: set[str] = set()
    players: list[tuple[str, list[int]]] = []
    for group in groups:
        members = [g for g in group if g in position and g not in taken]
        if members:
            taken.update(members)
            players.append((members[0], [position[g] for g in members]))
    players.extend((name, [j]) for j, name in enumerate(names) if name not in taken)
    return players


@functools.lru_cache(maxsize=8)
def _coalitions(n_players: int, permutations: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What an explanation scores, the same for every call with these arguments (so computed once): each
    ordering's ``rank`` (``rank[i, p]``: the position of player p in ordering i), the distinct ``states``
    to score (which players hold the customer's values) and ``state_of``, the index into ``states`` of
    each of the reference, the customer, and each ordering's states in between (the first s players of
    the ordering set to the customer's values), in that order. Read-only arrays.

    >>> rank, states, state_of = _coalitions(3, 8, 0)
    >>> rank.shape, states.shape, state_of.shape  # 6 orderings, 2 + 6 * 2 states, 8 of them distinct
    ((6, 3), (8, 3), (14,))
    """
    orders = _orderings(n_players, permutations, seed)
    rank = np.argsort(orders, axis=1)
    steps = np.arange(1, n_players)
    all_states = np.vstack(
        [
            np.zeros((1, n_players), dtype=bool),
            np.ones((1, n_players), dtype=bool),
            (rank[:, None, :] < steps[None, :, None]).reshape(-1, n_players),
        ]
    )
    # orderings share some states (the same first or last player): each distinct one is scored once
    # (68 of 74 for the 10 reasons and 8 orderings of churnstream's features)
    states, state_of = np.unique(all_states, axis=0, return_inverse=True)
    state_of = state_of.reshape(-1)
    for a in (rank, states, state_of):
        a.setflags(write=False)
    return rank, states, state_of


def _orderings(n_players: int, permutations: int, seed: int) -> np.ndarray:
    """Every ordering of the players when there are no more than ``permutations``, else ``permutations``
    (rounded up to even) seeded random ones in antithetic pairs: an ordering, then its reverse.

    >>> _orderings(3, 8, 0).shape, _orderings(5, 3, 0).shape
    ((6, 3), (4, 5))
    >>> o = _orderings(5, 4, 0); bool((o[1] == o[0][::-1]).all() and (o[3] == o[2][::-1]).all())
    True
    """
    if n_players <= 1:
        return np.zeros((1, n_players), dtype=np.intp)
    if math.factorial(n_players) <= permutations:
        return np.array(list(itertools.permutations(range(n_players))), dtype=np.intp)
    rng = np.random.default_rng(seed)
    pairs = [rng.permutation(n_players) for _ in range(max(1, (permutations + 1) // 2))]
    return np.array([o for first in pairs for o in (first, first[::-1])], dtype=np.intp)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-9, 1 - 1e-9)
    return np.log(p / (1 - p))


def _value(x: float) -> float | None:
    if math.isnan(x):
        return None
    return int(x) if float(x).is_integer() else round(float(x), 4)


MATERIAL_SHARE = 0.1
"""A reason raising the risk by less than this share of the largest one gives no action: a tenure worth
+0.002 log-odds beside silence worth +1.5 does not make a customer one for onboarding."""

NEW_CUSTOMER_DAYS = 90.0
"""A customer is new, and onboarding is what they need, for this many days after their first event."""

WIN_BACK = "win-back offer timed to their usual order rhythm"
NEXT_ORDER = "an offer on their next order, timed to their usual order rhythm"
PERSONAL_WIN_BACK = "personal call from an account manager with a loyalty offer before they lapse"
SECOND_ORDER = "second-order nudge: a first-repeat discount on what they bought"
SENIOR_SUPPORT = "call from a senior support agent about their poorly rated tickets"
SERVICE_RECOVERY = (
    "service recovery: an account manager follows up on their tickets and offers a goodwill credit"
)
EXPEDITE = "apologise and expedite open tickets"
RETURNS = "review their recent returns and offer a hassle-free exchange"
ONBOARDING = "onboarding follow-up: a welcome offer on their next order"
LOYALTY = "loyalty offer on their next order, thanking them for their custom so far"
VERIFY = "ask them to confirm their contact details so offers reach them"
CHECK_IN = "personal check-in from customer success to ask how we can help"
# two offers on the same next order are one too many: the first reason's stands (a win-back and a loyalty
# offer came together in 43 of 770 alerts of a review)
_NEXT_ORDER_OFFERS = frozenset((NEXT_ORDER, LOYALTY, WIN_BACK, PERSONAL_WIN_BACK, ONBOARDING, SECOND_ORDER))

_KIND_OF_FEATURE = {
    **dict.fromkeys(
        (
            "recency_days",
            "recency_ratio",
            "recency_gap_z",
            "mean_days_between_orders",
            "order_gap_cv",
            "orders_90d",
            "orders_30d",
            "orders_trend",
        ),
        "quiet",
    ),
    **dict.fromkeys(("orders_total", "tenure_days"), "relationship"),
    **dict.fromkeys(
        (
            "negative_tickets_total",
            "negative_ticket_share",
            "avg_satisfaction",
            "tickets_total",
            "tickets_90d",
            "tickets_30d",
            "days_since_last_ticket",
        ),
        "tickets",
    ),
    **dict.fromkeys(("open_tickets", "avg_resolution_hours"), "open_tickets"),
    **dict.fromkeys(("returns_total", "return_rate"), "returns"),
    **dict.fromkeys(("email_verified", "phone_verified"), "contact"),
}
# A reason is its group, whichever member names it: every member acts as its lead does (``spent_90d=0``
# naming the reason "what they bought lately" is a customer going quiet, not one for a discount).
_KIND_OF_FEATURE.update({member: _KIND_OF_FEATURE[group[0]] for group in REASON_GROUPS for member in group})


@dataclass(frozen=True, slots=True)
class _Customer:
    """What the actions depend on besides the reasons; ``None`` where not known."""

    valuable: bool
    orders_total: float | None
    tenure_days: float | None
    negative_tickets: float | None
    open_tickets: float | None
    returns_total: float | None
    verified: bool
    overdue: bool = True  # silent for longer than their usual gap between orders (or not known)

    def action(self, kind: str) -> str | None:
        """The action for a reason of ``kind`` raising the risk, or ``None`` when the customer gives it
        nothing to act on (no bad or open tickets, no returns, details verified)."""
        never_ordered = self.orders_total == 0
        one_time = self.orders_total == 1
        if kind == "quiet":
            if never_ordered:
                return ONBOARDING
            if self.valuable:
                return PERSONAL_WIN_BACK
            # a win-back for a customer who ordered days ago, within their usual rhythm, reads as a
            # mistake (a review: alerts raised by the customer's own order, "win-back" the action)
            return SECOND_ORDER if one_time else WIN_BACK if self.overdue else NEXT_ORDER
        if kind == "relationship":
            if never_ordered or self.tenure_days is None or self.tenure_days < NEW_CUSTOMER_DAYS:
                return SECOND_ORDER if one_time else ONBOARDING
            return PERSONAL_WIN_BACK if self.valuable else SECOND_ORDER if one_time else LOYALTY
        if kind in ("tickets", "open_tickets"):
            if self.open_tickets != 0 and (kind == "open_tickets" or self.negative_tickets == 0):
                return SERVICE_RECOVERY if self.valuable else EXPEDITE
            if self.negative_tickets == 0:
                return None  # tickets that went well, all closed: nothing to put right
            return SERVICE_RECOVERY if self.valuable else SENIOR_SUPPORT
        if kind == "returns":
            return None if self.returns_total == 0 else RETURNS
        return None if self.verified else VERIFY  # contact


def _overdue(recency_days: float | None, mean_gap_days: float | None) -> bool:
    """Whether a repeat buyer has been silent for longer than their usual gap (True when not known)."""
    return recency_days is None or mean_gap_days is None or recency_days > mean_gap_days


def recommended_actions(
    reasons: Sequence[Reason],
    *,
    value_at_risk: float | None = None,
    features: Mapping[str, Any] | None = None,
    high_value_at_risk: float = HIGH_VALUE_AT_RISK,
) -> list[str]:
    """Actions for the reasons that raise risk, most important first; always at least one.

    Who the customer is changes the action. ``features`` are the customer's features the reasons come
    from (a feature missing there is taken from a reason of its name, else not known):

    - with ``value_at_risk`` of at least ``high_value_at_risk`` a person calls: an account manager for a
      customer going quiet or long-standing, service recovery with a goodwill credit for bad tickets;
    - a one-time buyer (``orders_total`` 1) going quiet gets a nudge toward a second order, a customer who
      never ordered an onboarding follow-up; a repeat buyer a win-back once silent for longer than their
      usual gap (``mean_days_between_orders``), before that an offer on their next order;
    - ``tenure_days`` or ``orders_total`` raising the risk means onboarding for a new customer (first
      :data:`NEW_CUSTOMER_DAYS` days) and a loyalty offer for a long-standing one;
    - only a reason raising the risk by at least :data:`MATERIAL_SHARE` of the largest one gives an action;
    - a ticket reason needs something to put right: poorly rated tickets (a senior support call) or open
      ones (expedite them); a reason with nothing to act on gives no action: tickets that went well and are
      closed (what raised the risk is in how the model sees their history, not in anything to fix), returns
      without returns, contact details already verified.

    >>> tickets = [Reason("negative_tickets_total", 3, 1.2), Reason("recency_days", 40, 0.3)]
    >>> for action in recommended_actions(tickets, value_at_risk=240.0, features={"orders_total": 14}):
    ...     print(action)
    service recovery: an account manager follows up on their tickets and offers a goodwill credit
    personal call from an account manager with a loyalty offer before they lapse
    >>> quiet = [Reason("recency_days", 200, 1.5), Reason("orders_total", 1, 0.6)]
    >>> recommended_actions(quiet, value_at_risk=4.5, features={"tenure_days": 400})
    ['second-order nudge: a first-repeat discount on what they bought']
    >>> recommended_actions([Reason("tenure_days", 480, 0.9)], features={"orders_total": 5})
    ['loyalty offer on their next order, thanking them for their custom so far']
    >>> recommended_actions([])
    ['personal check-in from customer success to ask how we can help']

    A repeat buyer whose orders slow down but who ordered within their usual rhythm is not won back:

    >>> slowing = [Reason("orders_90d", 1, 0.8)]
    >>> rhythm = {"orders_total": 6, "mean_days_between_orders": 40}
    >>> recommended_actions(slowing, features={**rhythm, "recency_days": 2})
    ['an offer on their next order, timed to their usual order rhythm']
    >>> recommended_actions(slowing, features={**rhythm, "recency_days": 55})
    ['win-back offer timed to their usual order rhythm']

    One offer on their next order, the first reason's: a lapsed long-standing customer is won back, not
    also thanked with a loyalty offer:

    >>> lapsed = [Reason("recency_days", 80, 1.1), Reason("tenure_days", 700, 0.5)]
    >>> recommended_actions(lapsed, features={**rhythm, "orders_total": 9})
    ['win-back offer timed to their usual order rhythm']
    """
    given = {r.feature: r.value for r in reasons}
    known = {**given, **(features or {})}

    def number(name: str) -> float | None:
        x = known.get(name)
        return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)

    customer = _Customer(
        valuable=value_at_risk is not None and value_at_risk > 0 and value_at_risk >= high_value_at_risk,
        orders_total=number("orders_total"),
        tenure_days=number("tenure_days"),
        negative_tickets=number("negative_tickets_total"),
        open_tickets=number("open_tickets"),
        returns_total=number("returns_total"),
        verified=number("email_verified") == 1 and number("phone_verified") in (1, None),
        overdue=_overdue(number("recency_days"), number("mean_days_between_orders")),
    )
    actions: list[str] = []
    largest = max((r.contribution for r in reasons), default=0.0)
    for reason in reasons:
        if reason.contribution <= 0 or reason.contribution < MATERIAL_SHARE * largest:
            continue
        kind = _KIND_OF_FEATURE.get(reason.feature)
        action = None if kind is None else customer.action(kind)
        second_offer = action in _NEXT_ORDER_OFFERS and not _NEXT_ORDER_OFFERS.isdisjoint(actions)
        if action is None or action in actions or second_offer:
            continue  # nothing to do, said already, or a second offer on the same next order
        actions.append(action)
    return actions or [CHECK_IN]
