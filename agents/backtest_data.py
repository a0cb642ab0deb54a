"""What a backtest trades: the bars (from MarketData, candles or a file) and the strategy.

The inputs of :func:`~coinrl.agents.backtest.simulate_trading_strategy`: candles become
MarketData with the bundle's own feature spec and normaliser (:func:`agent_market_data`) or
plain prices for a signal (:func:`market_data_from_candles`); a signal becomes one target
exposure per decision (:func:`signal_targets`); a bundle trained on other bars is refused
(:func:`check_timeframe`). Public names are importable from :mod:`coinrl.agents.backtest` too.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from coinrl.envs.config import EnvConfig
from coinrl.pipeline.dataset import MarketData
from coinrl.pipeline.errors import ConfigError, DataError

from .agent import TrainedAgent
from .rollout import n_decisions

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]

SIGNAL_ENV = EnvConfig(window=1, action="continuous", episode_length_bars=None)
"""Env config of a signal backtest when none is given: default costs (0.1 % taker fee, 1 bp
slippage), exposures in ``[-1, 1]``, decisions from the first bar."""


def market_fingerprint(data: MarketData) -> str:
    """sha256 of the bars a backtest ran over (times and OHLCV), hex."""
    h = hashlib.sha256()
    for a in (data.ts_ms, data.open, data.high, data.low, data.close, data.volume):
        h.update(np.ascontiguousarray(a).data)  # the same bytes as tobytes(), without a copy
    return h.hexdigest()


def market_data_from_candles(candles: pd.DataFrame, *, split: str = "backtest") -> MarketData:
    """MarketData of plain candles for a signal backtest (one all-zero feature column)."""
    from coinrl.pipeline.features import check_candles

    check_candles(candles)
    n = len(candles)

    def col(name: str) -> F64:
        return np.ascontiguousarray(candles[name].to_numpy(dtype=np.float64))

    funding = col("funding_rate") if "funding_rate" in candles.columns else None
    tf = str(candles.attrs.get("timeframe", "") or "")
    if not tf:
        from coinrl.pipeline.timeframes import ms_to_timeframe

        if n < 2:
            raise DataError("timeframe unknown; set candles.attrs['timeframe'] (e.g. '1h')")
        tf = ms_to_timeframe(int(np.diff(candles["ts_ms"].to_numpy(dtype=np.int64)).min()))
    return MarketData(
        ts_ms=candles["ts_ms"].to_numpy(dtype=np.int64),
        open=col("open"),
        high=col("high"),
        low=col("low"),
        close=col("close"),
        volume=col("volume"),
        features=np.zeros((n, 1), dtype=np.float32),
        feature_names=("none",),
        funding_rate=funding,
        symbol=str(candles.attrs.get("symbol", "")),
        timeframe=tf,
        exchange=str(candles.attrs.get("exchange", "")),
        meta={"split": split, "source": str(candles.attrs.get("source", ""))},
    )


def _candles(data: Any) -> pd.DataFrame:
    """Candles given as a DataFrame or a file (DataError for anything else)."""
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        return data
    if isinstance(data, str | Path):
        from coinrl.pipeline.formats import read_ohlcv

        return read_ohlcv(Path(data))
    raise DataError(
        f"historical_data must be MarketData, a candle DataFrame or a path, got {type(data).__name__}"
    )


def agent_market_data(agent: TrainedAgent, data: Any, split: str) -> MarketData:
    """The bars an agent trades: MarketData built with its features (checked), or candles
    (DataFrame or file) turned into them with the bundle's feature spec and normaliser.

    Raises:
        DataError: MarketData with other features, or something that is not data.
    """
    if isinstance(data, MarketData):
        if tuple(data.feature_names) != tuple(agent.normaliser.names):
            raise DataError(
                f"the data's features {list(data.feature_names)} are not the bundle's "
                f"{list(agent.normaliser.names)}; pass candles (the bundle's feature spec and "
                "normaliser are applied) or MarketData built with them"
            )
        fp = data.meta.get("normaliser_fingerprint")
        if fp and fp != agent.normaliser.fingerprint():
            logger.warning(
                "backtest: the data was normalised with normaliser %s, the bundle's is %s; "
                "observations differ from training's", str(fp)[:12], agent.normaliser.fingerprint()[:12],
            )
        return data
    return agent.market_data(_candles(data), split=split)


def signal_market_data(data: Any, split: str) -> MarketData:
    """The bars a signal trades: any MarketData, or candles (DataFrame or file).

    Raises:
        DataError: something that is not data.
    """
    if isinstance(data, MarketData):
        return data
    return market_data_from_candles(_candles(data), split=split)


def signal_targets(signal: npt.ArrayLike, data: MarketData, env_config: EnvConfig) -> F64:
    """The ``T`` decision targets of a signal given per bar (``len(data)``) or per decision.

    ``signal[t]`` per bar is the exposure wanted after bar t's close; decisions start at bar
    ``window - 1``, so the first ``window - 1`` values and the last one (no bar left to fill
    at) are not used.

    Raises:
        DataError: a length that is neither, or NaN/inf values.
    """
    x = np.asarray(signal, dtype=np.float64).reshape(-1)
    t_steps = n_decisions(data, env_config)
    w = env_config.window
    if len(x) == len(data):
        x = x[w - 1 : w - 1 + t_steps]
    elif len(x) != t_steps:
        raise DataError(
            f"signal has {len(x)} values; give one per bar ({len(data)}) or one per decision "
            f"({t_steps} = bars - window)"
        )
    if not np.isfinite(x).all():
        bad = int(np.flatnonzero(~np.isfinite(x))[0])
        raise DataError(f"signal holds NaN/inf at decision {bad}; fill warm-up values with 0 (flat)")
    return x


def is_signal(model: Any) -> bool:
    """True for an array, list or Series of numbers (target exposures), not a policy."""
    if isinstance(model, np.ndarray):
        return model.dtype.kind in "biuf"
    if isinstance(model, list | tuple):
        return all(isinstance(v, int | float | np.integer | np.floating) for v in model)
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover
        return False
    return isinstance(model, pd.Series)


def resolve_strategy(model: Any) -> Any:
    """A bundle path loaded as its :class:`~coinrl.agents.agent.TrainedAgent`; anything else as is."""
    if isinstance(model, str | Path):
        from .bundle import load_model

        return load_model(model)
    return model


def check_timeframe(agent: TrainedAgent, data: MarketData, *, force: bool = False) -> str | None:
    """Refuse a backtest on bars of another size than the bundle was trained on.

    A policy trained on 1h bars reads its features (returns, volatilities, moving averages
    counted in bars) on another clock at 5m: the numbers mean nothing. ``coinrl paper``
    refuses the same mismatch.

    Returns:
        None when the timeframes agree (or one is unknown); with ``force``, the warning to
        state in the report.

    Raises:
        ConfigError: a mismatch without ``force``.
    """
    trained = str(agent.data_info.get("timeframe") or "")
    if not trained or not data.timeframe or trained == data.timeframe:
        return None
    msg = (
        f"the bundle was trained on {trained} bars ({agent.data_info.get('symbol', '')}) and the "
        f"data has {data.timeframe} bars ({data.symbol})"
    )
    if not force:
        raise ConfigError(
            f"{msg}: its features would be read on another clock; backtest on {trained} candles, "
            "or pass --force (force=True) to run it anyway (the report then says so)"
        )
    return f"FORCED: {msg}; the results do not describe the strategy as trained."


__all__ = [
    "SIGNAL_ENV",
    "agent_market_data",
    "check_timeframe",
    "is_signal",
    "market_data_from_candles",
    "market_fingerprint",
    "resolve_strategy",
    "signal_market_data",
    "signal_targets",
]
