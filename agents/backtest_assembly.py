"""A finished run made into a judged :class:`~coinrl.agents.backtest_result.BacktestResult`.

:func:`assemble_result` adds to a run what the report needs: its fills and metrics, what the
data was (:func:`backtest_meta`), the small-sample rule (annualise only with at least a quarter
of a year of bars), the baselines on the same bars and costs, a verdict against each (the
random baseline judged against all its draws), the Sharpe ratio's probabilistic and deflated
versions and the look-ahead warning. Importable from :mod:`coinrl.agents.backtest` too.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from coinrl.envs.config import EnvConfig
from coinrl.pipeline.dataset import MarketData

from .backtest_data import market_fingerprint
from .backtest_result import BacktestResult
from .baselines import MA_CROSSOVER_BARS, play_baselines
from .metrics import can_annualise, simple_returns
from .rollout import Rollout, evaluation_config
from .stats import data_label, lookahead_warning, sharpe_stats, verdict_from_returns


def backtest_meta(data: MarketData, ro: Rollout, cfg: EnvConfig, kind: str, split: str) -> dict[str, Any]:
    """What a result records about its run: kind, symbol, timeframe, split, time range (UTC ms),
    decisions, bars, fingerprints of the bars, data, normaliser and feature spec, fold, delay."""
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
    res = BacktestResult.from_run(name, rollout, cfg)
    res.meta = backtest_meta(data, rollout, cfg, kind, split)
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
            res.baselines[bname] = BacktestResult.from_run(bname, bro, cfg, draws)
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


__all__ = ["assemble_result", "backtest_meta"]
