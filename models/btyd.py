"""Buy-till-you-die models: BG/NBD and Pareto/NBD, fitted by maximum likelihood with numpy and scipy.

Both describe a customer who buys at a Poisson rate ``lambda ~ Gamma(r, alpha)`` while "alive" and
drops out unobserved: BG/NBD (Fader, Hardie & Lee 2005) after any purchase with probability
``p ~ Beta(a, b)``, Pareto/NBD (Schmittlein, Morrison & Colombo 1987) after an exponential lifetime of
rate ``mu ~ Gamma(s, beta)``. A customer's history enters through three numbers: ``x`` repeat purchases
(after the first), ``t_x`` the time of the last purchase and ``T`` the time of observation, both counted
from the first purchase. Times are in any unit (``alpha`` and ``beta`` come out in that unit); the
feature transform uses days.

Why not a library: ``lifetimes`` (the reference implementation) is unmaintained and needs ``autograd``
and ``dill``; ``btyd`` (its successor, a 2022 beta) and ``pymc-marketing`` need PyMC. The formulas are
short, so they are written here, vectorised, with the paper equations cited where they are used.

>>> import numpy as np
>>> m = BGNBD(r=0.243, alpha=4.414, a=0.793, b=2.426)  # CDNOW, weeks (Fader, Hardie & Lee 2005)
>>> round(float(m.expected_purchases(39.0, 2, 30.43, 38.86)), 3)  # their worked example: 1.226
1.226
>>> m.p_alive([0, 2, 2], [0.0, 30.43, 10.0], [38.86, 38.86, 38.86]).round(3).tolist()
[1.0, 0.727, 0.268]
>>> p = ParetoNBD(r=0.553, alpha=10.578, s=0.606, beta=11.669)  # CDNOW, weeks (Fader & Hardie 2005)
>>> p.p_alive([0, 2, 2], [0.0, 30.43, 10.0], [38.86, 38.86, 38.86]).round(3).tolist()
[0.295, 0.869, 0.269]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import astuple, dataclass
from typing import Any, ClassVar, TypeVar

import numpy as np
from scipy.optimize import minimize
from scipy.special import betaln, gammaln, hyp2f1

Array = np.ndarray
M = TypeVar("M", "BGNBD", "ParetoNBD")


def _arrays(x: Any, t_x: Any, T: Any) -> tuple[Array, Array, Array]:
    x_, tx_, T_ = (np.asarray(v, dtype=np.float64) for v in (x, t_x, T))
    return np.broadcast_arrays(x_, tx_, T_)  # type: ignore[return-value]


def check_inputs(x: Any, t_x: Any, T: Any) -> tuple[Array, Array, Array]:
    """``(x, t_x, T)`` as float arrays; ``ValueError`` unless ``x >= 0`` and ``0 <= t_x <= T``, finite.

    A customer with ``x = 0`` has ``t_x = 0`` by definition (no repeat purchase): any other ``t_x`` is
    a mistake in the caller's bookkeeping and is refused rather than silently fitted.
    """
    x_, tx_, T_ = _arrays(x, t_x, T)
    if not (np.all(np.isfinite(x_)) and np.all(np.isfinite(tx_)) and np.all(np.isfinite(T_))):
        raise ValueError("x, t_x and T must be finite")
    if np.any(x_ < 0) or np.any(tx_ < 0) or np.any(tx_ > T_ * (1 + 1e-12)):
        raise ValueError("need x >= 0 and 0 <= t_x <= T")
    if np.any((x_ == 0) & (tx_ != 0)):
        raise ValueError("t_x must be 0 for a customer without repeat purchases (x = 0)")
    return x_, np.minimum(tx_, T_), T_


def _fit(
    neg_ll: Callable[[Array, Array, Array, Array, Array], float],
    x: Array,
    t_x: Array,
    T: Array,
    weights: Array | None,
    start: Sequence[float],
) -> tuple[Array, float]:
    """Maximise the (weighted) log-likelihood over log-parameters; returns them and the time scale used.

    Identical ``(x, t_x, T)`` rows are collapsed into one weighted row first, and times are rescaled so
    that the mean ``T`` is 10 (the optimiser then starts near the optimum whatever the time unit).
    """
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=np.float64)
    scale = float(np.mean(T)) / 10.0 if np.mean(T) > 0 else 1.0
    rows, inverse = np.unique(np.stack([x, t_x / scale, T / scale], axis=1), axis=0, return_inverse=True)
    counts = np.bincount(inverse.ravel(), weights=w.ravel())
    ux, utx, uT = rows[:, 0], rows[:, 1], rows[:, 2]
    total = counts.sum()

    def objective(log_params: Array) -> float:
        if np.any(np.abs(log_params) > 15):
            return 1e12
        with np.errstate(all="ignore"):
            value = neg_ll(np.exp(log_params), ux, utx, uT, counts) / total
        return float(value) if np.isfinite(value) else 1e12

    start_at = np.log(np.asarray(start, dtype=np.float64))
    # L-BFGS-B (numerical gradients) needs ~10x fewer likelihood evaluations than Nelder-Mead and reaches
    # the published CDNOW optima to 3 decimals; Nelder-Mead is the fallback when it reports a failure.
    best = minimize(
        objective,
        start_at,
        method="L-BFGS-B",
        bounds=[(-15.0, 15.0)] * len(start_at),
        options={"maxiter": 2000, "ftol": 1e-13, "gtol": 1e-9},
    )
    if not best.success or best.fun >= 1e12:
        fallback = minimize(
            objective,
            start_at,
            method="Nelder-Mead",
            options={"maxiter": 8000, "xatol": 1e-7, "fatol": 1e-11},
        )
        if fallback.fun < best.fun:
            best = fallback
    assert best is not None
    return np.exp(best.x), scale


@dataclass(frozen=True, slots=True)
class BGNBD:
    """The BG/NBD model (Fader, Hardie & Lee, "Counting your customers the easy way", Marketing Science
    24(2), 2005) with its four parameters; :meth:`fit` estimates them by maximum likelihood.
    """

    r: float
    alpha: float
    a: float
    b: float
    name: ClassVar[str] = "bg_nbd"

    @staticmethod
    def _log_likelihood(params: Array, x: Array, t_x: Array, T: Array) -> Array:
        # FHL 2005, eq. (6): L = B(a, b+x)/B(a, b) * G(r+x) alpha^r / (G(r) (alpha+T)^(r+x))
        #   + [x > 0] B(a+1, b+x-1)/B(a, b) * G(r+x) alpha^r / (G(r) (alpha+t_x)^(r+x))
        r, alpha, a, b = params
        common = gammaln(r + x) - gammaln(r) + r * np.log(alpha) - betaln(a, b)
        alive = betaln(a, b + x) - (r + x) * np.log(alpha + T)
        with np.errstate(all="ignore"):
            dropped = np.where(
                x > 0, betaln(a + 1, np.maximum(b + x - 1, 1e-300)) - (r + x) * np.log(alpha + t_x), -np.inf
            )
        return common + np.logaddexp(alive, dropped)  # type: ignore[no-any-return]

    @classmethod
    def fit(cls, x: Any, t_x: Any, T: Any, *, weights: Any = None) -> BGNBD:
        """Maximum-likelihood parameters from per-customer ``(x, t_x, T)`` (optionally weighted rows).

        >>> m = BGNBD.fit([0, 1, 3, 0, 2, 5, 0, 1], [0, 5, 20, 0, 30, 35, 0, 2], [40] * 8)
        >>> bool(m.r > 0 and m.alpha > 0 and m.a > 0 and m.b > 0)
        True
        """
        x_, tx_, T_ = check_inputs(x, t_x, T)

        def neg_ll(p: Array, ux: Array, utx: Array, uT: Array, w: Array) -> float:
            return -float(np.dot(w, cls._log_likelihood(p, ux, utx, uT)))

        params, scale = _fit(neg_ll, x_, tx_, T_, weights, (1.0, 1.0, 1.0, 1.0))
        r, alpha, a, b = params
        return cls(r=float(r), alpha=float(alpha * scale), a=float(a), b=float(b))

    def log_likelihood(self, x: Any, t_x: Any, T: Any) -> Array:
        """Each customer's log-likelihood under these parameters (FHL 2005, eq. 6)."""
        x_, tx_, T_ = check_inputs(x, t_x, T)
        return self._log_likelihood(np.array(astuple(self)), x_, tx_, T_)

    def _dropout_odds(self, x: Array, t_x: Array, T: Array) -> Array:
        # [x > 0] a / (b + x - 1) * ((alpha + T) / (alpha + t_x))^(r + x)
        with np.errstate(all="ignore"):
            log_odds = (
                np.log(self.a)
                - np.log(np.maximum(self.b + x - 1, 1e-300))
                + (self.r + x) * (np.log(self.alpha + T) - np.log(self.alpha + t_x))
            )
            return np.where(x > 0, np.exp(np.minimum(log_odds, 700.0)), 0.0)  # type: ignore[no-any-return]

    def p_alive(self, x: Any, t_x: Any, T: Any) -> Array:
        """P(still alive at T | x, t_x, T) (FHL 2005, eq. 10's denominator; 1 for ``x = 0``)."""
        x_, tx_, T_ = check_inputs(x, t_x, T)
        return 1.0 / (1.0 + self._dropout_odds(x_, tx_, T_))  # type: ignore[no-any-return]

    def expected_purchases(self, t: float, x: Any, t_x: Any, T: Any) -> Array:
        """E[purchases in (T, T + t] | x, t_x, T] (FHL 2005, eq. 10).

        ``(a+b+x-1)/(a-1) * [1 - ((alpha+T)/(alpha+T+t))^(r+x) 2F1(r+x, b+x; a+b+x-1; t/(alpha+T+t))]``
        divided by ``1 + [x > 0] a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x)``.
        """
        x_, tx_, T_ = check_inputs(x, t_x, T)
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        if t <= 0:
            return np.zeros_like(x_)
        z = t / (alpha + T_ + t)
        head = (a + b + x_ - 1) / (a - 1)
        tail = 1.0 - np.exp((r + x_) * np.log((alpha + T_) / (alpha + T_ + t))) * hyp2f1(
            r + x_, b + x_, a + b + x_ - 1, z
        )
        return np.maximum(head * tail / (1.0 + self._dropout_odds(x_, tx_, T_)), 0.0)  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class ParetoNBD:
    """The Pareto/NBD model (Schmittlein, Morrison & Colombo, "Counting your customers: who are they and
    what will they do next?", Management Science 33(1), 1987), with the likelihood as derived by Fader &
    Hardie, "A note on deriving the Pareto/NBD model and related expressions" (2005).
    """

    r: float
    alpha: float
    s: float
    beta: float
    name: ClassVar[str] = "pareto_nbd"

    @staticmethod
    def _log_a0(params: Array, x: Array, t_x: Array, T: Array) -> Array:
        """``log A0`` of Fader & Hardie (2005), eq. (19) (−inf when ``t_x == T``).

        alpha >= beta: A0 = 2F1(r+s+x, s+1; r+s+x+1; (alpha-beta)/(alpha+t_x)) / (alpha+t_x)^(r+s+x)
                          - 2F1(r+s+x, s+1; r+s+x+1; (alpha-beta)/(alpha+T)) / (alpha+T)^(r+s+x);
        alpha < beta: the same with (beta, r+x) in place of (alpha, s+1).
        """
        r, alpha, s, beta = params
        rsx = r + s + x
        if alpha >= beta:
            big, second = alpha, s + 1.0
        else:
            big, second = beta, r + x
        diff = abs(alpha - beta)
        with np.errstate(all="ignore"):
            first = np.log(hyp2f1(rsx, second, rsx + 1, diff / (big + t_x))) - rsx * np.log(big + t_x)
            last = np.log(hyp2f1(rsx, second, rsx + 1, diff / (big + T))) - rsx * np.log(big + T)
            return first + np.log1p(-np.exp(np.minimum(last - first, 0.0)))  # type: ignore[no-any-return]

    @classmethod
    def _log_likelihood(cls, params: Array, x: Array, t_x: Array, T: Array) -> Array:
        # Fader & Hardie (2005), eq. (18): L = G(r+x) alpha^r beta^s / G(r)
        #   * [ 1 / ((alpha+T)^(r+x) (beta+T)^s) + s / (r+s+x) * A0 ]
        r, alpha, s, beta = params
        head = gammaln(r + x) - gammaln(r) + r * np.log(alpha) + s * np.log(beta)
        alive = -(r + x) * np.log(alpha + T) - s * np.log(beta + T)
        dead = np.log(s / (r + s + x)) + cls._log_a0(params, x, t_x, T)
        return head + np.logaddexp(alive, dead)  # type: ignore[no-any-return]

    @classmethod
    def fit(cls, x: Any, t_x: Any, T: Any, *, weights: Any = None) -> ParetoNBD:
        """Maximum-likelihood parameters from per-customer ``(x, t_x, T)`` (optionally weighted rows).

        >>> m = ParetoNBD.fit([0, 1, 3, 0, 2, 5, 0, 1], [0, 5, 20, 0, 30, 35, 0, 2], [40] * 8)
        >>> bool(m.r > 0 and m.alpha > 0 and m.s > 0 and m.beta > 0)
        True
        """
        x_, tx_, T_ = check_inputs(x, t_x, T)

        def neg_ll(p: Array, ux: Array, utx: Array, uT: Array, w: Array) -> float:
            return -float(np.dot(w, cls._log_likelihood(p, ux, utx, uT)))

        params, scale = _fit(neg_ll, x_, tx_, T_, weights, (1.0, 1.0, 1.0, 1.0))
        r, alpha, s, beta = params
        return cls(r=float(r), alpha=float(alpha * scale), s=float(s), beta=float(beta * scale))

    def log_likelihood(self, x: Any, t_x: Any, T: Any) -> Array:
        """Each customer's log-likelihood under these parameters (Fader & Hardie 2005, eq. 18)."""
        x_, tx_, T_ = check_inputs(x, t_x, T)
        return self._log_likelihood(np.array(astuple(self)), x_, tx_, T_)

    def p_alive(self, x: Any, t_x: Any, T: Any) -> Array:
        """P(alive at T | x, t_x, T) = 1 / (1 + s/(r+s+x) (alpha+T)^(r+x) (beta+T)^s A0) (F&H 2005, eq. 21).

        A customer without a repeat purchase may well be gone: unlike BG/NBD, this is below 1 at ``x = 0``.
        """
        x_, tx_, T_ = check_inputs(x, t_x, T)
        params = np.array(astuple(self))
        r, alpha, s, beta = params
        log_odds = (
            np.log(s / (r + s + x_))
            + (r + x_) * np.log(alpha + T_)
            + s * np.log(beta + T_)
            + self._log_a0(params, x_, tx_, T_)
        )
        return 1.0 / (1.0 + np.exp(np.minimum(log_odds, 700.0)))  # type: ignore[no-any-return]

    def expected_purchases(self, t: float, x: Any, t_x: Any, T: Any) -> Array:
        """E[purchases in (T, T + t] | x, t_x, T] (Schmittlein et al. 1987, eq. 22; F&H 2005, eq. 22).

        ``(r+x)(beta+T) / ((alpha+T)(s-1)) * [1 - ((beta+T)/(beta+T+t))^(s-1)] * P(alive)``, whose
        ``s -> 1`` limit is ``(r+x)/(alpha+T) (beta+T) log((beta+T+t)/(beta+T)) * P(alive)``.
        """
        x_, tx_, T_ = check_inputs(x, t_x, T)
        if t <= 0:
            return np.zeros_like(x_)
        r, alpha, s, beta = self.r, self.alpha, self.s, self.beta
        log_ratio = np.log((beta + T_ + t) / (beta + T_))  # > 0
        # [1 - ((beta+T)/(beta+T+t))^(s-1)] / (s-1), without cancellation near s = 1
        factor = log_ratio if abs(s - 1.0) < 1e-9 else -np.expm1(-(s - 1.0) * log_ratio) / (s - 1.0)
        return (r + x_) * (beta + T_) / (alpha + T_) * factor * self.p_alive(x_, tx_, T_)  # type: ignore[no-any-return]


MODELS: dict[str, type[BGNBD] | type[ParetoNBD]] = {"bg_nbd": BGNBD, "pareto_nbd": ParetoNBD}
