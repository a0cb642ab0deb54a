"""Portfolio backtests: a portfolio agent or a (T, A) weights signal over one split, judged.

:func:`simulate_portfolio_strategy` is :func:`~coinrl.agents.backtest.simulate_trading_strategy`
for portfolios: same arguments, same shape of answer. It plays the strategy through the
portfolio env's books (:func:`~coinrl.agents.portfolio_rollout.rollout_portfolio`: no second
simulator), the baselines on the same bars, costs and rules
(:mod:`~coinrl.agents.portfolio_baselines`), a verdict against each (paired block bootstrap),
the Sharpe ratio's probabilistic and deflated versions, the look-ahead warning, and the
per-asset attribution (:mod:`~coinrl.agents.portfolio_metrics`). The
:class:`PortfolioBacktestResult` has ``to_dict``, ``equity_frame``, ``fills``, ``flat`` and
``verdict_lines`` like :class:`~coinrl.agents.backtest_result.BacktestResult`, so
:func:`~coinrl.agents.report.save_backtest_results` writes its report folder (with the
portfolio page of :mod:`~coinrl.agents.portfolio_report`). ``simulate_trading_strategy``
dispatches here when :func:`is_portfolio_strategy`. With ``risk=`` every decision passes the
paper/live portfolio risk layer (:mod:`~coinrl.agents.portfolio_risk_rollout`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from coinrl.envs.config import PortfolioEnvConfig
from coinrl.envs.risk import RiskConfig
from coinrl.pipeline.dataset import PortfolioData
from coinrl.pipeline.errors import ConfigError, DataError
from coinrl.pipeline.portfolio import PreparedPortfolio
from coinrl.pipeline.source import PortfolioDataConfig

from .backtest_risk import PortfolioRiskRecord
from .metrics import can_annualise, json_safe, simple_returns
from .portfolio_baselines import (
    DEFAULT_N_RANDOM,
    play_portfolio_baselines,
    portfolio_verdicts,
)
from .portfolio_metrics import asset_attribution, portfolio_metrics
from .portfolio_risk_rollout import rollout_portfolio_with_risk
from .portfolio_rollout import (
    PortfolioConfigLike,
    PortfolioRollout,
    evaluation_portfolio_config,
    rollout_portfolio,
)
from .stats import Verdict, data_label, lookahead_warning, sharpe_stats

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]

PORTFOLIO_FILL_COLUMNS = (
    "ts_ms", "decision_ts_ms", "symbol", "side", "qty_base", "price_quote", "ref_price_quote",
    "notional_quote", "fee_quote", "slippage_quote", "position_after_base", "liquidation",
)
"""Columns of :attr:`PortfolioBacktestResult.fills`."""

SPLITS = ("train", "validation", "test", "full")


def portfolio_fills(ro: PortfolioRollout) -> pd.DataFrame:
    """Every fill of a portfolio run, per asset, from the books' positions and running costs.

    Step ``k`` fills at the open of the bar mark ``k`` closes (``ts_ms``); its decision was
    taken at the close before (``decision_ts_ms``, -1 for a liquidation). ``qty_base`` is the
    unsigned change of the position, ``ref_price_quote`` the open, ``fee_quote`` and
    ``slippage_quote`` the books' per-asset running totals' steps, ``notional_quote`` the
    traded notional's step, ``price_quote`` the fill price with slippage. A liquidation fill
    (at the wick) takes its price from its notional.
    """
    import pandas as pd

    dq = np.diff(ro.position_base, axis=0)
    fee = np.diff(ro.fees_cum_quote, axis=0)
    slip = np.diff(ro.slippage_cum_quote, axis=0)
    notional = np.diff(ro.turnover_cum_quote, axis=0)
    k, a = np.nonzero((dq != 0) & (notional > 0))
    liq = np.zeros(len(k), dtype=bool)
    if ro.liquidation_mark is not None:
        liq = k + 1 == ro.liquidation_mark
    q = np.abs(dq[k, a])
    ref = np.where(liq, notional[k, a] / np.maximum(q, 1e-300), ro.open_quote[k + 1, a])
    sign = np.sign(dq[k, a])
    frame = pd.DataFrame({
        "ts_ms": ro.ts_ms[k + 1].astype(np.int64),
        "decision_ts_ms": np.where(liq, -1, ro.ts_ms[k]).astype(np.int64),
        "symbol": np.asarray(ro.symbols, dtype=object)[a],
        "side": np.where(sign > 0, "buy", "sell"),
        "qty_base": q,
        "price_quote": ref + sign * slip[k, a] / np.maximum(q, 1e-300),
        "ref_price_quote": ref,
        "notional_quote": notional[k, a],
        "fee_quote": fee[k, a],
        "slippage_quote": slip[k, a],
        "position_after_base": ro.position_base[k + 1, a],
        "liquidation": liq,
    })
    return frame[list(PORTFOLIO_FILL_COLUMNS)]


@dataclass(eq=False)
class PortfolioBacktestResult:
    """One portfolio strategy over one split, with its baselines, verdicts and attribution.

    Attributes:
        name: the strategy's name (``agent``, ``signal``, ``policy``).
        rollout: its run.
        env_config: the portfolio env config it ran under (costs, budget, window).
        metrics: :func:`~coinrl.agents.portfolio_metrics.portfolio_metrics` of the run.
        attribution: :func:`~coinrl.agents.portfolio_metrics.asset_attribution` of the run.
        baselines: the baselines' runs by name (``random_weights``: its first draw).
        baselines_metrics: their metrics (``random_weights``: the mean over draws, spread in
            ``draws_*``); :meth:`baseline_metrics` returns them, as the single-asset result's.
        verdicts: the strategy against each baseline.
        stats: Sharpe-ratio statistics (``psr``, ``dsr``, ...).
        warnings: plain-language warnings (small sample, implausible Sharpe).
        meta: symbols, timeframe, split, time range, fingerprints, kind.
        config: the configuration that produced it.
    """

    name: str
    rollout: PortfolioRollout
    env_config: PortfolioEnvConfig
    metrics: dict[str, float] = field(default_factory=dict)
    attribution: dict[str, dict[str, float]] = field(default_factory=dict)
    baselines: dict[str, PortfolioRollout] = field(default_factory=dict)
    baselines_metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    verdicts: list[Verdict] = field(default_factory=list)
    stats: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    policy: dict[str, float] = field(default_factory=dict)
    """Kept empty (the single-asset result's directional statistics have no portfolio form yet)."""
    risk: PortfolioRiskRecord | None = None
    """What the risk layer did (``risk=`` runs only; its summary is also ``meta["risk"]``)."""

    @property
    def symbols(self) -> tuple[str, ...]:
        """The assets."""
        return self.rollout.symbols

    @property
    def ts_ms(self) -> npt.NDArray[np.int64]:
        """Open times of the marked bars (UTC ms)."""
        return self.rollout.ts_ms

    @property
    def equity_quote(self) -> F64:
        """The equity curve (quote), ``T + 1`` marks."""
        return self.rollout.equity_quote

    @property
    def returns(self) -> F64:
        """Per-bar simple returns after costs (``T``)."""
        return simple_returns(self.rollout.equity_quote)

    @property
    def fills(self) -> pd.DataFrame:
        """Every fill, per asset (:func:`portfolio_fills`)."""
        return portfolio_fills(self.rollout)

    def equity_frame(self) -> pd.DataFrame:
        """One row per mark: ``ts_ms``, ``equity_quote``, ``drawdown``, ``gross_exposure``,
        ``net_exposure``, then per asset ``weight_<SYM>`` (drifted, at the close),
        ``target_<SYM>`` (the decision taken at that mark; NaN at the last),
        ``position_<SYM>``, ``close_<SYM>``, and ``baseline_<name>_equity_quote``."""
        import pandas as pd

        ro = self.rollout
        n = len(ro.equity_quote)
        peak = np.maximum.accumulate(ro.equity_quote)
        frame: dict[str, Any] = {
            "ts_ms": ro.ts_ms.astype(np.int64),
            "equity_quote": ro.equity_quote,
            "drawdown": 1.0 - ro.equity_quote / peak,
            "gross_exposure": ro.gross_exposure,
            "net_exposure": ro.weights.sum(axis=1),
        }
        for a, sym in enumerate(ro.symbols):
            target = np.full(n, np.nan)
            target[: ro.n_steps] = ro.target_weights[:, a]
            frame[f"weight_{sym}"] = ro.weights[:, a]
            frame[f"target_{sym}"] = target
            frame[f"position_{sym}"] = ro.position_base[:, a]
            frame[f"close_{sym}"] = ro.close_quote[:, a]
        for name, b in self.baselines.items():
            frame[f"baseline_{name}_equity_quote"] = b.equity_quote
        return pd.DataFrame(frame)

    def baseline_metrics(self) -> dict[str, dict[str, float]]:
        """Metrics per baseline."""
        return self.baselines_metrics

    def flat(self, prefix: str = "backtest") -> dict[str, float]:
        """Namespaced scalars: ``<prefix>/<name>/<metric>``, ``<prefix>/<baseline>/<metric>``,
        ``<prefix>/stats/<key>``, ``<prefix>/asset/<SYM>/<key>`` and the margins."""
        out = {f"{prefix}/{self.name}/{k}": v for k, v in self.metrics.items()}
        for name, ms in self.baselines_metrics.items():
            out.update({f"{prefix}/{name}/{k}": v for k, v in ms.items()})
        out.update({f"{prefix}/stats/{k}": v for k, v in self.stats.items()})
        for sym, vals in self.attribution.items():
            out.update({f"{prefix}/asset/{sym}/{k}": v for k, v in vals.items()})
        for v in self.verdicts:
            out[f"{prefix}/margin_vs_{v.baseline}"] = v.margin
            out[f"{prefix}/confidence_vs_{v.baseline}"] = v.confidence
        return out

    def verdict_lines(self) -> list[str]:
        """The plain verdict sentences, one per baseline."""
        return [v.line() for v in self.verdicts]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary (``metrics.json``): the single-asset result's keys plus
        ``portfolio`` (symbols, attribution, each baseline's attribution) and, with a risk
        layer, ``risk_events`` (every rule that acted, per asset, with its decision time)."""
        extra = {} if self.risk is None else {"risk_events": self.risk.event_rows()}
        return dict(json_safe({
            **extra,
            "name": self.name,
            "metrics": self.metrics,
            "baselines": self.baselines_metrics,
            "policy": self.policy,
            "verdicts": [v.to_dict() for v in self.verdicts],
            "stats": self.stats,
            "warnings": self.warnings,
            "meta": self.meta,
            "config": self.config,
            "env": self.env_config.model_dump(mode="json"),
            "portfolio": {
                "symbols": list(self.symbols),
                "attribution": self.attribution,
                "baseline_attribution": {n: asset_attribution(b) for n, b in self.baselines.items()},
            },
        }))


def is_portfolio_strategy(model: Any, data: Any, env_config: Any = None) -> bool:
    """Whether a backtest is a portfolio's: a portfolio agent, portfolio data (or its config)
    or a portfolio env config."""
    return (getattr(model, "portfolio", None) is not None
            or isinstance(data, PortfolioData | PreparedPortfolio | PortfolioDataConfig)
            or isinstance(env_config, PortfolioEnvConfig))


def _split(data: PreparedPortfolio, split: str | None) -> PortfolioData:
    name = split or "test"
    if name not in SPLITS:
        raise ConfigError(f"split {name!r} is not one of {', '.join(SPLITS)}")
    part: PortfolioData = getattr(data, name)
    part.meta.setdefault("split", name)
    return part


def _agent_data(agent: Any, data: Any, split: str | None) -> PortfolioData:
    """The agent's split: PortfolioData as given, a PreparedPortfolio's split, or candles from
    a data config (default the agent's own) with the agent's features and normalisers."""
    if isinstance(data, PortfolioData):
        return data
    if isinstance(data, PreparedPortfolio):
        return _split(data, split)
    if data is None or isinstance(data, PortfolioDataConfig | Mapping):
        from .train_portfolio import portfolio_data_for

        return _split(portfolio_data_for(agent, data), split)
    raise DataError(f"a portfolio agent backtests on PortfolioData, a PreparedPortfolio or a "
                    f"PortfolioDataConfig, got {type(data).__name__}")


def _signal_data(data: Any, split: str | None) -> PortfolioData:
    if isinstance(data, PortfolioData):
        return data
    if isinstance(data, PreparedPortfolio):
        return _split(data, split)
    if isinstance(data, PortfolioDataConfig | Mapping):
        from coinrl.pipeline.config import validate_config
        from coinrl.pipeline.source import load_portfolio_dataset

        cfg = validate_config(PortfolioDataConfig, data, source="portfolio data config") \
            if isinstance(data, Mapping) else data
        return _split(load_portfolio_dataset(cfg), split)
    raise DataError(f"a weights signal backtests on PortfolioData, a PreparedPortfolio or a "
                    f"PortfolioDataConfig, got {type(data).__name__}")


def _check_agent(agent: Any, data: PortfolioData, force: bool) -> str | None:
    """Refuse other assets (always) and another timeframe (unless ``force``)."""
    symbols = tuple(agent.portfolio.symbols)
    if data.symbols != symbols:
        raise DataError(f"the data holds assets {list(data.symbols)} but the agent trades "
                        f"{list(symbols)} (in that order); rebuild the data with portfolio_data_for")
    trained = agent.data_info.get("timeframe")
    if trained and trained != data.timeframe:
        if not force:
            raise ConfigError(f"the agent was trained on {trained} bars, the data is {data.timeframe}; "
                              "resample, or pass force=True to run it anyway")
        return f"FORCED: the agent was trained on {trained} bars and ran on {data.timeframe} bars"
    return None


def simulate_portfolio_strategy(
    model: Any,
    historical_data: Any = None,
    *,
    env_config: PortfolioConfigLike = None,
    name: str | None = None,
    split: str | None = None,
    baselines: bool = True,
    n_random: int = DEFAULT_N_RANDOM,
    seed: int = 0,
    ma_crossover: Any = None,
    n_trials: int = 1,
    confidence: float = 0.95,
    force: bool = False,
    data_description: str | None = None,
    risk: RiskConfig | None = None,
) -> PortfolioBacktestResult:
    """Backtest a portfolio agent, a ``(T, A)`` weights signal or a policy over one split.

    Args:
        model: a portfolio :class:`~coinrl.agents.agent.TrainedAgent` (or bundle path), target
            weights ``(T, A)`` per decision or ``(len(data), A)`` per bar, or an SB3 model /
            ``obs -> action`` callable (with ``env_config``).
        historical_data: PortfolioData (built with the agent's features and normalisers for an
            agent), a PreparedPortfolio (its ``split``), a PortfolioDataConfig or mapping (an
            agent's data is rebuilt with its own spec and normalisers), or None (an agent's own
            data section).
        env_config: costs and rules (default the agent's; required for a signal or policy).
        name: the strategy's name (default its kind: ``agent``, ``signal``, ``policy``).
        split: the split of a PreparedPortfolio or data config (default ``test``).
        baselines: run the baselines and judge the strategy against each.
        n_random: draws of the turnover-matched random weights baseline.
        seed: seed of the random baseline and of the bootstrap.
        ma_crossover: ignored (a single-asset baseline; accepted so the single-asset entry
            point can pass its arguments through).
        n_trials: configurations tried before this one (deflates the Sharpe ratio).
        confidence: level of the verdicts' intervals.
        force: run an agent on another timeframe than it was trained on.
        data_description: what the data was (default from ``split``).
        risk: the portfolio risk limits of paper and live trading
            (:class:`~coinrl.envs.risk_portfolio.PortfolioRiskConfig`; a plain ``RiskConfig``
            is promoted), applied to every decision
            (:mod:`~coinrl.agents.portfolio_risk_rollout`); None trades the strategy's weights
            unchanged. The baselines run without it.

    Returns:
        The :class:`PortfolioBacktestResult` (with ``risk``: its
        :class:`~coinrl.agents.backtest_risk.PortfolioRiskRecord` in ``risk`` and ``meta["risk"]``).

    Raises:
        ConfigError: ``risk`` of another kind or naming assets not traded; a signal or policy without ``env_config``; an agent on
            another timeframe without ``force``; a signal outside the budget.
        DataError: data of other assets, too short for the window, or a bad signal.
    """
    del ma_crossover
    record: PortfolioRiskRecord | None = None

    def play(data: PortfolioData, cfg: PortfolioEnvConfig, **how: Any) -> PortfolioRollout:
        nonlocal record
        if risk is None:
            return rollout_portfolio(data, cfg, **how)
        how.pop("deterministic", None)
        ro, record = rollout_portfolio_with_risk(data, cfg, risk, **how)
        return ro

    if isinstance(model, str) or hasattr(model, "__fspath__"):
        from .bundle import load_model

        model = load_model(model)
    forced = None
    if getattr(model, "portfolio", None) is not None:
        data = _agent_data(model, historical_data, split)
        forced = _check_agent(model, data, force)
        cfg = evaluation_portfolio_config(env_config if env_config is not None else model.env_config)
        ro = play(data, cfg, policy=model.model, deterministic=True)
        kind = "agent"
        config = {**dict(model.experiment_config), "bundle": model.info.get("bundle")}
    else:
        if env_config is None:
            raise ConfigError("a portfolio signal or policy needs env_config (a PortfolioEnvConfig "
                              "or mapping: costs, budget, window)")
        cfg = evaluation_portfolio_config(env_config)
        is_weights = isinstance(model, np.ndarray | list | tuple)
        if not is_weights and not isinstance(historical_data, PortfolioData | PreparedPortfolio):
            raise DataError("a bare portfolio policy needs PortfolioData (or a PreparedPortfolio) "
                            "with the features it was trained on")
        data = _signal_data(historical_data, split)
        if is_weights:
            ro = play(data, cfg, weights=np.asarray(model, dtype=np.float64))
            kind = "signal"
        else:
            ro = play(data, cfg, policy=model, deterministic=True)
            kind = "policy"
        config = {"env": cfg.model_dump(mode="json")}
    split_name = split or str(data.meta.get("split", "backtest"))
    described = data_description or data_label(split_name)
    res = PortfolioBacktestResult(name=name or kind, rollout=ro, env_config=cfg, config=config)
    res.metrics = portfolio_metrics(ro)
    res.attribution = asset_attribution(ro)
    short = not can_annualise(ro.n_steps, ro.periods_per_year)
    res.meta = _meta(data, ro, kind, split_name, described, short)
    if forced:
        res.warnings.append(forced)
        res.meta["forced"] = forced
    if record is not None:
        _attach_risk(res, record)
    if short:
        res.warnings.append(
            f"SMALL SAMPLE: {ro.n_steps} bars ({res.metrics['sample_years'] * 365:.1f} days) are too "
            "few to annualise (the rule: at least a quarter of a year of bars); annualised return "
            "and Calmar are n/a, and every figure is noisy.")
    if ro.scaled_rebalances:
        res.warnings.append(f"{ro.scaled_rebalances} rebalance(s) could not be afforded in full "
                            "within the gross budget after costs and were scaled down by the books.")
    if baselines:
        runs = play_portfolio_baselines(data, cfg, agent=ro, n_random=n_random, seed=seed)
        res.baselines = runs.rollouts
        res.baselines_metrics = runs.metrics
        res.verdicts = portfolio_verdicts(ro, runs, data=described, confidence=confidence, seed=seed)
    if ro.n_steps >= 2:
        res.stats = sharpe_stats(res.returns, n_trials=n_trials)
    warn = lookahead_warning(res.metrics["sharpe"])
    if warn:
        res.warnings.append(warn)
    logger.info("portfolio backtest kind=%s symbols=%s split=%s steps=%d total_return=%.4f",
                kind, ",".join(data.symbols), split_name, ro.n_steps, res.metrics["total_return"])
    return res


def _attach_risk(res: PortfolioBacktestResult, record: PortfolioRiskRecord) -> None:
    """``res.risk``, its summary in ``meta["risk"]`` and a warning when the kill-switch fired."""
    res.risk = record
    summary = record.to_dict()
    del summary["events"]  # the full list stays on res.risk (event_rows)
    res.meta["risk"] = summary
    k = record.killed_at
    if k is not None:
        rules = ", ".join(e.rule for d, _, e in record.events if d == k)
        res.warnings.append(f"RISK KILL-SWITCH fired at decision {k} (bar ts_ms={int(record.ts_ms[k])}: "
                            f"{rules}); the account held its positions to the end of the split, as a "
                            "session with flatten_on_kill=False")


def _meta(data: PortfolioData, ro: PortfolioRollout, kind: str, split: str, described: str,
          short: bool) -> dict[str, Any]:
    return {
        "kind": kind,
        "portfolio": True,
        "symbols": list(data.symbols),
        "symbol": ",".join(data.symbols),
        "timeframe": data.timeframe,
        "exchange": data.exchange,
        "split": split,
        "start_ts_ms": int(ro.ts_ms[0]),
        "end_ts_ms": int(ro.ts_ms[-1]),
        "n_decisions": ro.n_steps,
        "n_bars": len(data),
        "periods_per_year": ro.periods_per_year,
        "market_fingerprint": _fingerprint(data),
        "data_fingerprint": data.meta.get("data_fingerprint"),
        "normaliser_fingerprint": data.meta.get("normaliser_fingerprint"),
        "feature_spec_fingerprint": data.meta.get("feature_spec_fingerprint"),
        "data_description": described,
        "short_sample": short,
        "delay_bars": 1,
    }


def _fingerprint(data: PortfolioData) -> str:
    """sha256 of the bars backtested (times, OHLCV and tradable flags of every asset)."""
    import hashlib

    h = hashlib.sha256()
    for arr in (data.ts_ms, data.open, data.high, data.low, data.close, data.volume, data.tradable):
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


__all__ = [
    "PORTFOLIO_FILL_COLUMNS",
    "PortfolioBacktestResult",
    "is_portfolio_strategy",
    "portfolio_fills",
    "simulate_portfolio_strategy",
]
