"""Backtests: a trained bundle or a rule strategy over held-out data, beside the baselines.

:func:`simulate_trading_strategy` plays one strategy over one split through the same env and
books as training (:mod:`coinrl.agents.rollout`, no second simulator):

* a **trained agent** (a :class:`~coinrl.agents.agent.TrainedAgent`, or a bundle path): its
  deterministic policy trades bar by bar; candles are turned into observations with the
  bundle's own feature spec and normaliser (never refitted); its network runs directly
  (:func:`~coinrl.agents.rollout.torch_policy`: the operations of SB3's ``predict`` without
  its per-call overhead, so the numbers equal :func:`~coinrl.agents.evaluate.evaluate_model`'s
  exactly);
* a **signal**: an array of target exposures (position notional / equity), one per bar
  (``signal[t]`` decided at bar t's close, filled at the next open) or one per decision; it
  runs through the books kernel in one compiled loop
  (:func:`~coinrl.agents.rollout.simulate_targets`);
* any SB3 model or ``obs -> action`` callable with an ``env_config``.

The :class:`BacktestResult` holds the equity curve, positions, every fill (time, side,
quantity, price, fee, slippage), the metrics (:func:`evaluate_strategy_performance`), the
baselines on the same data and costs (buy-and-hold, flat, a moving-average crossover and a
random policy matched on turnover), a verdict per baseline (:mod:`coinrl.agents.stats`) and the
Sharpe ratio's probabilistic and deflated versions.

:func:`simulate_many` runs several (strategy, split) pairs at once (walk-forward folds and
seeds): one batched env, one network call per model and step.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from coinrl.envs.config import EnvConfig
from coinrl.pipeline.dataset import MarketData
from coinrl.pipeline.errors import ConfigError, DataError

from .agent import TrainedAgent
from .baselines import MA_CROSSOVER_BARS, play_baselines
from .evaluate import directional_quality, policy_metrics
from .metrics import can_annualise, json_safe, simple_returns
from .rollout import (
    Rollout,
    evaluation_config,
    n_decisions,
    rollout_batch,
    rollout_policy,
    simulate_targets,
    stacked_torch_policy,
    torch_policy,
)
from .stats import Verdict, data_label, lookahead_warning, sharpe_stats, verdict_from_returns

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]

SIGNAL_ENV = EnvConfig(window=1, action="continuous", episode_length_bars=None)
"""Env config of a signal backtest when none is given: default costs (0.1 % taker fee, 1 bp
slippage), exposures in ``[-1, 1]``, decisions from the first bar."""

FILL_COLUMNS = (
    "ts_ms", "decision_ts_ms", "side", "qty_base", "price_quote", "ref_price_quote",
    "notional_quote", "fee_quote", "slippage_quote", "position_after_base", "liquidation",
)
"""Columns of :attr:`BacktestResult.fills`."""


# --------------------------------------------------------------------------- fills


def fills_from_rollout(rollout: Rollout, env_config: EnvConfig) -> pd.DataFrame:
    """Every fill of a run, from the books' positions.

    Step ``k`` (mark ``k``) fills at the open of the bar mark ``k`` closes, so a fill's
    ``ts_ms`` is that bar's open time; its decision was taken at the close of the bar
    ``delay_bars`` marks earlier (``decision_ts_ms``, -1 for a liquidation). ``qty_base`` is
    the change of the books' position (unsigned; ``side`` says ``buy`` or ``sell``).
    ``ref_price_quote`` is the open; fee and slippage are the execution model's
    (:class:`~coinrl.envs.execution.ExecutionModel`, the rules the kernel charges) for that
    quantity at that open; ``price_quote`` is the fill price with slippage (``ref + slippage /
    qty`` for a buy, ``ref - slippage / qty`` for a sell). A liquidation fill takes its
    notional and fee from the books' running totals (its reference price is the liquidation
    price, without slippage); a bar that rebalanced and was then liquidated shows as one
    liquidation fill of the net quantity.

    Returns:
        A DataFrame with :data:`FILL_COLUMNS`, one row per fill, in time order.
    """
    import pandas as pd

    from coinrl.envs.execution import ExecutionModel

    if rollout.fees_cum_quote is None or rollout.turnover_cum_quote is None or rollout.open_quote is None:
        raise DataError("this rollout has no running cost totals; rerun it with coinrl's rollout")
    pos = rollout.position_base
    dq_all = np.diff(pos)
    marks = np.flatnonzero(dq_all != 0.0) + 1
    d = dq_all[marks - 1]
    qty = np.abs(d)
    ref = rollout.open_quote[marks].astype(np.float64)
    vol = rollout.volume_base[marks] if rollout.volume_base is not None else np.full(len(marks), np.inf)
    notional, fee, slip = ExecutionModel.from_config(env_config).costs_vec(d, ref, vol)
    liq = np.zeros(len(marks), dtype=bool)
    if rollout.liquidation_mark is not None:
        liq = marks == rollout.liquidation_mark
        if liq.any():
            j = marks[liq]
            notional[liq] = rollout.turnover_cum_quote[j] - rollout.turnover_cum_quote[j - 1]
            fee[liq] = rollout.fees_cum_quote[j] - rollout.fees_cum_quote[j - 1]
            slip[liq] = 0.0
            ref[liq] = notional[liq] / qty[liq]
    sign = np.sign(d)
    price = ref + sign * np.divide(slip, qty, out=np.zeros_like(qty), where=qty > 0)
    delay = env_config.delay_bars
    dec = np.where(marks - delay >= 0, rollout.ts_ms[np.maximum(marks - delay, 0)], -1)
    dec = np.where(liq, -1, dec).astype(np.int64)
    return pd.DataFrame({
        "ts_ms": rollout.ts_ms[marks].astype(np.int64),
        "decision_ts_ms": dec,
        "side": np.where(sign > 0, "buy", "sell"),
        "qty_base": qty,
        "price_quote": price,
        "ref_price_quote": ref,
        "notional_quote": notional,
        "fee_quote": fee,
        "slippage_quote": slip,
        "position_after_base": pos[marks],
        "liquidation": liq,
    })


# --------------------------------------------------------------------------- results


def evaluate_strategy_performance(trading_results: BacktestResult | Rollout) -> dict[str, float]:
    """Every performance figure of one run (fractions, not percent; annualised by bar size).

    Args:
        trading_results: a :class:`BacktestResult` or a :class:`~coinrl.agents.rollout.Rollout`.

    Returns:
        :func:`~coinrl.agents.metrics.trading_metrics` (total and annualised return,
        volatility, Sharpe, Sortino, Calmar, max drawdown and its duration in bars, win rate,
        profit factor, average trade, exposure, time in market, turnover, fees and slippage
        paid, ...) annualised with ``bars_per_year(timeframe)`` (365-day years), plus
        ``max_drawdown_duration_days``, ``periods_per_year`` and, for a BacktestResult,
        ``n_fills`` and ``avg_fill_cost_frac`` (fees plus slippage over traded notional).
    """
    ro = trading_results.rollout if isinstance(trading_results, BacktestResult) else trading_results
    m = ro.metrics()
    ppy = ro.periods_per_year
    m["max_drawdown_duration_days"] = m["max_drawdown_duration_bars"] * 365.0 / ppy
    m["periods_per_year"] = float(ppy)
    if isinstance(trading_results, BacktestResult):
        fills = trading_results.fills
        m["n_fills"] = float(len(fills))
        traded = float(fills["notional_quote"].sum()) if len(fills) else 0.0
        cost = float(fills["fee_quote"].sum() + fills["slippage_quote"].sum()) if len(fills) else 0.0
        m["avg_fill_cost_frac"] = cost / traded if traded > 0 else 0.0
    return m


@dataclass(eq=False)
class BacktestResult:
    """One strategy over one split, with its fills, metrics, baselines and verdicts.

    Attributes:
        name: the strategy's name (``agent``, ``signal``, a baseline name...).
        rollout: the run (equity curve, exposures, positions, actions, running costs).
        fills: every fill, see :func:`fills_from_rollout` (:data:`FILL_COLUMNS`).
        env_config: the env config it ran under (costs, window, delay...).
        metrics: :func:`evaluate_strategy_performance` of the run.
        baselines: the baselines on the same data and costs, by name (``random``: the MEAN of
            its draws in ``metrics``, with their spread in ``draws_*`` keys; its rollout and
            fills are the first draw's, for the chart).
        policy: what the policy did (agents only, see
            :func:`~coinrl.agents.evaluate.policy_metrics`).
        verdicts: the agent against each baseline (:class:`~coinrl.agents.stats.Verdict`).
        stats: Sharpe-ratio statistics (``psr``, ``dsr``, ``n_trials``, ...).
        warnings: plain-language warnings (e.g. an implausible Sharpe ratio: look-ahead?).
        meta: symbol, timeframe, split, time range, data fingerprints, strategy kind.
        config: the configuration that produced it (the bundle's experiment config, or the
            env config and strategy parameters).
    """

    name: str
    rollout: Rollout
    fills: pd.DataFrame
    env_config: EnvConfig
    metrics: dict[str, float] = field(default_factory=dict)
    baselines: dict[str, BacktestResult] = field(default_factory=dict)
    policy: dict[str, float] = field(default_factory=dict)
    verdicts: list[Verdict] = field(default_factory=list)
    stats: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def ts_ms(self) -> npt.NDArray[np.int64]:
        """Open times of the marked bars (UTC ms)."""
        return self.rollout.ts_ms

    @property
    def equity_quote(self) -> F64:
        """The equity curve (quote currency), ``T + 1`` marks."""
        return self.rollout.equity_quote

    @property
    def position_base(self) -> F64:
        """Position held at each mark (base currency)."""
        return self.rollout.position_base

    @property
    def returns(self) -> F64:
        """Per-bar simple returns after costs (``T``)."""
        return simple_returns(self.rollout.equity_quote)

    def equity_frame(self) -> pd.DataFrame:
        """One row per mark: ``ts_ms``, ``open_quote``, ``close_quote``, ``equity_quote``,
        ``position_base``, ``exposure``, ``target_exposure`` (the decision taken at that mark;
        NaN at the last), ``drawdown`` and ``baseline_<name>_equity_quote`` per baseline."""
        import pandas as pd

        ro = self.rollout
        n = len(ro.equity_quote)
        target = np.full(n, np.nan)
        target[: ro.n_steps] = ro.target_exposure
        peak = np.maximum.accumulate(ro.equity_quote)
        frame = {
            "ts_ms": ro.ts_ms.astype(np.int64),
            "open_quote": ro.open_quote if ro.open_quote is not None else np.full(n, np.nan),
            "close_quote": ro.close_quote,
            "equity_quote": ro.equity_quote,
            "position_base": ro.position_base,
            "exposure": ro.exposure,
            "target_exposure": target,
            "drawdown": 1.0 - ro.equity_quote / peak,
        }
        for name, b in self.baselines.items():
            frame[f"baseline_{name}_equity_quote"] = b.rollout.equity_quote
        return pd.DataFrame(frame)

    def baseline_metrics(self) -> dict[str, dict[str, float]]:
        """Metrics per baseline."""
        return {name: b.metrics for name, b in self.baselines.items()}

    def flat(self, prefix: str = "backtest") -> dict[str, float]:
        """Namespaced scalars: ``<prefix>/<name>/<metric>``, ``<prefix>/<baseline>/<metric>``,
        ``<prefix>/stats/<key>``, ``<prefix>/policy/<key>`` (what the policy did and the
        directional quality of its calls) and ``<prefix>/margin_vs_<baseline>``."""
        out = {f"{prefix}/{self.name}/{k}": v for k, v in self.metrics.items()}
        for name, ms in self.baseline_metrics().items():
            out.update({f"{prefix}/{name}/{k}": v for k, v in ms.items()})
        out.update({f"{prefix}/stats/{k}": v for k, v in self.stats.items()})
        out.update({f"{prefix}/policy/{k}": v for k, v in self.policy.items()})
        for v in self.verdicts:
            out[f"{prefix}/margin_vs_{v.baseline}"] = v.margin
            out[f"{prefix}/confidence_vs_{v.baseline}"] = v.confidence
        return out

    def verdict_lines(self) -> list[str]:
        """The plain verdict sentences, one per baseline."""
        return [v.line() for v in self.verdicts]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary (what ``metrics.json`` holds)."""
        return dict(
            json_safe({
                "name": self.name,
                "metrics": self.metrics,
                "baselines": self.baseline_metrics(),
                "policy": self.policy,
                "verdicts": [v.to_dict() for v in self.verdicts],
                "stats": self.stats,
                "warnings": self.warnings,
                "meta": self.meta,
                "config": self.config,
                "env": self.env_config.model_dump(mode="json"),
            })
        )


# --------------------------------------------------------------------------- inputs


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


def _candles(data: Any) -> pd.DataFrame | None:
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        return data
    if isinstance(data, str | Path):
        from coinrl.pipeline.formats import read_ohlcv

        return read_ohlcv(Path(data))
    return None


def _agent_data(agent: TrainedAgent, data: Any, split: str) -> MarketData:
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
    candles = _candles(data)
    if candles is None:
        raise DataError(
            f"historical_data must be MarketData, a candle DataFrame or a path, got {type(data).__name__}"
        )
    return agent.market_data(candles, split=split)


def _signal_data(data: Any, split: str) -> MarketData:
    if isinstance(data, MarketData):
        return data
    candles = _candles(data)
    if candles is None:
        raise DataError(
            f"historical_data must be MarketData, a candle DataFrame or a path, got {type(data).__name__}"
        )
    return market_data_from_candles(candles, split=split)


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


def _is_signal(model: Any) -> bool:
    if isinstance(model, np.ndarray):
        return model.dtype.kind in "biuf"
    if isinstance(model, list | tuple):
        return all(isinstance(v, int | float | np.integer | np.floating) for v in model)
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover
        return False
    return isinstance(model, pd.Series)


def _resolve(model: Any) -> Any:
    if isinstance(model, str | Path):
        from .bundle import load_model

        return load_model(model)
    return model


# --------------------------------------------------------------------------- assembly


def _meta(data: MarketData, ro: Rollout, cfg: EnvConfig, kind: str, split: str) -> dict[str, Any]:
    return {
        "kind": kind,
        "symbol": data.symbol,
        "timeframe": data.timeframe,
        "exchange": data.exchange,
        "split": split,
        "start_ts_ms": int(ro.ts_ms[0]),
        "end_ts_ms": int(ro.ts_ms[-1]),
        "n_decisions": ro.n_steps,
        "n_bars": len(data),
        "periods_per_year": ro.periods_per_year,
        "market_fingerprint": market_fingerprint(data),
        "data_fingerprint": data.meta.get("data_fingerprint"),
        "normaliser_fingerprint": data.meta.get("normaliser_fingerprint"),
        "feature_spec_fingerprint": data.meta.get("feature_spec_fingerprint"),
        "fold": data.meta.get("fold"),
        "delay_bars": cfg.delay_bars,
    }


def _result(name: str, ro: Rollout, cfg: EnvConfig, draws: dict[str, float] | None = None) -> BacktestResult:
    res = BacktestResult(name=name, rollout=ro, fills=fills_from_rollout(ro, cfg), env_config=cfg)
    res.metrics = evaluate_strategy_performance(res)
    if draws is not None:  # the random baseline: the mean over its draws, and their spread
        res.metrics.update(draws)
    return res


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


def assemble_result(
    name: str,
    rollout: Rollout,
    data: MarketData,
    env_config: EnvConfig,
    *,
    kind: str,
    split: str,
    baselines: bool = True,
    n_random: int = 5,
    seed: int = 0,
    ma_crossover: tuple[int, int] | None = MA_CROSSOVER_BARS,
    n_trials: int = 1,
    confidence: float = 0.95,
    config: dict[str, Any] | None = None,
    data_description: str | None = None,
) -> BacktestResult:
    """A :class:`BacktestResult` of a finished run: fills, metrics, baselines, verdicts, stats.

    Args:
        name: the strategy's name.
        rollout: its run over ``data``.
        data: the split it ran over.
        env_config: its env config (the baselines pay the same costs).
        kind: ``agent``, ``signal`` or ``policy``.
        split: name of the split.
        baselines: play the baselines and judge the strategy against each.
        n_random: draws of the turnover-matched random policy.
        seed: seed of the random baseline and of the bootstrap.
        ma_crossover: ``(fast_bars, slow_bars)`` of the crossover baseline (None: leave it out).
        n_trials: configurations tried before this one (deflates the Sharpe ratio).
        confidence: level of the verdicts' intervals.
        config: the configuration to record with the result.
        data_description: what the data was, for the verdicts (default
            :func:`~coinrl.agents.stats.data_label` of ``split``: only ``test`` is called out of
            sample).
    """
    cfg = evaluation_config(env_config)
    res = _result(name, rollout, cfg)
    res.meta = _meta(data, rollout, cfg, kind, split)
    described = data_description or data_label(split)
    res.meta["data_description"] = described
    short = not can_annualise(rollout.n_steps, rollout.periods_per_year)
    res.meta["short_sample"] = short
    res.config = dict(config or {})
    if short:
        res.warnings.append(
            f"SMALL SAMPLE: {rollout.n_steps} bars ({res.metrics['sample_years'] * 365:.1f} days) "
            "are too few to annualise (the rule: at least a quarter of a year of bars); "
            "annualised return and Calmar are n/a, and every figure is noisy."
        )
    if baselines:
        runs = play_baselines(
            data, cfg, agent_targets=rollout.target_exposure, n_random=n_random, seed=seed,
            ma_crossover=ma_crossover,
        )
        for bname, bro in runs.rollouts.items():
            draws = runs.metrics["random"] if bname == "random" else None
            res.baselines[bname] = _result(bname, bro, cfg, draws)
        r = res.returns
        res.verdicts = []
        for bname, b in res.baselines.items():
            other = (
                np.stack([simple_returns(d.equity_quote) for d in runs.random_draws])
                if bname == "random" else simple_returns(b.rollout.equity_quote)
            )
            res.verdicts.append(verdict_from_returns(
                r, other, bname, confidence=confidence, seed=seed, data=described,
                small_sample=short,
            ))
    if rollout.n_steps >= 2:
        res.stats = sharpe_stats(res.returns, n_trials=n_trials)
    warn = lookahead_warning(res.metrics["sharpe"])
    if warn:
        res.warnings.append(warn)
    return res


def simulate_trading_strategy(
    model: TrainedAgent | str | Path | npt.ArrayLike | Callable[[Any], Any] | Any,
    historical_data: MarketData | pd.DataFrame | str | Path,
    *,
    env_config: EnvConfig | dict[str, Any] | None = None,
    name: str | None = None,
    split: str | None = None,
    baselines: bool = True,
    n_random: int = 5,
    seed: int = 0,
    ma_crossover: tuple[int, int] | None = MA_CROSSOVER_BARS,
    n_trials: int = 1,
    confidence: float = 0.95,
    force: bool = False,
    data_description: str | None = None,
) -> BacktestResult:
    """Backtest one strategy over held-out data through the training env's books.

    Args:
        model: a :class:`~coinrl.agents.agent.TrainedAgent` or a bundle path (its
            deterministic policy), a signal (array of target exposures, one per bar or one per
            decision), an SB3 model or an ``obs -> action`` callable (these two need
            ``env_config``).
        historical_data: the bars to trade. For an agent: MarketData built with the bundle's
            spec and normaliser (a split of :func:`~coinrl.pipeline.source.load_dataset`), or
            candles (DataFrame or file), which get the bundle's features and normaliser. For a
            signal: candles or any MarketData (only prices are read).
        env_config: costs and rules; default the bundle's for an agent, :data:`SIGNAL_ENV`
            for a signal. Its ``episode_length_bars`` is replaced by one whole-split episode.
        name: the strategy's name (``agent`` / ``signal`` / ``policy``).
        split: name of the split for the report (default ``data.meta["split"]``).
        baselines: also run buy-and-hold, flat, the MA crossover and the matched random policy
            on the same data and costs, and judge the strategy against each.
        n_random: random-policy draws averaged in the ``random`` baseline.
        seed: seed of the random baseline and of the bootstrap.
        ma_crossover: ``(fast_bars, slow_bars)`` of the crossover baseline; None leaves it out.
        n_trials: configurations tried before this one (for the deflated Sharpe ratio).
        confidence: level of the verdicts' confidence intervals.
        force: run an agent on bars of another timeframe than it was trained on (refused
            otherwise, see :func:`check_timeframe`); the report then states it.
        data_description: what the data is, for the verdicts (default from ``split``:
            ``test`` is "out of sample", ``full`` is "in-sample (full data)", ...).

    Returns:
        The :class:`BacktestResult`.

    Raises:
        ConfigError: a bare policy without ``env_config``; a signal a discrete env cannot
            express; an agent on another timeframe without ``force``.
        DataError: data too short for the window, mismatched features, bad signal values.

    Example:
        >>> res = simulate_trading_strategy("runs/ppo/bundle", prepared.test)  # doctest: +SKIP
        >>> print(res.verdict_lines()[0])  # doctest: +SKIP
    """
    model = _resolve(model)
    config: dict[str, Any]
    forced: str | None = None
    if isinstance(model, TrainedAgent):
        cfg = evaluation_config(env_config or model.env_config)
        data = _agent_data(model, historical_data, split or "backtest")
        forced = check_timeframe(model, data, force=force)
        fn = torch_policy(model.model)
        ro = rollout_policy(fn if fn is not None else model.model, data, cfg, deterministic=True)
        kind = "agent"
        config = dict(model.experiment_config) or {
            "env": model.env_config.model_dump(mode="json"),
            "train": model.train_config.model_dump(mode="json"),
        }
        config = {**config, "bundle": model.info.get("bundle")}
    elif _is_signal(model):
        cfg = evaluation_config(env_config if env_config is not None else SIGNAL_ENV)
        data = _signal_data(historical_data, split or "backtest")
        ro = simulate_targets(data, cfg, signal_targets(model, data, cfg))
        kind = "signal"
        config = {"env": cfg.model_dump(mode="json")}
    else:
        if env_config is None:
            raise ConfigError(
                "simulate_trading_strategy got a bare policy without env_config; pass the "
                "EnvConfig used in training (or a TrainedAgent / bundle path, which carries it)"
            )
        cfg = evaluation_config(env_config)
        if not isinstance(historical_data, MarketData):
            raise DataError("a bare policy needs MarketData with the features it was trained on")
        data = historical_data
        fn = torch_policy(model) if hasattr(model, "policy") else None
        ro = rollout_policy(fn if fn is not None else model, data, cfg, deterministic=True)
        kind = "policy"
        config = {"env": cfg.model_dump(mode="json")}
    split_name = split or str(data.meta.get("split", "backtest"))
    res = assemble_result(
        name or kind, ro, data, cfg, kind=kind, split=split_name, baselines=baselines,
        n_random=n_random, seed=seed, ma_crossover=ma_crossover, n_trials=n_trials,
        confidence=confidence, config=config, data_description=data_description,
    )
    if forced:
        res.warnings.insert(0, forced)
        res.meta["forced"] = forced
    if kind != "signal":
        res.policy = {**policy_metrics(ro, cfg), **directional_quality(ro, cfg)}
    logger.info(
        "backtest kind=%s symbol=%s split=%s bars=%d total_return=%.4f sharpe=%.3f fills=%d",
        kind, data.symbol, split_name, ro.n_steps, res.metrics["total_return"],
        res.metrics["sharpe"], len(res.fills),
    )
    return res


def _grouped_policy(fns: list[Callable[[Any], Any]], group: npt.NDArray[np.int64]) -> Callable[[Any], Any]:
    """One batched ``obs -> actions`` over accounts whose rows belong to different models."""
    idx = [np.flatnonzero(group == g) for g in range(len(fns))]
    if len(fns) == 1:
        return fns[0]

    def act(obs: Any) -> Any:
        out: npt.NDArray[Any] | None = None
        for fn, rows in zip(fns, idx, strict=True):
            a = np.asarray(fn(obs[rows]))
            if out is None:
                out = np.zeros((len(group), *a.shape[1:]), dtype=a.dtype)
            out[rows] = a
        return out

    return act


def simulate_many(
    models: Sequence[TrainedAgent],
    datas: Sequence[MarketData],
    *,
    env_config: EnvConfig | dict[str, Any] | None = None,
    names: Sequence[str] | None = None,
    baselines: bool = True,
    n_random: int = 5,
    seed: int = 0,
    ma_crossover: tuple[int, int] | None = MA_CROSSOVER_BARS,
    n_trials: int = 1,
    confidence: float = 0.95,
) -> list[BacktestResult]:
    """Backtest pairs ``(models[i], datas[i])`` together (walk-forward folds x seeds).

    All accounts step in one :class:`~coinrl.envs.vector.TradingVectorEnv`. The networks run
    once per step for all accounts: several MLP models of one shape with their weights stacked
    (:func:`~coinrl.agents.rollout.stacked_torch_policy`, one batched product per layer),
    otherwise each distinct model on its accounts' rows
    (:func:`~coinrl.agents.rollout.torch_policy`). One model trading one account gets exactly
    the actions of :func:`simulate_trading_strategy`; batched rows agree with it up to the
    float rounding of a batched matrix product (discrete actions except at exact ties).

    Args:
        models: trained agents (the same object may repeat; one network call covers its rows).
        datas: the split of each pair, built with that agent's spec and normaliser.
        env_config: override of the agents' env config (they must all share one).
        names: strategy name per pair (default ``agent``).
        baselines, n_random, seed, ma_crossover, n_trials, confidence: as for
            :func:`simulate_trading_strategy`.

    Returns:
        One :class:`BacktestResult` per pair, in order.

    Raises:
        ConfigError: agents with different env configs, or a recurrent policy.
    """
    if len(models) != len(datas) or not models:
        raise ConfigError(f"simulate_many needs as many models as datas (got {len(models)}, {len(datas)})")
    cfgs = {evaluation_config(env_config or m.env_config).model_dump_json() for m in models}
    if len(cfgs) > 1:
        raise ConfigError("simulate_many runs one env: the agents must share one env config")
    cfg = evaluation_config(env_config or models[0].env_config)
    uniq: list[TrainedAgent] = []
    group = np.zeros(len(models), dtype=np.int64)
    for i, m in enumerate(models):
        for g, u in enumerate(uniq):
            if u is m:
                group[i] = g
                break
        else:
            group[i] = len(uniq)
            uniq.append(m)
    policy = stacked_torch_policy([m.model for m in uniq], group) if len(uniq) > 1 else None
    if policy is None:
        fns = []
        for m in uniq:
            fn = torch_policy(m.model)
            if fn is None:
                raise ConfigError(
                    f"simulate_many cannot batch a {m.algo} policy (recurrent); backtest it with "
                    "simulate_trading_strategy"
                )
            fns.append(fn)
        policy = _grouped_policy(fns, group)
    datas_checked = [_agent_data(m, d, "backtest") for m, d in zip(models, datas, strict=True)]
    rollouts = rollout_batch(policy, datas_checked, cfg)
    out = []
    for i, (m, d, ro) in enumerate(zip(models, datas_checked, rollouts, strict=True)):
        res = assemble_result(
            names[i] if names else "agent", ro, d, cfg, kind="agent",
            split=str(d.meta.get("split", "backtest")), baselines=baselines, n_random=n_random,
            seed=seed, ma_crossover=ma_crossover, n_trials=n_trials, confidence=confidence,
            config={**dict(m.experiment_config), "bundle": m.info.get("bundle")},
        )
        res.policy = {**policy_metrics(ro, cfg), **directional_quality(ro, cfg)}
        out.append(res)
    logger.info("backtested pairs=%d models=%d", len(out), len(uniq))
    return out


__all__ = [
    "FILL_COLUMNS",
    "SIGNAL_ENV",
    "BacktestResult",
    "assemble_result",
    "check_timeframe",
    "evaluate_strategy_performance",
    "fills_from_rollout",
    "market_data_from_candles",
    "market_fingerprint",
    "signal_targets",
    "simulate_many",
    "simulate_trading_strategy",
]
