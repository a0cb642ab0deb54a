"""What a backtest produced: its fills, its metrics and the :class:`BacktestResult` holding them.

:func:`fills_from_rollout` reads every fill (time, side, quantity, price, fee, slippage) off
the books of a :class:`~coinrl.agents.rollout.Rollout`; :func:`evaluate_strategy_performance`
is every performance figure of one run; :class:`BacktestResult` is one strategy over one split
with its baselines, verdicts and statistics (filled in by
:func:`~coinrl.agents.backtest_assembly.assemble_result`). Everything here is importable from
:mod:`coinrl.agents.backtest` too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from coinrl.envs.config import EnvConfig
from coinrl.pipeline.errors import DataError

from .metrics import json_safe, simple_returns
from .rollout import Rollout
from .stats import Verdict

if TYPE_CHECKING:
    import pandas as pd

    from .backtest_risk import RiskRecord

F64 = npt.NDArray[np.float64]

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
    ``ref_price_quote`` is the open; notional, fee and slippage are what the kernel charged:
    the steps of the books' running totals (``turnover_cum_quote``, ``fees_cum_quote``,
    ``slippage_cum_quote``) at that mark, so there is no second copy of the cost rules here;
    ``price_quote`` is the fill price with slippage (``ref + slippage / qty`` for a buy,
    ``ref - slippage / qty`` for a sell). A liquidation fill's reference price is the
    liquidation price (its notional over its quantity), without slippage; a bar that
    rebalanced and was then liquidated shows as one liquidation fill of the net quantity.

    Returns:
        A DataFrame with :data:`FILL_COLUMNS`, one row per fill, in time order.
    """
    import pandas as pd

    fees_c, slip_c, turn_c = rollout.fees_cum_quote, rollout.slippage_cum_quote, rollout.turnover_cum_quote
    if fees_c is None or slip_c is None or turn_c is None or rollout.open_quote is None:
        raise DataError("this rollout has no running cost totals; rerun it with coinrl's rollout")
    pos = rollout.position_base
    dq_all = np.diff(pos)
    marks = np.flatnonzero(dq_all != 0.0) + 1
    d = dq_all[marks - 1]
    qty = np.abs(d)
    ref = rollout.open_quote[marks].astype(np.float64)
    notional = turn_c[marks] - turn_c[marks - 1]
    fee = fees_c[marks] - fees_c[marks - 1]
    slip = slip_c[marks] - slip_c[marks - 1]
    liq = np.zeros(len(marks), dtype=bool)
    if rollout.liquidation_mark is not None:
        liq = marks == rollout.liquidation_mark
        if liq.any():
            slip[liq] = 0.0  # priced at the liquidation price, without slippage
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
        risk: what the risk layer did (a backtest with ``risk=``; None without one).
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
    risk: RiskRecord | None = None

    @classmethod
    def from_run(
        cls, name: str, rollout: Rollout, env_config: EnvConfig, draws: dict[str, float] | None = None
    ) -> BacktestResult:
        """The result of a finished run: its fills and metrics (no baselines yet).

        Args:
            name: the strategy's name.
            rollout: the run.
            env_config: the env config it ran under.
            draws: for the random baseline, the mean over its draws and their spread
                (``draws_*``), written over the first draw's metrics.
        """
        res = cls(name=name, rollout=rollout, fills=fills_from_rollout(rollout, env_config), env_config=env_config)
        res.metrics = evaluate_strategy_performance(res)
        if draws is not None:
            res.metrics.update(draws)
        return res

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
        """JSON-safe summary (what ``metrics.json`` holds; with a risk layer, its summary in
        ``meta.risk`` and every rule that acted, with its decision time, in ``risk_events``)."""
        extra = {} if self.risk is None else {"risk_events": self.risk.event_rows()}
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
                **extra,
            })
        )


__all__ = [
    "FILL_COLUMNS",
    "BacktestResult",
    "evaluate_strategy_performance",
    "fills_from_rollout",
]
