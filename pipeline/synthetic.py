"""Seeded synthetic markets in the cleaned-candle schema, for tests, benchmarks and sanity runs.

Every generator returns a frame with ``ts_ms`` (int64 UTC epoch ms, bar open time, one bar per
``timeframe``) and float64 ``open, high, low, close, volume`` (volume in BASE units), plus
``attrs`` with ``symbol``, ``timeframe``, ``exchange`` and ``source``. All randomness comes from
one :class:`numpy.random.Generator` built from ``seed``, so the same arguments give the same
frame, bit for bit. Everything is vectorised: a million bars take well under a second.

How the bars are built (shared by all generators):

* Each bar has a log return ``r_t`` and an intrabar volatility ``s_t`` (both per bar, in log
  units). ``close_t = s0 * exp(r_0 + ... + r_t)`` and ``open_t = close_{t-1}`` (``open_0 = s0``).
* ``high``/``low`` are drawn from the exact distribution of the maximum/minimum of a Brownian
  bridge from ``0`` to ``r_t`` with volatility ``s_t``: ``M = (r + sqrt(r^2 - 2 s^2 ln U)) / 2``.
  So ``high >= max(open, close)`` and ``low <= min(open, close)`` always, with realistic wicks.
* Volume is log-normal around ``mean_volume_base`` and rises with the bar's absolute
  standardised return (busy bars move more), so it is always positive.

Volatilities ``sigma`` and drifts ``mu`` are ANNUALISED fractions (365-day years, see
:func:`~coinrl.pipeline.timeframes.bars_per_year`): ``sigma=0.6`` is 60 % a year.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from .errors import ConfigError
from .timeframes import bars_per_year, timeframe_to_ms

logger = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]

DEFAULT_START_TS_MS = 1_577_836_800_000
"""2020-01-01 00:00 UTC."""

SYMBOL = "SYN/USD"
EXCHANGE = "synthetic"


# --------------------------------------------------------------------------- helpers


def _check_common(n_bars: int, s0: float, timeframe: str) -> int:
    if isinstance(n_bars, bool) or not isinstance(n_bars, int | np.integer) or n_bars < 1:
        raise ConfigError(f"n_bars must be a positive integer, got {n_bars!r}")
    if not np.isfinite(s0) or s0 <= 0:
        raise ConfigError(f"s0 (first open price, quote currency) must be > 0, got {s0!r}")
    return timeframe_to_ms(timeframe)


def _check_positive(name: str, value: float) -> None:
    if not np.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")


def linear_recursion(a: F64, b: F64, x0: float, block: int = 32) -> F64:
    """Solve ``x_t = a_t * x_{t-1} + b_t`` for ``t = 0..n-1`` with ``x_{-1} = x0``, vectorised.

    The series is cut into blocks; inside a block the solution is a cumulative product/sum
    (``x_i = P_i * (x_start + sum_k b_k / P_k)``), and the block start values come from the same
    recursion one level up, so the Python-level work is O(log n) calls instead of n steps.

    Multipliers below ``1e-9`` are treated as ``1e-9`` (the past then weighs less than 1e-9 per
    step anyway); this keeps the block products inside float64's range.

    Args:
        a: multipliers, >= 0 (float64, shape ``(n,)``).
        b: additive terms (float64, shape ``(n,)``).
        x0: the value before the first step.
        block: block length; keeps the products ``P`` far from float64 under/overflow.

    Returns:
        ``x`` (float64, shape ``(n,)``).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    n = len(a)
    if n == 0:
        return np.empty(0, dtype=np.float64)
    nb = -(-n // block)
    pad = nb * block - n
    log_a = np.log(np.maximum(np.concatenate([a, np.ones(pad)]), 1e-9)).reshape(nb, block)
    bb = np.concatenate([b, np.zeros(pad)]).reshape(nb, block)
    prod = np.exp(np.cumsum(log_a, axis=1))
    part = prod * np.cumsum(bb / prod, axis=1)  # solution of each block started from 0
    if nb == 1:
        ends_prev = np.array([x0])
    else:
        ends = linear_recursion(prod[:, -1], part[:, -1], x0, block)
        ends_prev = np.concatenate([[x0], ends[:-1]])
    return (prod * ends_prev[:, None] + part).reshape(-1)[:n]


def _candles(
    log_ret: F64,
    bar_sigma: F64,
    *,
    rng: np.random.Generator,
    s0: float,
    timeframe: str,
    tf_ms: int,
    start_ts_ms: int,
    mean_volume_base: float,
    source: str,
) -> pd.DataFrame:
    """Turn per-bar log returns and intrabar vols into valid OHLCV candles."""
    n = len(log_ret)
    log_close = np.log(s0) + np.cumsum(log_ret)
    close = np.exp(log_close)
    open_ = np.empty(n)
    open_[0] = s0
    open_[1:] = close[:-1]
    s2 = bar_sigma * bar_sigma
    r2 = log_ret * log_ret
    # log(U) with U in (0, 1]: -log(1 - uniform) avoids log(0).
    e_hi = -np.log1p(-rng.random(n))
    e_lo = -np.log1p(-rng.random(n))
    up = 0.5 * (log_ret + np.sqrt(r2 + 2.0 * s2 * e_hi))
    down = 0.5 * (log_ret - np.sqrt(r2 + 2.0 * s2 * e_lo))
    high = np.maximum(open_ * np.exp(up), np.maximum(open_, close))
    low = np.minimum(open_ * np.exp(down), np.minimum(open_, close))
    z_abs = np.abs(log_ret) / np.where(bar_sigma > 0, bar_sigma, 1.0)
    volume = mean_volume_base * np.exp(0.5 * rng.standard_normal(n) + 0.6 * (z_abs - 0.8) - 0.125)
    frame = pd.DataFrame(
        {
            "ts_ms": start_ts_ms + np.arange(n, dtype=np.int64) * np.int64(tf_ms),
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": volume,
        }
    )
    frame.attrs.update(
        {"symbol": SYMBOL, "timeframe": timeframe, "exchange": EXCHANGE, "source": source}
    )
    return frame


# --------------------------------------------------------------------------- generators


def gbm(
    n_bars: int,
    *,
    timeframe: str = "1h",
    start_ts_ms: int = DEFAULT_START_TS_MS,
    s0: float = 10_000.0,
    mu: float = 0.0,
    sigma: float = 0.6,
    mean_volume_base: float = 100.0,
    seed: int = 0,
) -> pd.DataFrame:
    """Geometric Brownian motion candles.

    Log returns are i.i.d. ``N((mu - sigma^2/2) dt, sigma^2 dt)`` with ``dt`` one bar in years.

    Args:
        n_bars: number of bars.
        timeframe: bar length (``"1m"``, ``"1h"``, ...).
        start_ts_ms: open time of the first bar, UTC epoch ms.
        s0: first open price (quote currency).
        mu: annualised drift (fraction per year).
        sigma: annualised volatility (fraction per year), > 0.
        mean_volume_base: typical bar volume in base units.
        seed: seed of the random generator.

    Returns:
        Candle frame (``ts_ms, open, high, low, close, volume``).

    Example:
        >>> df = gbm(1_000, timeframe="1h", seed=1)
        >>> bool((df["high"] >= df[["open", "close"]].max(axis=1)).all())
        True
    """
    tf_ms = _check_common(n_bars, s0, timeframe)
    _check_positive("sigma", sigma)
    _check_positive("mean_volume_base", mean_volume_base)
    rng = np.random.default_rng(seed)
    dt = 1.0 / bars_per_year(timeframe)
    bar_sigma = sigma * np.sqrt(dt)
    log_ret = (mu - 0.5 * sigma * sigma) * dt + bar_sigma * rng.standard_normal(n_bars)
    frame = _candles(
        log_ret,
        np.full(n_bars, bar_sigma),
        rng=rng,
        s0=s0,
        timeframe=timeframe,
        tf_ms=tf_ms,
        start_ts_ms=start_ts_ms,
        mean_volume_base=mean_volume_base,
        source=f"synthetic.gbm(seed={seed})",
    )
    logger.debug("generated gbm rows=%d timeframe=%s seed=%d", n_bars, timeframe, seed)
    return frame


def _markov_path(n: int, transition: F64, rng: np.random.Generator) -> npt.NDArray[np.int8]:
    """Regime index per bar of a Markov chain, built segment by segment (geometric stays)."""
    k = transition.shape[0]
    stay = np.diag(transition)
    # Distribution of the next regime given that we leave regime i.
    leave = transition.copy()
    np.fill_diagonal(leave, 0.0)
    row = leave.sum(axis=1, keepdims=True)
    leave = np.divide(leave, row, out=np.full_like(leave, 1.0 / max(k - 1, 1)), where=row > 0)
    # Start from the stationary distribution (left eigenvector for eigenvalue 1).
    w, v = np.linalg.eig(transition.T)
    pi = np.abs(np.real(v[:, np.argmin(np.abs(w - 1.0))]))
    pi = pi / pi.sum()
    state = int(rng.choice(k, p=pi))
    states: list[int] = []
    lengths: list[int] = []
    total = 0
    while total < n:
        p_leave = 1.0 - stay[state]
        length = n - total if p_leave <= 0 else int(rng.geometric(p_leave))
        states.append(state)
        lengths.append(length)
        total += length
        if p_leave > 0:
            state = int(rng.choice(k, p=leave[state]))
    return np.repeat(np.asarray(states, dtype=np.int8), lengths)[:n]


def regime_switching(
    n_bars: int,
    *,
    timeframe: str = "1h",
    start_ts_ms: int = DEFAULT_START_TS_MS,
    s0: float = 10_000.0,
    mus: Sequence[float] = (0.8, -0.8, 0.0),
    sigmas: Sequence[float] = (0.5, 0.9, 0.3),
    transition: Sequence[Sequence[float]] | None = None,
    mean_duration_bars: float = 500.0,
    garch_alpha: float = 0.08,
    garch_beta: float = 0.9,
    mean_volume_base: float = 100.0,
    seed: int = 0,
) -> pd.DataFrame:
    """Markov regime-switching market with GARCH(1,1) volatility clustering.

    A hidden Markov chain picks a regime per bar; regime ``i`` has annualised drift ``mus[i]``
    and volatility ``sigmas[i]``. On top, a unit-mean GARCH(1,1) variance multiplier
    ``h_t = (1 - alpha - beta) + alpha * z_{t-1}^2 * h_{t-1} + beta * h_{t-1}`` clusters the
    shocks, so the bar's log return is ``(mu_i - sigma_i^2/2) dt + sigma_i sqrt(dt h_t) z_t``.
    The regime index is returned in an extra int8 column ``regime`` (hidden truth for
    analysis; never feed it to an agent as a feature).

    Args:
        n_bars: number of bars.
        timeframe: bar length.
        start_ts_ms: open time of the first bar, UTC epoch ms.
        s0: first open price (quote currency).
        mus: annualised drift per regime (fractions).
        sigmas: annualised volatility per regime (fractions, > 0).
        transition: row-stochastic ``k x k`` matrix of per-bar regime transition
            probabilities. ``None``: stay with probability ``1 - 1/mean_duration_bars`` and
            otherwise move to one of the other regimes uniformly.
        mean_duration_bars: mean regime length in bars when ``transition`` is None (> 1).
        garch_alpha: GARCH reaction to the last shock (>= 0).
        garch_beta: GARCH persistence (> 0); ``alpha + beta < 1``.
        mean_volume_base: typical bar volume in base units.
        seed: seed of the random generator.

    Returns:
        Candle frame plus a ``regime`` column.
    """
    tf_ms = _check_common(n_bars, s0, timeframe)
    mu_a = np.asarray(mus, dtype=np.float64)
    sig_a = np.asarray(sigmas, dtype=np.float64)
    k = len(mu_a)
    if k < 1 or len(sig_a) != k:
        raise ConfigError(
            f"mus and sigmas need one value per regime, got {len(mu_a)} and {len(sig_a)}"
        )
    if not np.all(np.isfinite(sig_a) & (sig_a > 0)):
        raise ConfigError(f"sigmas must all be > 0, got {list(sig_a)}")
    if transition is None:
        if not mean_duration_bars > 1:
            raise ConfigError(f"mean_duration_bars must be > 1, got {mean_duration_bars!r}")
        p_stay = 1.0 if k == 1 else 1.0 - 1.0 / mean_duration_bars
        trans = np.full((k, k), (1.0 - p_stay) / max(k - 1, 1))
        np.fill_diagonal(trans, p_stay)
    else:
        trans = np.asarray(transition, dtype=np.float64)
        if trans.shape != (k, k) or np.any(trans < 0) or not np.allclose(trans.sum(axis=1), 1.0):
            raise ConfigError(
                f"transition must be a {k}x{k} matrix of probabilities whose rows sum to 1, "
                f"got shape {trans.shape}"
            )
    if not (garch_alpha >= 0 and garch_beta > 0 and garch_alpha + garch_beta < 1):
        raise ConfigError(
            f"GARCH needs alpha >= 0, beta > 0 and alpha + beta < 1 (stationary), "
            f"got alpha={garch_alpha!r} beta={garch_beta!r}"
        )
    _check_positive("mean_volume_base", mean_volume_base)
    rng = np.random.default_rng(seed)
    dt = 1.0 / bars_per_year(timeframe)
    regime = _markov_path(n_bars, trans, rng)
    z = rng.standard_normal(n_bars)
    omega = 1.0 - garch_alpha - garch_beta
    # h_t = a_t * h_{t-1} + omega with a_t = alpha * z_{t-1}^2 + beta; h_0 = 1 (its mean).
    a = garch_alpha * np.concatenate([[1.0], z[:-1] ** 2]) + garch_beta
    a[0] = 1.0 - omega  # so that h_0 = (1 - omega) * 1 + omega = 1
    h = linear_recursion(a, np.full(n_bars, omega), 1.0)
    sig_bar = sig_a[regime] * np.sqrt(dt * h)
    log_ret = (mu_a[regime] - 0.5 * sig_a[regime] ** 2) * dt + sig_bar * z
    frame = _candles(
        log_ret,
        sig_bar,
        rng=rng,
        s0=s0,
        timeframe=timeframe,
        tf_ms=tf_ms,
        start_ts_ms=start_ts_ms,
        mean_volume_base=mean_volume_base,
        source=f"synthetic.regime_switching(seed={seed})",
    )
    frame["regime"] = regime
    logger.debug("generated regime_switching rows=%d regimes=%d seed=%d", n_bars, k, seed)
    return frame


def planted_pattern(
    n_bars: int,
    *,
    timeframe: str = "1h",
    start_ts_ms: int = DEFAULT_START_TS_MS,
    s0: float = 10_000.0,
    mu: float = 0.0,
    sigma: float = 0.6,
    lag: int = 1,
    strength: float = 0.15,
    persistence: float = 0.98,
    mode: Literal["signal", "momentum"] = "signal",
    momentum_span_bars: int = 24,
    mean_volume_base: float = 100.0,
    seed: int = 0,
) -> pd.DataFrame:
    """A market with a planted, learnable signal in column ``signal``.

    ``signal[t]`` is observable at bar t's close and drives the log return of bar ``t + lag``:
    with ``z`` standard normal noise and ``s_bar = sigma * sqrt(dt)``,

        ``r_{t+lag} = (mu - sigma^2/2) dt + s_bar * (strength * signal_t + sqrt(1 - strength^2) z)``

    so a policy that is long when ``signal[t] > 0`` (short/flat otherwise), filling at
    ``open[t+1]``, earns about ``strength * s_bar * E|signal|`` per bar before fees.

    Modes:
        * ``"signal"``: ``signal`` is an exogenous AR(1) series with unit variance,
          ``signal_t = persistence * signal_{t-1} + sqrt(1 - persistence^2) e_t``, started from
          its stationary law. It is visible only through the ``signal`` column (use the feature
          kind ``column``). ``strength`` is the correlation of ``signal_t`` with ``r_{t+lag}``.
        * ``"momentum"``: the signal is trend-following and visible in prices alone:
          ``signal_t = EMA_span(u)_t / sqrt(a / (2 - a))`` with ``u_t`` the bar's standardised
          log return ``(r_t - drift) / s_bar``, ``a = 2 / (span + 1)`` and the EMA started at 0
          before bar 0. Because returns feed the signal back, ``strength`` must keep the
          recursion stable (checked). Only ``lag=1``; ``persistence`` is unused here. The
          feedback makes the signal's spread somewhat above 1 (about 1.9 with the defaults).

    With the defaults (1h bars, 60 % a year volatility, strength 0.15, persistence 0.98) the
    "long if signal > 0 else short" policy earns roughly 0.06 % per bar net of 0.1 % fees,
    while buy-and-hold earns zero on average.

    Args:
        n_bars: number of bars.
        timeframe: bar length.
        start_ts_ms: open time of the first bar, UTC epoch ms.
        s0: first open price (quote currency).
        mu: annualised drift (fraction per year).
        sigma: annualised volatility (fraction per year), > 0.
        lag: bars between the signal and the return it drives (>= 1).
        strength: signal loading in (0, 1) (a correlation in ``"signal"`` mode).
        persistence: AR(1) coefficient of the signal in [0, 1) (``"signal"`` mode).
        mode: ``"signal"`` or ``"momentum"``, see above.
        momentum_span_bars: EMA span of the momentum signal in bars (>= 1).
        mean_volume_base: typical bar volume in base units.
        seed: seed of the random generator.

    Returns:
        Candle frame plus a float64 ``signal`` column.
    """
    tf_ms = _check_common(n_bars, s0, timeframe)
    _check_positive("sigma", sigma)
    _check_positive("mean_volume_base", mean_volume_base)
    if isinstance(lag, bool) or not isinstance(lag, int) or lag < 1:
        raise ConfigError(f"lag must be an integer >= 1 (bars), got {lag!r}")
    if not 0.0 < strength < 1.0:
        raise ConfigError(f"strength must be in (0, 1), got {strength!r}")
    if not 0.0 <= persistence < 1.0:
        raise ConfigError(f"persistence must be in [0, 1), got {persistence!r}")
    if mode not in ("signal", "momentum"):
        raise ConfigError(f"mode must be 'signal' or 'momentum', got {mode!r}")
    if mode == "momentum" and lag != 1:
        raise ConfigError(
            f"mode='momentum' plants a one-bar-ahead trend (lag=1), got lag={lag}; "
            "use mode='signal' for longer lags"
        )
    rng = np.random.default_rng(seed)
    dt = 1.0 / bars_per_year(timeframe)
    s_bar = sigma * np.sqrt(dt)
    drift = (mu - 0.5 * sigma * sigma) * dt
    noise_w = np.sqrt(1.0 - strength * strength)
    if mode == "signal":
        # Signal for bars -lag..n-1, so that every bar's return carries the pattern.
        e = rng.standard_normal(n_bars + lag)
        x_init = rng.standard_normal()
        c = np.sqrt(1.0 - persistence * persistence)
        sig_all = linear_recursion(np.full(n_bars + lag, persistence), c * e, x_init)
        z = rng.standard_normal(n_bars)
        u = strength * sig_all[:n_bars] + noise_w * z  # u_t uses signal_{t-lag}
        signal = sig_all[lag:]
    else:
        if isinstance(momentum_span_bars, bool) or momentum_span_bars < 1:
            raise ConfigError(f"momentum_span_bars must be >= 1, got {momentum_span_bars!r}")
        a = 2.0 / (momentum_span_bars + 1.0)
        scale = np.sqrt(a / (2.0 - a))
        # m_t = (1-a) m_{t-1} + a u_t and u_t = (strength/scale) m_{t-1} + noise_w z_t give
        # the AR(1) m_t = rho m_{t-1} + a noise_w z_t with rho = 1 - a + a strength / scale.
        rho = 1.0 - a + a * strength / scale
        if rho >= 1.0:
            raise ConfigError(
                f"momentum mode with strength={strength} and momentum_span_bars="
                f"{momentum_span_bars} is explosive (returns feed the signal back); use "
                f"strength < {scale:.3f} or a shorter span"
            )
        z = rng.standard_normal(n_bars)
        m = linear_recursion(np.full(n_bars, rho), a * noise_w * z, 0.0)
        m_lag = np.concatenate([[0.0], m[:-1]])
        u = (strength / scale) * m_lag + noise_w * z
        signal = m / scale
    log_ret = drift + s_bar * u
    frame = _candles(
        log_ret,
        np.full(n_bars, s_bar),
        rng=rng,
        s0=s0,
        timeframe=timeframe,
        tf_ms=tf_ms,
        start_ts_ms=start_ts_ms,
        mean_volume_base=mean_volume_base,
        source=f"synthetic.planted_pattern(mode={mode}, lag={lag}, strength={strength}, seed={seed})",
    )
    frame["signal"] = np.asarray(signal, dtype=np.float64)
    logger.debug(
        "generated planted_pattern rows=%d mode=%s lag=%d strength=%s seed=%d",
        n_bars,
        mode,
        lag,
        strength,
        seed,
    )
    return frame


__all__ = ["gbm", "linear_recursion", "planted_pattern", "regime_switching"]
