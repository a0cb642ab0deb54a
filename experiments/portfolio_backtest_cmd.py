"""``coinrl backtest BUNDLE`` on a portfolio bundle: what :func:`run_portfolio_backtest` does.

:func:`~coinrl.experiments.backtest_cmd.run_backtest` hands a portfolio agent here: its data is
rebuilt from the bundle's own ``data:`` section with its own feature spec and normalisers
(:func:`~coinrl.agents.train_portfolio.portfolio_data_for`, never refitted), the split is
backtested beside the portfolio baselines
(:func:`~coinrl.agents.portfolio_backtest.simulate_portfolio_strategy`) and the report folder
is written as for one asset (one folder per bundle, split and cost overrides; the identity
recorded inside is checked before it is replaced).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from coinrl.agents.bundle import CONFIG_FILE
from coinrl.agents.portfolio_backtest import PortfolioBacktestResult, simulate_portfolio_strategy
from coinrl.agents.report import METRICS_FILE, save_backtest_results
from coinrl.envs.risk import RiskConfig
from coinrl.pipeline.errors import ConfigError

from .config import experiment_config_from
from .report_dir import backtest_folder_name, bundle_id, check_replace
from .stages import ProgressFn, notify

logger = logging.getLogger(__name__)


def run_portfolio_backtest(
    agent: Any,
    bundle: Path,
    split: str = "test",
    out_dir: Path = Path("runs"),
    *,
    data: Path | None = None,
    n_trials: int = 1,
    track: bool = True,
    progress: ProgressFn | None = None,
    cost_overrides: Sequence[str] = (),
    cost_sweep: bool = False,
    force: bool = False,
    overwrite: bool = False,
    risk: RiskConfig | None = None,
) -> tuple[Path, PortfolioBacktestResult]:
    """Backtest a loaded portfolio agent from ``bundle`` (see the module doc).

    Args:
        agent: the portfolio :class:`~coinrl.agents.agent.TrainedAgent` loaded from ``bundle``.
        bundle: the bundle folder or zip (for the report's identity and config path).
        split: ``train``, ``validation``, ``test`` or ``full``.
        out_dir: parent of the report folder.
        data: must be None (a portfolio's candles are the bundle's ``data.sources``).
        n_trials: configurations tried before this bundle (deflates its Sharpe ratio).
        track: log the report to W&B with the bundle's tracking settings.
        progress: stage callback (``load``, ``backtest``, ``report``).
        cost_overrides: ``env.taker_fee_rate=0.0005`` style overrides of execution costs.
        cost_sweep: also re-run at 0.5x, 1x, 2x and 4x fees and slippage (per-asset costs
            too); the report shows where the edge over each deterministic baseline vanishes.
        force: run on candles of another timeframe than the bundle's.
        overwrite: replace a report folder that holds another backtest.
        risk: the portfolio risk limits (:func:`load_risk_config`), applied to every decision
            as in paper and live trading; the baselines run without them.

    Returns:
        ``(report folder, result)``.

    Raises:
        ConfigError: ``--data`` on a portfolio, a bundle without
            a data section, another backtest's folder without ``overwrite``.
    """
    from coinrl.agents.costs import apply_cost_overrides, parse_cost_overrides, sweep_to_dict
    from coinrl.agents.costs import cost_sweep as sweep_costs
    from coinrl.agents.stats import data_label
    from coinrl.agents.train_portfolio import portfolio_data_for, split_of

    if data is not None:
        raise ConfigError("--data is not available for a portfolio bundle yet; a portfolio's candles "
                          "are its config's data.sources (edit them in a copy of the config and "
                          "retrain, or backtest a split of the same files)")
    costs = parse_cost_overrides(cost_overrides)
    env_cfg = apply_cost_overrides(agent.env_config, costs)
    raw = dict(agent.experiment_config)
    if "data" not in raw:
        raise ConfigError(f"{bundle} has no data section in its config; a portfolio bundle needs "
                          "its data.sources to rebuild its data")
    cfg = experiment_config_from(raw, source=f"{bundle}/{CONFIG_FILE}")
    notify(progress, "load", 0, 1)
    prepared = portfolio_data_for(agent)
    part = split_of(prepared, split)
    part.meta["split"] = split
    matches = bool(part.meta.get("data_matches_agent", False))
    folder = Path(out_dir) / backtest_folder_name(cfg.name, split, None, costs)
    identity = {
        "bundle_id": bundle_id(bundle),
        "data_fingerprint": prepared.data_fingerprint,
        "split": split,
        "cost_overrides": costs,
        "risk_config": None if risk is None else risk.model_dump(mode="json"),
    }
    check_replace(folder, identity, overwrite, summary_file=METRICS_FILE, kind="backtest")
    notify(progress, "load", 1, 1)
    notify(progress, "backtest", 0, 1)
    described = data_label(split, same_data=matches)

    def run(env: Any) -> PortfolioBacktestResult:
        return simulate_portfolio_strategy(
            agent, part, env_config=env, split=split, seed=cfg.seed, n_trials=n_trials,
            force=force, data_description=described, risk=risk,
        )

    res = run(env_cfg)
    res.meta.update(identity)
    res.meta["data_matches_bundle"] = matches
    res.meta["data_fingerprint"] = prepared.data_fingerprint
    res.meta["sources"] = list(getattr(cfg.data, "sources", ()))
    if costs:
        res.meta["cost_overrides_note"] = (
            "execution costs overridden at backtest time (the bundle trained with others): "
            + ", ".join(f"env.{k}={v}" for k, v in costs.items()))
        res.warnings.append(res.meta["cost_overrides_note"])
    if cost_sweep:
        res.meta["cost_sweep"] = sweep_to_dict(sweep_costs(run, env_cfg))
    notify(progress, "backtest", 1, 1)
    notify(progress, "report", 0, 1)
    save_backtest_results(res, folder, tracking=cfg.tracking if track else None, run_name=folder.name)
    notify(progress, "report", 1, 1)
    logger.info("portfolio backtest bundle=%s split=%s folder=%s", bundle, split, folder)
    return folder, res


def load_risk_config(path: Path, symbols: Sequence[str] | None = None) -> RiskConfig:
    """The ``--risk`` file of a backtest, of the bundle's kind.

    One symbol (``symbols`` None): a :class:`~coinrl.envs.risk.RiskConfig`, as ``coinrl
    paper/live --risk``. A portfolio (``symbols``: its assets): a
    :class:`~coinrl.envs.risk_portfolio.PortfolioRiskConfig` (a plain RiskConfig file is one:
    its fields apply per account and per asset; ``max_net_leverage``, ``max_weight`` and
    ``asset_limits`` are the portfolio's own).

    Raises:
        ConfigError: an unknown key (named), a portfolio file (with portfolio-only keys) for a
            one-symbol bundle, ``asset_limits`` naming a symbol the portfolio does not trade.
    """
    from coinrl.agents.portfolio_risk_rollout import portfolio_risk_config
    from coinrl.envs.risk_portfolio import PortfolioRiskConfig
    from coinrl.pipeline.config import load_config, load_yaml

    if symbols is not None:
        return portfolio_risk_config(load_config(PortfolioRiskConfig, path), tuple(symbols))
    raw = load_yaml(path)
    only = sorted(set(raw) & (set(PortfolioRiskConfig.model_fields) - set(RiskConfig.model_fields))) \
        if isinstance(raw, Mapping) else []
    if only:
        raise ConfigError(f"{path} is a portfolio risk config ({', '.join(only)}) but the bundle trades "
                          "one symbol; drop those keys (max_leverage, position and order caps apply "
                          "to one symbol as they are)")
    return load_config(RiskConfig, path)


__all__ = ["load_risk_config", "run_portfolio_backtest"]
