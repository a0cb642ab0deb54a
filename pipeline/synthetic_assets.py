"""Seeded synthetic portfolios: A correlated assets on one clock, with an optional planted
cross-asset lead-lag signal (the known answer for portfolio agents).

Model (per bar, log returns, ``dt`` = one bar in years):

* a common factor ``f_t`` with Markov regime switching (drift ``mus[k]``, volatility
  ``sigmas[k]``, annualised): ``f_t = mu_k dt + sigma_k sqrt(dt) z_t``;
* each asset ``r_{a,t} = beta_a f_t + idio_sigma sqrt(dt) u_{a,t} - drift correction`` with
  ``u`` standard normal and independent across assets;
* lead-lag (``lead_lag=(leader, follower, strength)``): the follower's idiosyncratic shock is
  ``u_{i,t} = strength * u_{j,t-1} + sqrt(1 - strength^2) e_{i,t}``, so asset ``i``'s return at
  ``t`` is predictable from asset ``j``'s return at ``t - 1`` (its correlation with ``j``'s
  lagged idiosyncratic shock is ``strength`` times the idiosyncratic share of ``i``'s
  variance). A policy long ``i`` after ``j`` rose (short after it fell), filling at the next
  open, earns it; 1/N and cash do not.

Candles are built as in :mod:`coinrl.pipeline.synthetic` (open = previous close, Brownian-bridge
wicks, volume rising with the bar's move).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

from .errors import ConfigError
from .synthetic import DEFAULT_START_TS_MS, EXCHANGE, _candles, _check_common, _markov_path
from .timeframes import bars_per_year

logger = logging.getLogger(__name__)


def correlated_assets(
    n_assets: int,
    n_bars: int,
    *,
    timeframe: str = "1h",
    start_ts_ms: int = DEFAULT_START_TS_MS,
    s0: float = 100.0,
    betas: Sequence[float] | None = None,
    idio_sigma: float = 0.5,
    mus: Sequence[float] = (0.3, -0.3),
    sigmas: Sequence[float] = (0.5, 0.9),
    mean_duration_bars: float = 500.0,
    lead_lag: tuple[int, int, float] | None = None,
    mean_volume_base: float = 1_000.0,
    seed: int = 0,
) -> list[pd.DataFrame]:
    """A assets' candle frames on one clock (symbols ``SYN0/USD`` ...).

    Args:
        n_assets: number of assets (>= 1).
        n_bars: bars per asset.
        timeframe: bar length.
        start_ts_ms: first open time, UTC epoch ms.
        s0: every asset's first open (quote).
        betas: factor loading per asset (default 1.0 each).
        idio_sigma: annualised idiosyncratic volatility (> 0).
        mus, sigmas: the factor's annualised drift and volatility per regime.
        mean_duration_bars: mean regime length (> 1).
        lead_lag: ``(leader j, follower i, strength in (0, 1))`` or None.
        mean_volume_base: typical bar volume (base units).
        seed: the one seed of all randomness.

    Returns:
        One cleaned-candle frame per asset (``attrs`` symbol/timeframe/exchange/source); the
        first frame also carries the factor regime in column ``regime`` (hidden truth).

    Raises:
        ConfigError: a bad count, volatility, loading or lead-lag spec.
    """
    tf_ms = _check_common(n_bars, s0, timeframe)
    if isinstance(n_assets, bool) or not isinstance(n_assets, int) or n_assets < 1:
        raise ConfigError(f"n_assets must be an integer >= 1, got {n_assets!r}")
    beta = np.ones(n_assets) if betas is None else np.asarray(betas, dtype=np.float64)
    if beta.shape != (n_assets,) or not np.isfinite(beta).all():
        raise ConfigError(f"betas needs {n_assets} finite loadings, got {betas!r}")
    if not idio_sigma > 0:
        raise ConfigError(f"idio_sigma must be > 0, got {idio_sigma!r}")
    mu_a = np.asarray(mus, dtype=np.float64)
    sig_a = np.asarray(sigmas, dtype=np.float64)
    if len(mu_a) < 1 or len(sig_a) != len(mu_a) or not (sig_a > 0).all():
        raise ConfigError("mus and sigmas need one value per regime, sigmas > 0")
    if not mean_duration_bars > 1:
        raise ConfigError(f"mean_duration_bars must be > 1, got {mean_duration_bars!r}")
    if lead_lag is not None:
        j, i, strength = lead_lag
        if not (0 <= j < n_assets and 0 <= i < n_assets and i != j):
            raise ConfigError(f"lead_lag needs two different assets in [0, {n_assets}), got {lead_lag!r}")
        if not 0.0 < strength < 1.0:
            raise ConfigError(f"lead_lag strength must be in (0, 1), got {strength!r}")
    rng = np.random.default_rng(seed)
    dt = 1.0 / bars_per_year(timeframe)
    k = len(mu_a)
    p_stay = 1.0 if k == 1 else 1.0 - 1.0 / mean_duration_bars
    trans = np.full((k, k), (1.0 - p_stay) / max(k - 1, 1))
    np.fill_diagonal(trans, p_stay)
    regime = _markov_path(n_bars, trans, rng)
    factor = mu_a[regime] * dt + sig_a[regime] * np.sqrt(dt) * rng.standard_normal(n_bars)
    u = rng.standard_normal((n_bars, n_assets))
    if lead_lag is not None:
        j, i, strength = lead_lag
        lagged = np.concatenate([[rng.standard_normal()], u[:-1, j]])
        u[:, i] = strength * lagged + np.sqrt(1.0 - strength * strength) * u[:, i]
    s_idio = idio_sigma * np.sqrt(dt)
    frames = []
    for a in range(n_assets):
        var = (beta[a] * sig_a[regime]) ** 2 * dt + s_idio**2
        log_ret = beta[a] * factor + s_idio * u[:, a] - 0.5 * var
        frame = _candles(
            log_ret, np.sqrt(var), rng=rng, s0=s0, timeframe=timeframe, tf_ms=tf_ms,
            start_ts_ms=start_ts_ms, mean_volume_base=mean_volume_base,
            source=f"synthetic.correlated_assets(n_assets={n_assets}, lead_lag={lead_lag}, seed={seed})",
        )
        frame.attrs.update({"symbol": f"SYN{a}/USD", "exchange": EXCHANGE})
        frames.append(frame)
    frames[0]["regime"] = regime
    logger.debug("generated correlated_assets assets=%d rows=%d lead_lag=%s seed=%d",
                 n_assets, n_bars, lead_lag, seed)
    return frames


__all__ = ["correlated_assets"]
