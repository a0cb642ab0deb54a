"""What ``coinrl backtest``, ``coinrl walkforward``, ``coinrl report`` and ``coinrl quickstart`` do.

The CLI only parses arguments, shows progress and prints; these functions do the work:

* :func:`run_backtest`: bundle → its data config (or another candle file), its OWN feature
  spec and normaliser → the split → :func:`~coinrl.agents.backtest.simulate_trading_strategy`
  beside the baselines → report folder (and W&B run).
* :func:`run_walkforward`: experiment YAML → ``K`` walk-forward folds (embargo at least the env
  window) → ``S`` seeds per fold, each trained from scratch → batched test backtests → summary
  with confidence intervals, verdicts and the deflated Sharpe ratio → results folder.
* :func:`run_report`: redraw the ``report.html`` of a backtest or walk-forward folder.
* :func:`~coinrl.experiments.quickstart_cmd.run_quickstart`: train PPO on the packaged hourly
  BTC/USD sample with a small budget, backtest it on the held-out test split beside the
  baselines, write the report (offline).

Where results folders go and when one may be replaced is :mod:`.report_dir`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from coinrl.agents.backtest import BacktestResult, simulate_trading_strategy
from coinrl.agents.bundle import CONFIG_FILE, load_model
from coinrl.agents.portfolio_backtest import PortfolioBacktestResult
from coinrl.agents.report import METRICS_FILE, render_report, save_backtest_results
from coinrl.agents.walkforward import (
    SUMMARY_FILE,
    WalkForwardResult,
    render_walk_forward_report,
    save_walk_forward,
    summary_means,
    walk_forward,
)
from coinrl.pipeline.errors import ConfigError, DataError

from .config import ExperimentConfig, experiment_config_from, load_experiment_config
from .quickstart_cmd import QUICKSTART_TIMESTEPS, quickstart_config, run_quickstart
from .report_dir import backtest_folder_name, bundle_id, check_replace, walkforward_identity
from .stages import ProgressFn, notify

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test", "full")

def _split_data(agent: Any, cfg: ExperimentConfig, split: str) -> Any:
    from coinrl.pipeline.source import load_candles
    from coinrl.pipeline.splits import candles_fingerprint, market_data_from_spec, split_bounds

    candles = load_candles(cfg.data)
    full = market_data_from_spec(
        candles, agent.feature_spec, agent.normaliser, split="full",
        meta={"data_fingerprint": candles_fingerprint(candles), "source": cfg.data.source},
    )
    if split == "full":
        return full, candles
    rows = split_bounds(len(full), cfg.data.split).parts()[split]
    if len(rows) == 0:
        raise DataError(f"the {split} split of {cfg.data.source} is empty; pick another split")
    md = full.slice(rows.start, rows.stop)
    md.meta["split"] = split
    return md, candles


def run_backtest(
    bundle: Path,
    data: Path | None = None,
    split: str = "test",
    out_dir: Path = Path("runs"),
    *,
    n_trials: int = 1,
    track: bool = True,
    progress: ProgressFn | None = None,
    cost_overrides: Sequence[str] = (),
    cost_sweep: bool = False,
    force: bool = False,
    overwrite: bool = False,
    risk_path: Path | None = None,
) -> tuple[Path, BacktestResult | PortfolioBacktestResult]:
    """``coinrl backtest BUNDLE [env.cost=value ...] [--data FILE] [--split test] [--out DIR]``.

    A portfolio bundle is backtested by
    :func:`~coinrl.experiments.portfolio_backtest_cmd.run_portfolio_backtest` (its data rebuilt
    from its own ``data.sources``, the portfolio baselines, the portfolio report page).

    Args:
        bundle: bundle folder or zip (from ``coinrl train``).
        data: candle file to backtest on instead of the bundle's own data source (it gets the
            bundle's features and normaliser; ``split`` then applies to it: use ``full`` for
            new data the agent never saw).
        split: ``train``, ``validation``, ``test`` (default) or ``full``.
        out_dir: parent of the report folder (:func:`backtest_folder_name`: one per bundle,
            data, split and cost overrides).
        n_trials: configurations tried before this bundle (deflates its Sharpe ratio).
        track: log the report to W&B with the bundle's tracking settings (offline by default).
        progress: stage callback (``load``, ``backtest``, ``report``).
        cost_overrides: ``env.taker_fee_rate=0.0005`` style overrides of execution costs only
            (:data:`~coinrl.agents.costs.COST_KEYS`), recorded in the report.
        cost_sweep: also re-run at 0.5x, 1x, 2x and 4x fees and slippage; the report shows
            where the edge over each baseline vanishes.
        force: run on candles of another timeframe than the bundle's (refused otherwise); the
            report says it was forced.
        overwrite: replace a report folder that holds another backtest (refused otherwise).
        risk_path: a YAML file of :class:`~coinrl.envs.risk.RiskConfig` (what ``coinrl
            paper/live --risk`` take), or for a portfolio bundle of
            :class:`~coinrl.envs.risk_portfolio.PortfolioRiskConfig` (see
            :func:`load_risk_config`): every decision passes the risk layer of paper and live
            trading (recorded in the report's ``meta.risk``).

    Returns:
        ``(report folder, result)``.

    Raises:
        ConfigError: unknown split, a bundle without a data section (pass ``data``), a
            timeframe mismatch without ``force``, an override of something other than costs,
            a report folder of another backtest without ``overwrite``.
        DataError: a tampered bundle, or data too short for the split.
    """
    from coinrl.agents.costs import apply_cost_overrides, parse_cost_overrides, sweep_to_dict
    from coinrl.agents.costs import cost_sweep as sweep_costs
    from coinrl.agents.stats import data_label

    if split not in SPLITS:
        raise ConfigError(f"split {split!r} is not one of {', '.join(SPLITS)}")
    costs = parse_cost_overrides(cost_overrides)
    notify(progress, "load", 0, 1)
    agent = load_model(bundle)
    portfolio = getattr(agent, "portfolio", None)
    from .portfolio_backtest_cmd import load_risk_config, run_portfolio_backtest

    risk = None if risk_path is None else load_risk_config(
        risk_path, None if portfolio is None else tuple(portfolio.symbols))
    if portfolio is not None:  # a portfolio bundle: its own command
        return run_portfolio_backtest(
            agent, bundle, split, out_dir, data=data, n_trials=n_trials, track=track,
            progress=progress, cost_overrides=cost_overrides, cost_sweep=cost_sweep, force=force,
            overwrite=overwrite, risk=risk,
        )
    env_cfg = apply_cost_overrides(agent.env_config, costs)
    raw = dict(agent.experiment_config)
    if "data" not in raw and data is None:
        raise ConfigError(
            f"{bundle} has no data section in its config; pass --data with a candle file"
        )
    if data is not None:
        raw = {**raw, "data": {**dict(raw.get("data", {})), "source": str(data)}}
    cfg = experiment_config_from(raw, source=f"{bundle}/{CONFIG_FILE}")
    md, candles = _split_data(agent, cfg, split)
    matches = md.meta.get("data_fingerprint") == agent.data_info.get("data_fingerprint")
    if not matches:
        logger.warning(
            "backtest: the candles of %s differ from those the bundle was trained on; the %s "
            "split may overlap its training data unless the candles are all new", cfg.data.source, split,
        )
    folder = Path(out_dir) / backtest_folder_name(cfg.name, split, data, costs)
    identity = {
        "bundle_id": bundle_id(bundle),
        "data_fingerprint": md.meta.get("data_fingerprint"),
        "split": split,
        "cost_overrides": costs,
        # None without --risk: equal to an older folder's missing key, unequal to a risk run's
        "risk_config": None if risk is None else risk.model_dump(mode="json"),
    }
    check_replace(folder, identity, overwrite, summary_file=METRICS_FILE, kind="backtest")
    notify(progress, "load", 1, 1)
    notify(progress, "backtest", 0, 1)
    described = data_label(split, same_data=matches)

    def run(env: Any) -> BacktestResult:
        return simulate_trading_strategy(
            agent, md, env_config=env, split=split, seed=cfg.seed, n_trials=n_trials,
            force=force, data_description=described, risk=risk,
        )

    res = run(env_cfg)
    res.meta.update(identity)
    res.meta["data_matches_bundle"] = matches
    res.meta["source"] = cfg.data.source
    if costs:
        res.meta["cost_overrides_note"] = (
            "execution costs overridden at backtest time (the bundle trained with others): "
            + ", ".join(f"env.{k}={v}" for k, v in costs.items())
        )
    if cost_sweep:
        res.meta["cost_sweep"] = sweep_to_dict(sweep_costs(run, env_cfg))
    notify(progress, "backtest", 1, 1)
    notify(progress, "report", 0, 1)
    tracking = cfg.tracking if track else None
    save_backtest_results(res, folder, tracking=tracking, run_name=folder.name)
    notify(progress, "report", 1, 1)
    return folder, res


def run_walkforward(
    config_path: Path,
    folds: int = 4,
    seeds: int | Sequence[int] = 3,
    overrides: Sequence[str] = (),
    out_dir: Path = Path("runs"),
    *,
    n_trials: int | None = None,
    embargo_bars: int | None = None,
    track: bool = True,
    progress: ProgressFn | None = None,
    overwrite: bool = False,
) -> tuple[Path, WalkForwardResult]:
    """``coinrl walkforward CONFIG.yaml --folds K --seeds S [key=value ...] [--trials N]``.

    Args:
        config_path: experiment YAML.
        folds: walk-forward folds ``K`` (test blocks tiling the end of the data).
        seeds: ``S`` (seeds ``seed, seed + 1, ...`` from the experiment seed) or the seeds.
        overrides: ``key.path=value`` overrides (e.g. ``train.total_timesteps=50000``).
        out_dir: parent of the results folder ``<name>-walkforward`` (it records the
            walk-forward's identity, :func:`~coinrl.experiments.report_dir.walkforward_identity`:
            the same walk-forward again replaces it, another one is refused before training).
        n_trials: configurations tried in total, for the deflated Sharpe ratio (default: the
            number of seeds).
        embargo_bars: bars between train, validation and test; default the larger of the
            config's ``data.split.embargo_bars`` and ``env.window``.
        track: log the summary to W&B with the config's tracking settings.
        progress: stage callback (``load``, ``train`` per run, ``backtest``, ``report``).
        overwrite: replace a results folder that holds another walk-forward (refused otherwise).

    Returns:
        ``(results folder, WalkForwardResult)``.

    Raises:
        ConfigError: no folds or seeds, a bad config, a results folder of another walk-forward
            without ``overwrite``.
    """
    from coinrl.pipeline.source import load_dataset

    if folds < 1:
        raise ConfigError(f"--folds must be >= 1, got {folds}")
    cfg = load_experiment_config(config_path, overrides)
    seed_list = (
        [cfg.seed + i for i in range(int(seeds))] if isinstance(seeds, int) else [int(s) for s in seeds]
    )
    if not seed_list:
        raise ConfigError("--seeds must be >= 1")
    if cfg.is_portfolio:  # a portfolio config: experiments/walkforward_portfolio_cmd.py
        from .walkforward_portfolio_cmd import run_portfolio_walkforward
        return run_portfolio_walkforward(cfg, folds, seed_list, out_dir, n_trials=n_trials, embargo_bars=embargo_bars,
                                         progress=progress, overwrite=overwrite)
    embargo = max(cfg.data.split.embargo_bars, cfg.env.window) if embargo_bars is None else int(embargo_bars)
    split = cfg.data.split.model_copy(update={"walk_forward_folds": folds, "embargo_bars": embargo})
    data_cfg = cfg.data.model_copy(update={"split": split})
    cfg = cfg.model_copy(update={"data": data_cfg})
    notify(progress, "load", 0, 1)
    prepared = load_dataset(cfg.data)
    folder = Path(out_dir) / f"{cfg.name}-walkforward"
    identity = walkforward_identity(cfg.to_dict(), folds, seed_list, prepared.data_fingerprint, n_trials)
    check_replace(folder, identity, overwrite, summary_file=SUMMARY_FILE, kind="walk-forward")
    notify(progress, "load", 1, 1)
    train = cfg.resolved_train.model_copy(update={"progress_bar": False})
    result = walk_forward(
        prepared, train, cfg.env, seeds=seed_list, n_trials=n_trials,
        experiment_config=cfg.to_dict(), progress=progress,
    )
    result.meta.update(identity)
    notify(progress, "report", 0, 1)
    save_walk_forward(result, folder, tracking=cfg.tracking if track else None,
                      run_name=f"{cfg.name}-walkforward")
    notify(progress, "report", 1, 1)
    return folder, result


def run_report(results_dir: Path) -> Path:
    """``coinrl report RESULTS_DIR``: redraw the report page of a results folder.

    Args:
        results_dir: a backtest report folder (``metrics.json``) or a walk-forward folder
            (``walkforward.json``), or a run folder holding one of them.

    Returns:
        The path of the ``report.html`` written.

    Raises:
        DataError: a folder that holds neither.
    """
    root = Path(results_dir)
    if (root / SUMMARY_FILE).is_file():
        return render_walk_forward_report(root)
    if (root / METRICS_FILE).is_file():
        return render_report(root)
    found = sorted(p.parent for p in root.glob(f"*/{METRICS_FILE}")) + sorted(
        p.parent for p in root.glob(f"*/{SUMMARY_FILE}")
    )
    if len(found) == 1:
        return run_report(found[0])
    raise DataError(
        f"{root} holds no backtest or walk-forward results (no {METRICS_FILE} or {SUMMARY_FILE}); "
        "pass the folder written by coinrl backtest / coinrl walkforward"
        + (f" (candidates: {', '.join(str(p) for p in found)})" if found else "")
    )


# --------------------------------------------------------------------------- CLI


def _print_summary(title: str, columns: dict[str, dict[str, Any]], verdicts: Sequence[str],
                   warnings: Sequence[str], policy: dict[str, Any] | None = None,
                   cost_sweep: dict[str, Any] | None = None) -> None:
    """Metrics table (one column per strategy), the verdict lines, the directional quality of
    the agent's calls and the cost sweep, on the CLI console."""
    from rich.markup import escape
    from rich.table import Table

    from coinrl.agents.evaluate import directional_lines
    from coinrl.agents.report_format import fmt_money, fmt_num, fmt_pct, fmt_value, metric_cell

    from .console import console

    rows = (("total_return", "total return", fmt_pct), ("annualised_return", "ann. return", fmt_pct),
            ("sharpe", "Sharpe", fmt_num), ("max_drawdown", "max drawdown", fmt_pct),
            ("turnover", "turnover", fmt_num), ("fees_paid_quote", "fees", fmt_money))
    table = Table(title=title)
    table.add_column("metric")
    for name in columns:
        table.add_column(name, justify="right")

    for key, label, fmt in rows:
        if any(key in m for m in columns.values()):
            table.add_row(label, *(metric_cell(m, key, fmt) for m in columns.values()))
    random = next((m for n, m in columns.items() if n == "random" and m.get("n_draws")), None)
    if random is not None:
        table.add_row(
            "random: draws", *(
                (f"{int(m['n_draws'])} draws, std {fmt_pct(m['draws_std_total_return'])}, "
                 f"5-95% {fmt_pct(m['draws_q05_total_return'])}..{fmt_pct(m['draws_q95_total_return'])}")
                if m is random else "" for m in columns.values()
            ),
        )
    console.print(table)
    for line in verdicts:  # plain text: "[method, n=...]" is not rich markup
        console.print(line, markup=False)
    for line in directional_lines(policy or {}):
        console.print(line, markup=False)
    if cost_sweep and cost_sweep.get("rows"):
        sweep = Table(title="cost sweep: fees and slippage scaled")
        base_names = list(cost_sweep["rows"][0].get("margin", {}))
        for col in ("costs", "taker fee", "slippage bps", "total return", "Sharpe",
                    *(f"margin vs {b}" for b in base_names)):
            sweep.add_column(col, justify="right")
        for r in cost_sweep["rows"]:
            sweep.add_row(
                f"{r['multiplier']:g}x", f"{r['taker_fee_rate']:.4%}", f"{r['slippage_bps']:g}",
                fmt_value(r["total_return"], fmt_pct), fmt_value(r["sharpe"], fmt_num),
                *(fmt_value(r["margin"].get(b), fmt_pct) for b in base_names),
            )
        console.print(sweep)
        for line in cost_sweep.get("summary", []):
            console.print(line, markup=False)
    for line in warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(line)}")


def print_walkforward(wf: WalkForwardResult) -> None:
    """The walk-forward's table (means over runs, cells formatted as on its HTML page: an
    annualised figure the folds are too short for is ``n/a (short sample)`` in both), its
    verdicts and warnings, on the CLI console."""
    _print_summary(f"{wf.n_folds} folds x {len(wf.seeds)} seeds, out of sample (means)",
                   summary_means(wf.summary), wf.verdict_lines(), wf.warnings)


class _Bars:
    """``(stage, done, total)`` callbacks drawn as one rich progress bar per stage."""

    def __init__(self, prog: Any) -> None:
        self.prog = prog
        self.tasks: dict[str, Any] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.prog.add_task(stage, total=total)
        self.prog.update(self.tasks[stage], completed=done, total=total)


def register(app: typer.Typer) -> None:
    """Add ``backtest``, ``walkforward``, ``report`` and ``quickstart`` to the typer ``app``.

    Heavy imports (torch, SB3, plotly) happen inside the commands, so ``coinrl --help`` stays
    fast.
    """
    from .console import console, progress_bar

    @app.command("backtest")
    def backtest(
        bundle: Annotated[Path, typer.Argument(help="Bundle folder or zip written by coinrl train.")],
        overrides: Annotated[list[str] | None, typer.Argument(
            help="Execution-cost overrides, e.g. env.taker_fee_rate=0.0005 env.slippage_bps=5 "
                 "(costs only; recorded in the report).")] = None,
        data: Annotated[Path | None, typer.Option(
            "--data", help="Candle file to backtest on instead of the bundle's data (gets its features).")] = None,
        split: Annotated[str, typer.Option(help="train | validation | test | full.")] = "test",
        out: Annotated[Path, typer.Option("--out", "-o", help="Parent folder of the report folder.")] = Path("runs"),
        trials: Annotated[int, typer.Option(
            "--trials", help="Configurations tried before this one (deflates the Sharpe ratio).")] = 1,
        track: Annotated[bool, typer.Option("--track/--no-track", help="Log the report to W&B.")] = True,
        cost_sweep: Annotated[bool, typer.Option(
            "--cost-sweep", help="Also run at 0.5x, 1x, 2x, 4x fees and slippage: where does the edge vanish?")] = False,
        force: Annotated[bool, typer.Option(
            "--force", help="Run on candles of another timeframe than the bundle's (stated in the report).")] = False,
        overwrite: Annotated[bool, typer.Option(
            "--overwrite", help="Replace a report folder that holds another backtest.")] = False,
        risk: Annotated[Path | None, typer.Option(
            "--risk", help="RiskConfig YAML (as coinrl paper/live --risk; PortfolioRiskConfig for a "
            "portfolio bundle): apply the risk layer.")] = None,
    ) -> None:
        """Backtest a bundle's policy beside the baselines; write the report folder."""
        with progress_bar(transient=True) as prog:
            folder, res = run_backtest(bundle, data, split, out, n_trials=trials, track=track,
                                       progress=_Bars(prog), cost_overrides=list(overrides or []),
                                       cost_sweep=cost_sweep, force=force, overwrite=overwrite,
                                       risk_path=risk)
        _print_summary(
            f"{bundle}: {res.meta.get('data_description', split)} (fees and slippage included)",
            {res.name: res.metrics, **res.baseline_metrics()}, res.verdict_lines(), res.warnings,
            res.policy, res.meta.get("cost_sweep"),
        )
        console.print(f"report: {folder / 'report.html'}")

    @app.command("walkforward")
    def walkforward(
        config: Annotated[Path, typer.Argument(help="Experiment YAML.")],
        overrides: Annotated[list[str] | None, typer.Argument(
            help="key.path=value overrides, e.g. train.total_timesteps=50000.")] = None,
        folds: Annotated[int, typer.Option("--folds", "-k", help="Walk-forward folds.")] = 4,
        seeds: Annotated[int, typer.Option("--seeds", "-s", help="Training seeds per fold.")] = 3,
        out: Annotated[Path, typer.Option("--out", "-o", help="Parent folder of the results folder.")] = Path("runs"),
        trials: Annotated[int | None, typer.Option(
            "--trials", help="Configurations tried in total (default: the seeds).")] = None,
        embargo_bars: Annotated[int | None, typer.Option(
            "--embargo-bars", help="Bars between train/validation/test (default: max(config, window)).")] = None,
        track: Annotated[bool, typer.Option("--track/--no-track", help="Log the summary to W&B.")] = True,
        overwrite: Annotated[bool, typer.Option(
            "--overwrite", help="Replace a results folder that holds another walk-forward.")] = False,
    ) -> None:
        """Retrain per fold and seed, backtest each out of sample, summarise with intervals and verdicts."""
        with progress_bar() as prog:
            folder, wf = run_walkforward(config, folds, seeds, list(overrides or []), out, n_trials=trials,
                                         embargo_bars=embargo_bars, track=track, progress=_Bars(prog),
                                         overwrite=overwrite)
        print_walkforward(wf)
        console.print(f"report: {folder / 'report.html'}")

    @app.command("report")
    def report(
        results_dir: Annotated[Path, typer.Argument(help="A backtest or walk-forward results folder.")],
    ) -> None:
        """Redraw the report page of a backtest or walk-forward folder."""
        console.print(f"report: {run_report(results_dir)}")

    @app.command("quickstart")
    def quickstart(
        out: Annotated[Path, typer.Option("--out", "-o", help="Parent folder of the run.")] = Path("runs"),
        timesteps: Annotated[int, typer.Option(help="Training budget (env steps).")] = QUICKSTART_TIMESTEPS,
        track: Annotated[bool, typer.Option("--track/--no-track", help="Also log to W&B (offline).")] = False,
        overwrite: Annotated[bool, typer.Option(
            "--overwrite", help="Replace another run in OUT/quickstart (the same quickstart is always replaced).",
        )] = False,
    ) -> None:
        """Train PPO on the packaged BTC/USD 1h sample, backtest it on the test split, write the report."""
        import json

        with progress_bar() as prog:
            folder = run_quickstart(out, timesteps, track=track, progress=_Bars(prog), overwrite=overwrite)
        summary = json.loads((folder / "metrics.json").read_text())
        _print_summary(
            "quickstart: PPO on the held-out test split (fees and slippage included)",
            {"agent": summary["metrics"], **summary["baselines"]},
            [v["line"] for v in summary["verdicts"] if "line" in v], summary.get("warnings", []),
            summary.get("policy"),
        )
        console.print(f"report: {folder / 'report.html'}")


__all__ = [
    "QUICKSTART_TIMESTEPS",
    "print_walkforward",
    "quickstart_config",
    "register",
    "run_backtest",
    "run_quickstart",
    "run_report",
    "run_walkforward",
]
