"""Explanations: additive contributions to the blended log-odds, largest first, and their actions."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from churnstream.messages import Reason
from churnstream.models.batch import BatchModel, Calibration
from churnstream.models.blend import Blender
from churnstream.models.explain import (
    CHECK_IN,
    EXPEDITE,
    LOYALTY,
    NEW_CUSTOMER_DAYS,
    NEXT_ORDER,
    ONBOARDING,
    PERSONAL_WIN_BACK,
    RETURNS,
    SECOND_ORDER,
    SENIOR_SUPPORT,
    SERVICE_RECOVERY,
    UNIT,
    VERIFY,
    WIN_BACK,
    explain,
    recommended_actions,
)
from churnstream.models.online import OnlineModel
from churnstream.predictions import reasons_text

NAMES = ["recency_days", "negative_tickets_total", "open_tickets", "spent_90d", "age"]
MEDIANS = {
    "recency_days": 10.0,
    "negative_tickets_total": 0.0,
    "open_tickets": 0.0,
    "spent_90d": 100.0,
    "age": 40.0,
}
ROWS = np.array(
    [
        [60.0, 4.0, 0.0, 100.0, 40.0],
        [45.0, 0.0, 3.0, 20.0, np.nan],
        [12.0, 1.0, 1.0, 90.0, 30.0],
        [1.0, 0.0, 0.0, 400.0, 25.0],
    ]
)


def _world(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = np.column_stack(
        [
            rng.exponential(15, n),
            rng.poisson(0.5, n),
            rng.poisson(0.3, n),
            rng.gamma(2, 60, n),
            rng.integers(18, 80, n),
        ]
    ).astype(float)
    logit = -2.0 + 0.08 * X[:, 0] + 0.9 * X[:, 1] + 0.5 * X[:, 2] - 0.002 * X[:, 3]
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return X, y


@pytest.fixture(scope="module")
def models() -> tuple[BatchModel, OnlineModel, Blender]:
    X, y = _world(4000, 0)
    estimator = make_pipeline(SimpleImputer(), LogisticRegression(max_iter=1000)).fit(X, y)
    batch = BatchModel(estimator=estimator, feature_names=NAMES, medians=MEDIANS)
    batch.calibration = Calibration.fit(batch.raw_score(X), y, "isotonic")
    online = OnlineModel(feature_names=NAMES, min_learned=100)
    rows = [dict(zip(NAMES, x, strict=True)) for x in X.tolist()]
    online.learn_many(rows, y.tolist())
    blender = Blender(min_pairs=50)
    X2, y2 = _world(1000, 1)
    rows2 = [dict(zip(NAMES, x, strict=True)) for x in X2.tolist()]
    for b, o, label in zip(batch.predict_proba(X2), online.predict_many(rows2), y2, strict=True):
        blender.observe(float(b), o, int(label))
    assert 0.0 < blender.weights()["online"] < 1.0  # both models matter, so the test covers the blend
    return batch, online, blender


def _rows(X: np.ndarray) -> list[dict[str, float | None]]:
    return [{n: (None if np.isnan(v) else v) for n, v in zip(NAMES, x, strict=True)} for x in X.tolist()]


def _log_odds(models: tuple[BatchModel, OnlineModel, Blender], X: np.ndarray) -> np.ndarray:
    batch, online, blender = models
    p = blender.blend(batch.predict_proba(X), online.predict_many(_rows(X)))
    return np.asarray(np.log(p / (1 - p)))


def _exact_shapley(models: tuple, x: np.ndarray) -> dict[str, float]:
    """Baseline Shapley values of one row against the medians, the slow way: every coalition, weighted."""
    reference = np.array([MEDIANS[n] for n in NAMES])
    d = len(NAMES)
    coalitions = list(itertools.product([False, True], repeat=d))
    inputs = np.array([np.where(np.array(c), x, reference) for c in coalitions])
    value = dict(zip(coalitions, _log_odds(models, inputs), strict=True))
    out = {}
    for j, name in enumerate(NAMES):
        total = 0.0
        for c in coalitions:
            if not c[j]:
                with_j = tuple(True if i == j else v for i, v in enumerate(c))
                s = sum(c)
                weight = math.factorial(s) * math.factorial(d - s - 1) / math.factorial(d)
                total += weight * (value[with_j] - value[c])
        out[name] = total
    return out


def test_contributions_and_base_add_up_to_the_blended_log_odds(models: tuple) -> None:
    explained = explain(*models, ROWS, _rows(ROWS), top_k=len(NAMES))
    reference = np.array([[MEDIANS[n] for n in NAMES]])
    for e, log_odds in zip(explained, _log_odds(models, ROWS), strict=True):
        assert e.unit == UNIT == "log-odds"
        assert e.base == pytest.approx(_log_odds(models, reference)[0], abs=1e-12)
        assert len(e.reasons) == len(NAMES)
        assert e.base + sum(r.contribution for r in e.reasons) == pytest.approx(log_odds, abs=1e-9)


def test_the_reasons_not_listed_are_summed_so_a_listed_few_still_add_up(models: tuple) -> None:
    """An alert lists 3-4 reasons; a team checking base + contributions against the score found up to
    1.77 log-odds missing and no word of it. ``other`` carries the rest."""
    explained = explain(*models, ROWS, _rows(ROWS), top_k=1)
    for e, log_odds in zip(explained, _log_odds(models, ROWS), strict=True):
        assert len(e.reasons) < len(NAMES)
        listed = e.base + sum(r.contribution for r in e.reasons)
        assert listed + e.other == pytest.approx(log_odds, abs=1e-9)
        written = e.to_json()
        assert written["other"] == round(e.other, 6)
    assert any(abs(e.other) > 0.01 for e in explained)  # the listed few alone do not add up


def test_with_every_ordering_the_contributions_are_exact_shapley_values(models: tuple) -> None:
    explained = explain(*models, ROWS, _rows(ROWS), top_k=len(NAMES), groups=(), permutations=120)
    for e, x in zip(explained, ROWS, strict=True):
        exact = _exact_shapley(models, x)
        assert {r.feature: r.contribution for r in e.reasons} == pytest.approx(exact, abs=1e-9)


def test_sampled_orderings_stay_close_to_exact_shapley_values(models: tuple) -> None:
    explained = explain(*models, ROWS, _rows(ROWS), top_k=len(NAMES), groups=())
    for e, x in zip(explained, ROWS, strict=True):
        exact = _exact_shapley(models, x)
        spread = sum(abs(v) for v in exact.values())
        for r in e.reasons:
            assert r.contribution == pytest.approx(exact[r.feature], abs=0.1 * spread)


def test_reasons_raising_the_risk_come_first_then_what_lowers_it_most(models: tuple) -> None:
    explained = explain(*models, ROWS, _rows(ROWS), top_k=1)
    assert all(len(e.reasons) >= 3 for e in explained)  # at least three, whatever top_k says
    assert {r.feature for r in explained[0].reasons[:2]} == {"recency_days", "negative_tickets_total"}
    assert explained[0].reasons[0].contribution > 1.0  # 50 days overdue moves the log-odds a lot
    assert {r.feature for r in explained[1].reasons[:2]} == {"recency_days", "open_tickets"}
    # a customer who ordered yesterday: the recent order lowers the risk most, listed after what raises it
    assert [r.contribution > 0 for r in explained[3].reasons][:2] == [True, False]
    assert explained[3].reasons[1].feature == "recency_days"
    full = explain(*models, ROWS, _rows(ROWS), top_k=len(NAMES))
    for e, x, everything in zip(explained, ROWS, full, strict=True):
        raising = sorted((r for r in everything.reasons if r.contribution > 0), key=lambda r: -r.contribution)
        lowering = sorted(
            (r for r in everything.reasons if r.contribution <= 0), key=lambda r: r.contribution
        )
        # the three raising it most, then the one lowering it most (more when fewer raise it)
        extra = max(3 - len(raising[:3]), 1 if any(r.contribution < 0 for r in lowering) else 0)
        expected = raising[:3] + lowering[:extra]
        assert [r.feature for r in e.reasons] == [r.feature for r in expected]
        for r in e.reasons:
            v = x[NAMES.index(r.feature)]
            assert r.value == (None if np.isnan(v) else v)


def test_the_same_customer_gets_the_same_reasons_alone_or_in_a_batch(models: tuple) -> None:
    together = explain(*models, ROWS, _rows(ROWS))
    for i in range(len(ROWS)):
        alone = explain(*models, ROWS[i : i + 1], _rows(ROWS[i : i + 1]))[0]
        assert [r.feature for r in alone.reasons] == [r.feature for r in together[i].reasons]
        assert [r.contribution for r in alone.reasons] == pytest.approx(
            [r.contribution for r in together[i].reasons], abs=1e-12
        )
    other_seed = explain(*models, ROWS, _rows(ROWS), groups=(), seed=1)
    same_seed = explain(*models, ROWS, _rows(ROWS), groups=())
    assert same_seed == explain(*models, ROWS, _rows(ROWS), groups=())
    assert [e.reasons for e in other_seed] != [e.reasons for e in same_seed]  # the seed matters


def test_a_model_additive_in_log_odds_gets_its_exact_terms_and_groups_add_their_members(
    models: tuple,
) -> None:
    batch, _, _ = models
    additive = BatchModel(estimator=batch.estimator, feature_names=NAMES, medians=MEDIANS)  # uncalibrated LR
    imputer, lr = batch.estimator[0], batch.estimator[-1]
    reference = np.array([MEDIANS[n] for n in NAMES])
    X = ROWS[:2]
    terms = lr.coef_[0] * (np.where(np.isnan(X), imputer.statistics_, X) - reference)
    single = explain(additive, None, Blender(), X, _rows(X), top_k=5, groups=())
    grouped = explain(additive, None, Blender(), X, _rows(X), top_k=5, groups=[("spent_90d", "age")])
    for r, (one, two) in enumerate(zip(single, grouped, strict=True)):
        assert {x.feature: x.contribution for x in one.reasons} == pytest.approx(
            dict(zip(NAMES, terms[r], strict=True)), abs=1e-9
        )
        by_name = {x.feature: x for x in two.reasons}
        assert set(by_name) == {"recency_days", "negative_tickets_total", "open_tickets", "spent_90d"}
        assert by_name["spent_90d"].contribution == pytest.approx(terms[r, 3] + terms[r, 4], abs=1e-9)
        assert by_name["spent_90d"].value == X[r, 3]  # a group shows its lead feature's value


def test_a_typical_customer_has_no_contributions(models: tuple) -> None:
    X = np.array([[MEDIANS[n] for n in NAMES]])
    (e,) = explain(*models, X, _rows(X))
    assert all(r.contribution == 0 for r in e.reasons) and len(e.reasons) == 3
    assert e.base == pytest.approx(_log_odds(models, X)[0], abs=1e-12)
    assert recommended_actions(e.reasons) == [CHECK_IN]


def test_a_group_is_named_after_a_member_that_differs_from_the_reference(models: tuple) -> None:
    """open_tickets=0 raising the risk read as nonsense when slow resolution (another member of its group)
    moved the score: the reason names the member that differs from the typical customer."""
    groups = [("open_tickets", "age", "spent_90d")]
    X = np.array(
        [
            [10.0, 0.0, 0.0, 100.0, 25.0],  # open_tickets and spent_90d at the reference: age moved it
            [10.0, 0.0, 2.0, 100.0, 25.0],  # open_tickets differs: it leads
            [10.0, 0.0, 0.0, 100.0, 40.0],  # all at the reference: the lead, contributing nothing
            [10.0, 0.0, 0.0, 100.0, np.nan],  # missing where the reference has a value differs too
        ]
    )
    named = [
        next(r for r in e.reasons if r.feature in groups[0])
        for e in explain(*models, X, _rows(X), groups=groups, top_k=3)
    ]
    assert [(r.feature, r.value) for r in named] == [
        ("age", 25),
        ("open_tickets", 2),
        ("open_tickets", 0),
        ("age", None),
    ]
    assert named[0].contribution != 0 and named[2].contribution == 0


def test_a_group_is_named_after_the_member_that_moves_the_score_its_way(models: tuple) -> None:
    """A customer who ordered today (recency 0, below the typical 10: it lowers the risk) with three
    negative tickets (raising it more) has a group raising the risk: it reads negative_tickets_total=3.
    Named after its first member that differed, it read recency_days=0 (+...), and was offered a
    win-back at the time of the order they had just placed."""
    groups = [("recency_days", "negative_tickets_total")]
    X = np.array([[0.0, 3.0, 0.0, 100.0, 40.0], [0.0, 1.0, 0.0, 100.0, 40.0]])
    named = [
        next(r for r in e.reasons if r.feature in groups[0])
        for e in explain(*models, X, _rows(X), groups=groups, top_k=3)
    ]
    assert named[0].contribution > 0 and (named[0].feature, named[0].value) == ("negative_tickets_total", 3)
    # one negative ticket does not outweigh the fresh order: the group lowers the risk, and says why
    assert named[1].contribution < 0 and (named[1].feature, named[1].value) == ("recency_days", 0)


def test_batch_only_explanations_without_an_online_model(models: tuple) -> None:
    batch, _, _ = models
    X = np.array([[70.0, 0.0, 0.0, 100.0, 40.0]])
    (e,) = explain(batch, None, Blender(), X, _rows(X))
    # with only recency atypical, its contribution is the whole distance from the typical customer
    typical = np.array([[MEDIANS[n] for n in NAMES]])
    p, p_typical = batch.predict_proba(X)[0], batch.predict_proba(typical)[0]
    expected = math.log(p / (1 - p)) - math.log(p_typical / (1 - p_typical))
    assert e.reasons[0].feature == "recency_days"
    assert e.reasons[0].contribution == pytest.approx(expected, abs=1e-12) and expected > 1.0
    assert [r.contribution for r in e.reasons[1:]] == [0.0, 0.0]
    assert explain(batch, None, Blender(), np.zeros((0, len(NAMES))), []) == []


def test_recommended_actions_follow_the_reasons() -> None:
    reasons = [
        Reason("negative_tickets_total", 3, 0.2),
        Reason("recency_days", 50.0, 0.1),
        Reason("open_tickets", 2, 0.05),
        Reason("spent_90d", 400.0, -0.03),
    ]
    assert recommended_actions(reasons) == [SENIOR_SUPPORT, WIN_BACK, EXPEDITE]
    assert recommended_actions([Reason("age", 30, 0.2)]) == [CHECK_IN]


def test_recommended_actions_weigh_what_the_customer_is_worth() -> None:
    tickets = [Reason("negative_tickets_total", 3, 1.1), Reason("recency_days", 30.0, 0.4)]
    regular = {"orders_total": 12, "tickets_total": 5}
    assert recommended_actions(tickets, value_at_risk=400.0, features=regular) == [
        SERVICE_RECOVERY,
        PERSONAL_WIN_BACK,
    ]
    assert recommended_actions(tickets, value_at_risk=10.0, features=regular) == [SENIOR_SUPPORT, WIN_BACK]
    quiet = [Reason("recency_days", 200.0, 1.6), Reason("orders_total", 1, 0.5)]
    assert recommended_actions(quiet, value_at_risk=3.0) == [SECOND_ORDER]  # one order, from the reason
    assert recommended_actions(quiet, value_at_risk=3.0, features={"orders_total": 6}) != [SECOND_ORDER]
    assert recommended_actions(tickets, value_at_risk=60.0, high_value_at_risk=100.0)[0] == SENIOR_SUPPORT


@pytest.mark.parametrize(
    ("tenure_days", "orders_total", "value_at_risk", "expected"),
    [
        (12.0, 3, 5.0, ONBOARDING),
        (NEW_CUSTOMER_DAYS - 0.5, 3, 500.0, ONBOARDING),
        (None, 0, 5.0, ONBOARDING),  # no orders yet, tenure not known: new
        (20.0, 1, 5.0, SECOND_ORDER),
        (NEW_CUSTOMER_DAYS, 3, 5.0, LOYALTY),
        (480.0, 7, 5.0, LOYALTY),
        (480.0, 7, 500.0, PERSONAL_WIN_BACK),
        (480.0, 1, 5.0, SECOND_ORDER),
    ],
)
def test_tenure_raising_the_risk_means_onboarding_only_for_a_new_customer(
    tenure_days: float | None, orders_total: int, value_at_risk: float, expected: str
) -> None:
    """CDNOW's customers are 450-530 days old when the replay alerts on them, with `tenure_days` leading
    most alerts: a welcome offer is no action for them."""
    features = {"tenure_days": tenure_days, "orders_total": orders_total}
    for lead in (Reason("tenure_days", tenure_days, 0.8), Reason("orders_total", orders_total, 0.8)):
        assert recommended_actions([lead], value_at_risk=value_at_risk, features=features) == [expected]
    # the reason's own value when the features are not given
    alone = [Reason("tenure_days", tenure_days, 0.8), Reason("orders_total", orders_total, 0.1)]
    assert recommended_actions(alone, value_at_risk=value_at_risk) == [expected]


def test_a_reason_with_nothing_to_act_on_gives_no_action() -> None:
    """A ticket, return or contact reason can raise the risk of a customer whose tickets went well, who
    returned nothing or whose details are verified: an action about them would read as nonsense."""
    fine = {
        "tickets_total": 3,
        "negative_tickets_total": 0,
        "open_tickets": 0,
        "returns_total": 0,
        "email_verified": 1,
        "phone_verified": 1,
        "orders_total": 4,
        "tenure_days": 300.0,
    }
    reasons = [
        Reason("negative_tickets_total", 0, 0.3),
        Reason("tickets_total", 3, 0.2),
        Reason("open_tickets", 0, 0.2),
        Reason("returns_total", 0, 0.1),
        Reason("email_verified", 1, 0.1),
    ]
    assert recommended_actions(reasons, features=fine) == [CHECK_IN]
    assert recommended_actions(reasons, value_at_risk=500.0, features=fine) == [CHECK_IN]
    assert recommended_actions([*reasons, Reason("recency_days", 80.0, 0.05)], features=fine) == [WIN_BACK]
    # something to act on: a poorly rated ticket, returns, a phone not verified
    bad = {**fine, "negative_tickets_total": 1, "returns_total": 2, "phone_verified": 0}
    assert recommended_actions(reasons, features=bad) == [SENIOR_SUPPORT, RETURNS, VERIFY]
    assert recommended_actions(reasons, value_at_risk=90.0, features=bad)[0] == SERVICE_RECOVERY
    # open tickets: expedite them, whichever ticket reason raised the risk
    open_now = {**fine, "open_tickets": 2}
    assert recommended_actions([Reason("open_tickets", 2, 0.2)], features=open_now) == [EXPEDITE]
    assert recommended_actions([Reason("tickets_total", 3, 0.2)], features=open_now) == [EXPEDITE]
    # from the reasons alone, with nothing known against them, a ticket reason is acted on
    assert recommended_actions([Reason("tickets_total", 3, 0.2)]) == [SENIOR_SUPPORT]


def test_a_customer_who_never_ordered_gets_onboarding_not_a_second_order() -> None:
    never = {"orders_total": 0, "tenure_days": 200.0}
    for lead in ("recency_days", "orders_total", "tenure_days"):
        assert recommended_actions([Reason(lead, 0, 0.4)], features=never) == [ONBOARDING]


def test_rows_of_several_learners_explained_at_once_are_explained_as_each_alone(models: tuple) -> None:
    """The scorer explains every partition's alerts in one call (one batch-model prediction for all):
    each row gets what its own learner alone gives it; a learner not ready leaves the batch model alone."""
    batch, online, blender = models
    not_ready = OnlineModel(feature_names=NAMES, min_learned=100)
    learners = [(online, blender), (not_ready, Blender()), (None, Blender())]
    learner_of = [i % 3 for i in range(len(ROWS))]
    together = explain(batch, None, Blender(), ROWS, _rows(ROWS), learners=learners, learner_of=learner_of)
    for i, j in enumerate(learner_of):
        alone = explain(batch, *learners[j], ROWS[i : i + 1], _rows(ROWS[i : i + 1]))[0]
        assert together[i].base == pytest.approx(alone.base, abs=1e-12)
        assert [(r.feature, r.contribution) for r in together[i].reasons] == [
            (r.feature, pytest.approx(r.contribution, abs=1e-12)) for r in alone.reasons
        ]
    assert together[0].base != pytest.approx(together[1].base)  # the blend, against the batch model alone


def test_a_value_at_risk_of_zero_never_calls_for_a_person() -> None:
    """A model whose top 1 % have no value at risk fits a personal-call threshold of 0: still no call for
    a customer worth nothing."""
    quiet = [Reason("recency_days", 200.0, 1.0)]
    features = {"orders_total": 3, "tenure_days": 400.0}
    assert recommended_actions(quiet, value_at_risk=0.0, features=features, high_value_at_risk=0.0) == [
        WIN_BACK
    ]
    assert recommended_actions(quiet, value_at_risk=0.5, features=features, high_value_at_risk=0.0) == [
        PERSONAL_WIN_BACK
    ]


def test_reasons_text_shows_a_value_that_is_not_finite_instead_of_failing() -> None:
    """Another producer's alert may carry NaN (json.loads reads it): `churnstream alerts` lists it."""
    alert = json.loads(
        '{"top_reasons": [{"feature": "avg_satisfaction", "value": NaN, "contribution": 0.3},'
        ' {"feature": "x", "value": Infinity, "contribution": 0.1}]}'
    )
    assert reasons_text(alert) == "avg_satisfaction=nan (+0.3), x=inf (+0.1)"


def test_a_reason_raising_the_risk_by_a_trifle_gives_no_action() -> None:
    """C002 of the README's sample got an onboarding follow-up from tenure_days worth +0.002 log-odds."""
    reasons = [
        Reason("recency_days", 40, 1.5),
        Reason("tenure_days", 75, 0.002),
        Reason("open_tickets", 1, 0.2),
    ]
    features = {"orders_total": 2, "tenure_days": 75, "open_tickets": 1, "negative_tickets_total": 0}
    assert recommended_actions(reasons, features=features) == [WIN_BACK, EXPEDITE]
    assert ONBOARDING in recommended_actions([Reason("tenure_days", 75, 0.002)], features=features)


def test_a_reason_acts_as_its_group_whichever_member_names_it() -> None:
    """Since a group is named after the member that moves the score most, 'what they bought lately' may
    read spent_90d=0 or orders_90d=0: either is a customer going quiet (a discount for one of them and a
    win-back for the other said the same thing two ways)."""
    features = {"orders_total": 6, "tenure_days": 400}
    for member in ("orders_90d", "spent_90d", "spent_30d", "orders_trend"):
        assert recommended_actions([Reason(member, 0, 0.4)], features=features) == [WIN_BACK], member
    for member in ("orders_total", "spent_total", "avg_order_value"):
        assert recommended_actions([Reason(member, 1, 0.4)], features=features) == [LOYALTY], member


def test_a_repeat_buyer_within_their_rhythm_gets_a_next_order_offer_not_a_win_back() -> None:
    """8 % of a simulated run's alerts came with the customer's own order of that day, the action a
    win-back (a review): a retention team would call someone who bought minutes ago to win them back."""
    slowing = [Reason("orders_trend", -1.5, 0.9), Reason("recency_ratio", 0.0, 0.4)]
    regular = {"orders_total": 27, "mean_days_between_orders": 3.3}
    assert recommended_actions(slowing, features={**regular, "recency_days": 0.0}) == [NEXT_ORDER]
    assert recommended_actions(slowing, features={**regular, "recency_days": 5.0}) == [WIN_BACK]
    assert recommended_actions(slowing, features={"orders_total": 1, "recency_days": 0.0}) == [SECOND_ORDER]


def test_day_granular_repeat_buyers_on_their_order_day_and_one_offer_per_next_order() -> None:
    """A review of the rule: a buyer whose orders all fell on one day (CDNOW's day resolution: mean gap 0,
    recency 0) still got the win-back; and a quiet reason with a relationship one gave two discounts on
    the same next order."""
    same_day = {"orders_total": 6, "mean_days_between_orders": 0.0, "recency_days": 0.0}
    assert recommended_actions([Reason("orders_90d", 1, 0.8)], features=same_day) == [NEXT_ORDER]
    both = [Reason("orders_90d", 1, 0.8), Reason("tenure_days", 480, 0.5)]
    regular = {"orders_total": 6, "mean_days_between_orders": 40.0, "recency_days": 3.0}
    assert recommended_actions(both, features=regular) == [NEXT_ORDER]
