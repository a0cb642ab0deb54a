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

With ``risk=RiskConfig(...)`` every kind runs with the risk layer of paper and live trading
between its decisions and the books (:mod:`.backtest_risk`: the same
:class:`~coinrl.envs.risk.RiskGuard`, so a breach trims or blocks the same order as in a paper
session); what the layer did is in :attr:`BacktestResult.risk` and ``meta["risk"]``.

The :class:`BacktestResult` holds the equity curve, positions, every fill (time, side,
quantity, price, fee, slippage), the metrics (:func:`evaluate_strategy_performance`), the
baselines on the same data and costs (buy-and-hold, flat, a moving-average crossover and a
random policy matched on turnover), a verdict per baseline (:mod:`coinrl.agents.stats`) and the
Sharpe ratio's probabilistic and deflated versions.

:func:`simulate_many` runs several (strategy, split) pairs at once (walk-forward folds and
seeds): one batched env, one network call per model and step.

The work is split by job: :mod:`.backtest_data` (bars and strategies in),
:mod:`.backtest_assembly` (baselines, verdicts, statistics), :mod:`.backtest_result` (fills,
metrics, :class:`BacktestResult`); every public name is importable from here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

import numpy as np
import numpy.typing as npt

from coinrl.envs.config import EnvConfig, PortfolioEnvConfig
from coinrl.envs.risk import RiskConfig
from coinrl.pipeline.dataset import MarketData, PortfolioData
from coinrl.pipeline.errors import ConfigError, DataError
from coinrl.pipeline.portfolio import PreparedPortfolio
from coinrl.pipeline.source import PortfolioDataConfig

from .agent import TrainedAgent
from .backtest_assembly import assemble_result
from .backtest_data import (
    SIGNAL_ENV,
    agent_market_data,
    check_timeframe,
    is_signal,
    market_data_from_candles,
    market_fingerprint,
    resolve_strategy,
    signal_market_data,
    signal_targets,
)
from .backtest_result import (
    FILL_COLUMNS,
    BacktestResult,
    evaluate_strategy_performance,
    fills_from_rollout,
)
from .backtest_risk import RiskRecord, policy_act, rollout_with_risk
from .baselines import MA_CROSSOVER_BARS
from .evaluate import directional_quality, policy_metrics
from .portfolio_backtest import (
    PortfolioBacktestResult,
    is_portfolio_strategy,
    simulate_portfolio_strategy,
)
from .portfolio_baselines import DEFAULT_N_RANDOM
from .rollout import (
    Rollout,
    evaluation_config,
    rollout_batch,
    rollout_policy,
    simulate_targets,
    stacked_torch_policy,
    targets_to_actions,
    torch_policy,
)

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

SINGLE_N_RANDOM = 5
"""Draws of the single-asset ``random`` baseline when ``n_random`` is not given."""


@overload
def simulate_trading_strategy(
    model: Any,
    historical_data: PortfolioData | PreparedPortfolio | PortfolioDataConfig | None,
    *,
    env_config: EnvConfig | PortfolioEnvConfig | dict[str, Any] | None = ...,
    name: str | None = ...,
    split: str | None = ...,
    baselines: bool = ...,
    n_random: int | None = ...,
    seed: int = ...,
    ma_crossover: tuple[int, int] | None = ...,
    n_trials: int = ...,
    confidence: float = ...,
    force: bool = ...,
    data_description: str | None = ...,
    risk: RiskConfig | None = ...,
) -> PortfolioBacktestResult: ...


@overload
def simulate_trading_strategy(
    model: Any,
    historical_data: Any,
    *,
    env_config: PortfolioEnvConfig,
    name: str | None = ...,
    split: str | None = ...,
    baselines: bool = ...,
    n_random: int | None = ...,
    seed: int = ...,
    ma_crossover: tuple[int, int] | None = ...,
    n_trials: int = ...,
    confidence: float = ...,
    force: bool = ...,
    data_description: str | None = ...,
    risk: RiskConfig | None = ...,
) -> PortfolioBacktestResult: ...


@overload
def simulate_trading_strategy(
    model: TrainedAgent | str | Path | npt.ArrayLike | Callable[[Any], Any] | Any,
    historical_data: MarketData | pd.DataFrame | str | Path,
    *,
    env_config: EnvConfig | dict[str, Any] | None = ...,
    name: str | None = ...,
    split: str | None = ...,
    baselines: bool = ...,
    n_random: int | None = ...,
    seed: int = ...,
    ma_crossover: tuple[int, int] | None = ...,
    n_trials: int = ...,
    confidence: float = ...,
    force: bool = ...,
    data_description: str | None = ...,
    risk: RiskConfig | None = ...,
) -> BacktestResult: ...


def simulate_trading_strategy(
    model: TrainedAgent | str | Path | npt.ArrayLike | Callable[[Any], Any] | Any,
    historical_data: MarketData | PortfolioData | PreparedPortfolio | PortfolioDataConfig | pd.DataFrame | str | Path | None,
    *,
    env_config: EnvConfig | PortfolioEnvConfig | dict[str, Any] | None = None,
    name: str | None = None,
    split: str | None = None,
    baselines: bool = True,
    n_random: int | None = None,
    seed: int = 0,
    ma_crossover: tuple[int, int] | None = MA_CROSSOVER_BARS,
    n_trials: int = 1,
    confidence: float = 0.95,
    force: bool = False,
    data_description: str | None = None,
    risk: RiskConfig | None = None,
) -> BacktestResult | PortfolioBacktestResult:
    """Backtest one strategy over held-out data through the training env's books.

    A portfolio strategy (a portfolio agent or bundle, portfolio data or its config, a
    :class:`~coinrl.envs.config.PortfolioEnvConfig`: :func:`~coinrl.agents.portfolio_backtest.
    is_portfolio_strategy`) is handed to :func:`~coinrl.agents.portfolio_backtest.
    simulate_portfolio_strategy` with every argument, and its
    :class:`~coinrl.agents.portfolio_backtest.PortfolioBacktestResult` returned; a ``(T, A)``
    weights signal needs portfolio data or a portfolio env config to be recognised.

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
        n_random: random-policy draws averaged in the ``random`` baseline (None: the
            default of the kind, 5 for one asset and
            :data:`~coinrl.agents.portfolio_baselines.DEFAULT_N_RANDOM` for a portfolio, the
            same as :func:`~coinrl.agents.portfolio_backtest.simulate_portfolio_strategy`).
        seed: seed of the random baseline and of the bootstrap.
        ma_crossover: ``(fast_bars, slow_bars)`` of the crossover baseline; None leaves it out.
        n_trials: configurations tried before this one (for the deflated Sharpe ratio).
        confidence: level of the verdicts' confidence intervals.
        force: run an agent on bars of another timeframe than it was trained on (refused
            otherwise, see :func:`check_timeframe`); the report then states it.
        data_description: what the data is, for the verdicts (default from ``split``:
            ``test`` is "out of sample", ``full`` is "in-sample (full data)", ...).
        risk: the risk limits of paper and live trading, applied to every decision (see
            :mod:`coinrl.agents.backtest_risk`); None trades the strategy's targets unchanged.
            The baselines run without it (plain benchmarks on the same data and costs).

    Returns:
        The :class:`BacktestResult` (with ``risk``: its :class:`~coinrl.agents.backtest_risk.
        RiskRecord`, how many decisions were trimmed, blocked or killed and when).

    Raises:
        ConfigError: a bare policy without ``env_config``; a signal a discrete env cannot
            express; an agent on another timeframe without ``force``; ``risk`` with
            ``delay_bars > 1``.
        DataError: data too short for the window, mismatched features, bad signal values.

    Example:
        >>> res = simulate_trading_strategy("runs/ppo/bundle", prepared.test)  # doctest: +SKIP
        >>> print(res.verdict_lines()[0])  # doctest: +SKIP
    """
    model = resolve_strategy(model)
    if is_portfolio_strategy(model, historical_data, env_config):
        return simulate_portfolio_strategy(
            model, historical_data, env_config=env_config, name=name, split=split,
            baselines=baselines, n_random=DEFAULT_N_RANDOM if n_random is None else n_random,
            seed=seed, n_trials=n_trials, confidence=confidence, force=force,
            data_description=data_description, risk=risk,
        )
    if n_random is None:
        n_random = SINGLE_N_RANDOM
    config: dict[str, Any]
    forced: str | None = None
    record: RiskRecord | None = None
    ro: Rollout
    if isinstance(model, TrainedAgent):
        cfg = evaluation_config(env_config or model.env_config)
        data = agent_market_data(model, historical_data, split or "backtest")
        forced = check_timeframe(model, data, force=force)
        fn = torch_policy(model.model)
        if risk is not None:
            ro, record = rollout_with_risk(policy_act(fn if fn is not None else model.model), data, cfg, risk)
        else:
            ro = rollout_policy(fn if fn is not None else model.model, data, cfg, deterministic=True)
        kind = "agent"
        config = dict(model.experiment_config) or {
            "env": model.env_config.model_dump(mode="json"),
            "train": model.train_config.model_dump(mode="json"),
        }
        config = {**config, "bundle": model.info.get("bundle")}
    elif is_signal(model):
        cfg = evaluation_config(env_config if env_config is not None else SIGNAL_ENV)
        data = signal_market_data(historical_data, split or "backtest")
        targets = signal_targets(model, data, cfg)
        if risk is not None:
            acts = targets_to_actions(targets, cfg)
            ro, record = rollout_with_risk(lambda obs, k: acts[k], data, cfg, risk)
        else:
            ro = simulate_targets(data, cfg, targets)
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
        if risk is not None:
            ro, record = rollout_with_risk(policy_act(fn if fn is not None else model), data, cfg, risk)
        else:
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
    if record is not None:
        _attach_risk(res, record)
    if kind != "signal":
        res.policy = {**policy_metrics(ro, cfg), **directional_quality(ro, cfg)}
    logger.info(
        "backtest kind=%s symbol=%s split=%s bars=%d total_return=%.4f sharpe=%.3f fills=%d",
        kind, data.symbol, split_name, ro.n_steps, res.metrics["total_return"],
        res.metrics["sharpe"], len(res.fills),
    )
    return res


def _attach_risk(res: BacktestResult, record: RiskRecord) -> None:
    """Put the risk layer's record on a result: ``res.risk``, a summary in ``meta["risk"]``
    and a warning when the kill-switch fired."""
    res.risk = record
    summary = record.to_dict()
    del summary["events"]  # the full list stays on res.risk (event_rows)
    res.meta["risk"] = summary
    if record.killed_at is not None:
        rules = ", ".join(e.rule for k, e in record.events if k == record.killed_at)
        res.warnings.append(
            f"RISK KILL-SWITCH fired at decision {record.killed_at} "
            f"(bar ts_ms={int(record.ts_ms[record.killed_at])}: {rules}); the account held its "
            "position to the end of the split, as a session with flatten_on_kill=False"
        )


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
    n_random: int = SINGLE_N_RANDOM,
    seed: int = 0,
    ma_crossover: tuple[int, int] | None = MA_CROSSOVER_BARS,
    n_trials: int = 1,
    confidence: float = 0.95,
    risk: RiskConfig | None = None,
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
        baselines, n_random, seed, ma_crossover, n_trials, confidence, risk: as for
            :func:`simulate_trading_strategy` (with ``risk`` the pairs run one after the other
            through the risk layer, each exactly as :func:`simulate_trading_strategy`).

    Returns:
        One :class:`BacktestResult` per pair, in order.

    Raises:
        ConfigError: agents with different env configs, or a recurrent policy.
    """
    if len(models) != len(datas) or not models:
        raise ConfigError(f"simulate_many needs as many models as datas (got {len(models)}, {len(datas)})")
    if risk is not None:
        return [
            simulate_trading_strategy(
                m, d, env_config=env_config, name=names[i] if names else "agent",
                baselines=baselines, n_random=n_random, seed=seed, ma_crossover=ma_crossover,
                n_trials=n_trials, confidence=confidence, risk=risk,
            )
            for i, (m, d) in enumerate(zip(models, datas, strict=True))
        ]
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
    datas_checked = [agent_market_data(m, d, "backtest") for m, d in zip(models, datas, strict=True)]
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
    "RiskRecord",
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
