"""``coinrl walkforward`` on a portfolio config: retrain per fold and seed, judge each fold's test rows.

:func:`run_portfolio_walkforward` is what :func:`~coinrl.experiments.backtest_cmd.run_walkforward`
hands a portfolio config (``data: {sources: [...]}`` or ``symbols:``) to. It runs
:func:`~coinrl.agents.walkforward_portfolio.walk_forward_portfolio` (normalisers fitted on each
fold's train rows only; every fold's test rows backtested beside the portfolio baselines: cash,
equal-weight buy-and-hold, constant-rebalanced 1/N, each asset held, turnover-matched random
weights, on the same books and costs) and writes the results folder
``<out>/<name>-walkforward`` as the one-market command does: ``walkforward.json`` (summary means
with bootstrap intervals, beat shares, every run's metrics, the config, the identity in ``meta``
and each fold's row and time spans in ``meta.fold_spans``) and a
self-contained ``report.html``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from coinrl.agents.walkforward_portfolio import KIND, portfolio_walkforward_html
from coinrl.agents.walkforward_report import REPORT_FILE, SUMMARY_FILE
from coinrl.pipeline.errors import ConfigError

from .report_dir import check_replace, json_digest, walkforward_identity
from .stages import ProgressFn, notify

logger = logging.getLogger(__name__)



def run_portfolio_walkforward(
    config: Any,
    folds: int,
    seed_list: Sequence[int],
    out_dir: Path,
    *,
    n_trials: int | None = None,
    embargo_bars: int | None = None,
    progress: ProgressFn | None = None,
    overwrite: bool = False,
) -> tuple[Path, Any]:
    """Walk-forward a portfolio experiment config and write its results folder.

    Args:
        config: a loaded portfolio experiment config (``config.is_portfolio``).
        folds: walk-forward folds (test blocks tiling the end of the data).
        seed_list: training seeds per fold.
        out_dir: parent of the results folder ``<name>-walkforward``.
        n_trials: configurations tried in total (recorded in the identity; default the seeds).
        embargo_bars: bars between train, validation and test; default the larger of the
            config's ``data.split.embargo_bars`` and ``env.window``.
        progress: stage callback (``load``, ``train`` per run, ``report``).
        overwrite: replace a results folder that holds another walk-forward.

    Returns:
        ``(results folder, PortfolioWalkForwardResult)`` (typed ``Any`` so that
        :func:`~coinrl.experiments.backtest_cmd.run_walkforward` hands it back as it is: the
        result has the ``n_folds``, ``seeds``, ``summary``, ``verdict_lines`` and ``warnings``
        its console table reads).

    Raises:
        ConfigError: no folds or seeds, a results folder of another walk-forward without
            ``overwrite``.
    """
    from coinrl.agents.report import atomic_folder, report_versions, write_json
    from coinrl.agents.walkforward_portfolio import walk_forward_portfolio
    from coinrl.pipeline.source import load_portfolio_dataset

    if folds < 1:
        raise ConfigError(f"--folds must be >= 1, got {folds}")
    if not seed_list:
        raise ConfigError("--seeds must be >= 1")
    embargo = max(config.data.split.embargo_bars, config.env.window) if embargo_bars is None else int(embargo_bars)
    split = config.data.split.model_copy(update={"walk_forward_folds": folds, "embargo_bars": embargo})
    cfg = config.model_copy(update={"data": config.data.model_copy(update={"split": split})})
    notify(progress, "load", 0, 1)
    prepared = load_portfolio_dataset(cfg.data, fold=0)  # checks the data before any training
    fingerprint = json_digest(prepared.asset_fingerprints)
    folder = Path(out_dir) / f"{cfg.name}-walkforward"
    identity = walkforward_identity(cfg.to_dict(), folds, seed_list, fingerprint, n_trials)
    check_replace(folder, identity, overwrite, summary_file=SUMMARY_FILE, kind="walk-forward")
    notify(progress, "load", 1, 1)
    train = cfg.resolved_train.model_copy(update={"progress_bar": False})
    result = walk_forward_portfolio(cfg.data, train, cfg.env, seeds=list(seed_list),
                                    experiment_config=cfg.to_dict(), progress=progress)
    result.meta["fold_spans"] = result.meta.pop("folds")  # "folds" is the identity's fold count
    result.meta.update(identity)
    notify(progress, "report", 0, 1)
    summary = {**result.to_dict(), "kind": KIND, "n_folds": folds, "config": cfg.to_dict(),
               "versions": report_versions()}

    def build(d: Path) -> None:
        write_json(d / SUMMARY_FILE, summary)
        (d / REPORT_FILE).write_text(portfolio_walkforward_html(summary), encoding="utf-8")

    atomic_folder(folder, build)
    notify(progress, "report", 1, 1)
    logger.info("portfolio walk-forward written to %s", folder)
    return folder, result


__all__ = ["KIND", "run_portfolio_walkforward"]
