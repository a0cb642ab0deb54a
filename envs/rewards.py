"""Rewards: functions of the equity path, vectorised over N accounts.

Each reward sees the equity marked at the previous step's close (``eq_prev``) and at this
step's close (``eq_now``), both net of every fee, slippage, funding and borrow charge, so costs
are always in the reward. Each class has a vector form (``__call__`` on arrays of shape ``(N,)``,
state per account) and a scalar form (``scalar``) doing the same IEEE operations in the same
order (bit-identical). The envs compute the same formulas inside their compiled step
(:mod:`coinrl.envs.kernel`, state in the books' state matrix); the tests hold the two to each
other bit for bit.

Available (``EnvConfig.reward``):

``log_return``
    ``log(eq_now / eq_prev)``. Sums to the log growth of the episode. A ruined account
    (``eq_now <= 0``) gives ``log(MIN_EQUITY_RATIO)`` (about -13.8) instead of ``-inf``.
``simple_return``
    ``(eq_now - eq_prev) / eq_prev``: the bar's return net of fees.
``differential_sharpe``
    Moody & Saffell's differential Sharpe ratio (1998; "Learning to trade via direct
    reinforcement", 2001). With the bar's simple return ``R`` and exponential moving moments
    ``A`` (of ``R``) and ``B`` (of ``R**2``) with rate ``eta``::

        dA = R - A_prev ;  dB = R**2 - B_prev
        D  = (B_prev * dA - 0.5 * A_prev * dB) / (B_prev - A_prev**2) ** 1.5
        A  = A_prev + eta * dA ;  B = B_prev + eta * dB

    ``D = 0`` while the moving variance ``B - A**2`` is not yet positive (the first step of an
    episode, or a flat history). Moments restart at every episode.
``drawdown_penalised``
    ``log_return - drawdown_penalty * max(dd - dd_prev, 0)`` with ``dd = 1 - eq / peak_eq``:
    every new bit of drawdown is paid for once, recoveries earn only their return.

Turnover term (``EnvConfig.turnover_penalty``, any reward kind): the env's reward is the kind's
reward minus :func:`turnover_cost` ``= turnover_penalty * (traded / eq_prev)``, with ``traded``
the notional filled in the step (quote, summed over assets), i.e. ``|Δexposure|`` of the step's
rebalance as a fraction of the equity it was decided on. Applied only when the penalty is
positive: ``0`` leaves every reward bit for bit as it was.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from .config import EnvConfig

F64 = npt.NDArray[np.float64]
IntArr = npt.NDArray[np.intp]

MIN_EQUITY_RATIO = 1e-6
"""Floor of ``eq_now / eq_prev`` inside logs: a wiped-out account scores log(1e-6), not -inf."""


def _np_log_scalar(x: float) -> float:
    return float(np.log(x))


def _pick_scalar_log() -> Callable[[float], float]:
    """``math.log`` when it matches ``np.log`` bit for bit on this CPU, else ``np.log``.

    numpy's float64 log is libm's on most CPUs but its own SIMD routine on some (AVX-512), which
    may differ in the last bit; the scalar rewards must equal the vector ones exactly.
    """
    rng = np.random.default_rng(20240101)
    probe = np.concatenate([rng.uniform(1e-6, 10.0, 2048), 1.0 + rng.normal(0.0, 0.02, 2048)])
    if np.array_equal(np.log(probe), np.array([math.log(v) for v in probe.tolist()])):
        return math.log
    return _np_log_scalar


scalar_log: Callable[[float], float] = _pick_scalar_log()
"""The log of the scalar rewards: bit-identical to ``np.log`` on this machine."""


class Reward:
    """Base class: stateless rewards override only ``__call__`` and ``scalar``.

    Args:
        n: number of accounts (vector state size).
        config: the env config (reward parameters).
    """

    name: ClassVar[str] = "base"

    def __init__(self, n: int, config: EnvConfig) -> None:
        self.n = int(n)
        self.config = config

    def reset(self, idx: IntArr | slice | None = None, equity_quote: F64 | float = 0.0) -> None:
        """Restart the state of accounts ``idx`` (all by default) at a new episode."""

    def reset_scalar(self, equity_quote: float) -> None:
        """Restart the scalar state at a new episode."""

    def __call__(self, eq_prev: F64, eq_now: F64) -> F64:
        """Rewards of N accounts for one step (updates their state)."""
        raise NotImplementedError

    def scalar(self, eq_prev: float, eq_now: float) -> float:
        """Reward of one account for one step (updates the scalar state)."""
        raise NotImplementedError


class LogReturn(Reward):
    """``log(eq_now / eq_prev)``, floored at ``log(MIN_EQUITY_RATIO)``."""

    name = "log_return"

    def __call__(self, eq_prev: F64, eq_now: F64) -> F64:
        return np.log(np.maximum(eq_now / eq_prev, MIN_EQUITY_RATIO))

    def scalar(self, eq_prev: float, eq_now: float) -> float:
        return scalar_log(max(eq_now / eq_prev, MIN_EQUITY_RATIO))


class SimpleReturn(Reward):
    """``(eq_now - eq_prev) / eq_prev``: the bar's return net of every cost."""

    name = "simple_return"

    def __call__(self, eq_prev: F64, eq_now: F64) -> F64:
        return (eq_now - eq_prev) / eq_prev

    def scalar(self, eq_prev: float, eq_now: float) -> float:
        return (eq_now - eq_prev) / eq_prev


class DifferentialSharpe(Reward):
    """Moody & Saffell's differential Sharpe ratio with adaptation rate ``config.dsr_eta``."""

    name = "differential_sharpe"

    def __init__(self, n: int, config: EnvConfig) -> None:
        super().__init__(n, config)
        self.eta = float(config.dsr_eta)
        self.a = np.zeros(self.n)
        self.b = np.zeros(self.n)
        self.a_s = 0.0
        self.b_s = 0.0

    def reset(self, idx: IntArr | slice | None = None, equity_quote: F64 | float = 0.0) -> None:
        sel: IntArr | slice = slice(None) if idx is None else idx
        self.a[sel] = 0.0
        self.b[sel] = 0.0

    def reset_scalar(self, equity_quote: float) -> None:
        self.a_s = 0.0
        self.b_s = 0.0

    def __call__(self, eq_prev: F64, eq_now: F64) -> F64:
        r = (eq_now - eq_prev) / eq_prev
        a, b = self.a, self.b
        da = r - a
        db = r * r - b
        var = b - a * a
        num = b * da - 0.5 * a * db
        d = np.divide(num, var * np.sqrt(np.maximum(var, 0.0)), out=np.zeros(self.n), where=var > 0.0)
        a += self.eta * da
        b += self.eta * db
        return d

    def scalar(self, eq_prev: float, eq_now: float) -> float:
        r = (eq_now - eq_prev) / eq_prev
        a, b = self.a_s, self.b_s
        da = r - a
        db = r * r - b
        var = b - a * a
        d = (b * da - 0.5 * a * db) / (var * math.sqrt(var)) if var > 0.0 else 0.0
        self.a_s = a + self.eta * da
        self.b_s = b + self.eta * db
        return d


class DrawdownPenalised(Reward):
    """Log return minus ``config.drawdown_penalty`` times the increase in drawdown."""

    name = "drawdown_penalised"

    def __init__(self, n: int, config: EnvConfig) -> None:
        super().__init__(n, config)
        self.penalty = float(config.drawdown_penalty)
        self.peak = np.full(self.n, float(config.initial_cash_quote))
        self.dd = np.zeros(self.n)
        self.peak_s = float(config.initial_cash_quote)
        self.dd_s = 0.0

    def reset(self, idx: IntArr | slice | None = None, equity_quote: F64 | float = 0.0) -> None:
        sel: IntArr | slice = slice(None) if idx is None else idx
        self.peak[sel] = equity_quote
        self.dd[sel] = 0.0

    def reset_scalar(self, equity_quote: float) -> None:
        self.peak_s = equity_quote
        self.dd_s = 0.0

    def __call__(self, eq_prev: F64, eq_now: F64) -> F64:
        lr = np.log(np.maximum(eq_now / eq_prev, MIN_EQUITY_RATIO))
        np.maximum(self.peak, eq_now, out=self.peak)
        dd = (self.peak - eq_now) / self.peak
        pen = self.penalty * np.maximum(dd - self.dd, 0.0)
        self.dd[...] = dd
        return lr - pen

    def scalar(self, eq_prev: float, eq_now: float) -> float:
        lr = scalar_log(max(eq_now / eq_prev, MIN_EQUITY_RATIO))
        peak = max(self.peak_s, eq_now)
        self.peak_s = peak
        dd = (peak - eq_now) / peak
        pen = self.penalty * max(dd - self.dd_s, 0.0)
        self.dd_s = dd
        return lr - pen


def turnover_cost(weight: float, traded_quote: F64 | float, eq_prev: F64 | float) -> F64 | float:
    """The turnover term subtracted from the reward: ``weight * (traded_quote / eq_prev)``.

    Args:
        weight: ``EnvConfig.turnover_penalty`` (reward units per unit of equity traded).
        traded_quote: notional filled in the step (quote currency, summed over assets; an
            array of N accounts or a float).
        eq_prev: equity at the previous close (quote), the same shape.

    The kernel computes ``reward - weight * (traded / eq_prev)`` with the same IEEE operations,
    and only when ``weight > 0``.
    """
    return weight * (traded_quote / eq_prev)


def with_turnover_cost(
    reward: F64 | float, weight: float, traded_quote: F64 | float, eq_prev: F64 | float
) -> F64 | float:
    """``reward`` less :func:`turnover_cost` (``reward`` itself, untouched, when ``weight <= 0``)."""
    if weight > 0.0:
        return reward - turnover_cost(weight, traded_quote, eq_prev)
    return reward


REWARDS: dict[str, type[Reward]] = {
    cls.name: cls for cls in (LogReturn, SimpleReturn, DifferentialSharpe, DrawdownPenalised)
}


def make_reward(config: EnvConfig, n: int = 1) -> Reward:
    """The reward named by ``config.reward`` for ``n`` accounts."""
    return REWARDS[config.reward](n, config)
