"""What ``coinrl tune`` and ``coinrl tune-best`` do (the CLI only parses arguments and prints).

* :func:`run_tune`: experiment YAML with a ``tune:`` section (+ overrides) → candles → an Optuna
  study (:func:`~coinrl.agents.tune.optimize_parameters`) in a SQLite file by default or a
  shared PostgreSQL database, ``n_jobs`` worker processes on this machine → (optionally) the best
  trial trained again, bundled and evaluated ONCE on the test split with the deflated Sharpe
  ratio (:func:`~coinrl.agents.tune.train_best`).
* :func:`run_tune_best`: only that last step, for a study that workers on several machines
  filled (run it once, on one machine, after they finish).

Study folder (``out_dir/<study name>/``): ``<study name>.db`` (the default SQLite storage),
``trials/<number>/progress_fold<i>.csv``, ``wandb/`` (offline runs, one per trial, group = the
study name), ``best/bundle``, ``tune_result.json`` (best trial and its test evaluation) and
``tune_summary.json`` (trial counts, pruning, compute saved).

Many machines: run the same line on each machine, against one PostgreSQL study::

    coinrl tune experiments/configs/tune_ppo_btc_1h.yaml \\
        --storage postgresql://coinrl:PASSWORD@dbhost:5432/coinrl --n-jobs 4 --no-best
    coinrl tune-best experiments/configs/tune_ppo_btc_1h.yaml \\
        --storage postgresql://coinrl:PASSWORD@dbhost:5432/coinrl      # once, at the end

Watch either storage with ``optuna-dashboard <storage URL>`` (``pip install optuna-dashboard``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from coinrl.pipeline.errors import ConfigError

if TYPE_CHECKING:
    from coinrl.agents.tune import BestResult, StudySummary, TuneProgress

    from .config import ExperimentConfig

logger = logging.getLogger(__name__)

SUMMARY_FILE = "tune_summary.json"


@dataclass(frozen=True)
class TuneRun:
    """What :func:`run_tune` did.

    Attributes:
        study_name: the study.
        storage: its URL with the password masked.
        study_dir: the study folder.
        summary: trial counts, best trial, pruning and compute figures.
        best: the best trial trained again and tested once (None with ``best=False`` or when
            no trial completed).
    """

    study_name: str
    storage: str
    study_dir: Path
    summary: StudySummary
    best: BestResult | None


def _load(config_path: Path, overrides: Sequence[str]) -> ExperimentConfig:
    from .config import load_experiment_config

    config = load_experiment_config(config_path, list(overrides))
    if config.tune is None:
        raise ConfigError(
            f"{config_path} has no tune: section; add a search space (see "
            "experiments/configs/tune_ppo_btc_1h.yaml)"
        )
    return config


def study_location(
    config: ExperimentConfig,
    storage: str | None,
    study_name: str | None,
    out_dir: Path,
) -> tuple[str, str, Path]:
    """``(storage URL, study name, study folder)`` from the CLI options and the config.

    The study name is ``study_name``, else ``tune.study_name``, else the experiment name; the
    storage is ``storage``, else ``tune.storage``, else the SQLite file
    ``out_dir/<study name>/<study name>.db``.
    """
    assert config.tune is not None  # checked by _load  # noqa: S101
    name = study_name or config.tune.study_name or config.name
    folder = Path(out_dir) / name
    url = storage or config.tune.storage or f"sqlite:///{(folder / f'{name}.db').resolve()}"
    return url, name, folder


def run_tune(
    config_path: Path,
    overrides: Sequence[str] = (),
    *,
    storage: str | None = None,
    n_jobs: int | None = None,
    n_trials: int | None = None,
    study_name: str | None = None,
    out_dir: Path = Path("runs"),
    best: bool = True,
    progress: Callable[[TuneProgress], None] | None = None,
) -> TuneRun:
    """``coinrl tune CONFIG [key=value ...] [--storage URL] [--n-jobs K] [--n-trials N]
    [--study-name NAME] [--out DIR] [--best/--no-best]``.

    Runs (or continues: the same storage and study name resume the study) the Optuna study of
    the config's ``tune:`` section on this machine with ``n_jobs`` worker processes; the
    objective reads only the rows before the test split. With ``best``, the best trial is then
    trained again, bundled and evaluated once on the test split.

    Args:
        config_path: experiment YAML with a ``tune:`` section.
        overrides: ``key.path=value`` overrides (e.g. ``tune.folds=2``).
        storage: Optuna storage URL (``sqlite:///file.db``, ``postgresql://user:pass@host/db``);
            None = ``tune.storage`` or the SQLite file in the study folder.
        n_jobs: worker processes on this machine; None = ``tune.n_jobs``.
        n_trials: the study's total trial budget; None = ``tune.n_trials``.
        study_name: None = ``tune.study_name`` or the experiment name.
        out_dir: parent folder of the study folder.
        best: train, bundle and test the best trial at the end (reusing the bundle a previous
            run made for the same best trial).
        progress: called with the study's progress (trials done of the budget, best so far,
            pruned and failed counts) at the start, after each trial and, with worker
            processes, every few seconds.

    Returns:
        The :class:`TuneRun`.

    Raises:
        ConfigError: bad config (invalid search space: with its field path), no tune section,
            unreachable storage, a stored study of another config.
        DataError: unusable data.
    """
    from coinrl.agents.tune import load_study, optimize_parameters, redact_url, train_best
    from coinrl.agents.tune.portfolio_data import load_tuning_candles

    config = _load(config_path, overrides)
    url, name, folder = study_location(config, storage, study_name, out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    candles = load_tuning_candles(config.data)
    summary = optimize_parameters(
        config,
        candles,
        storage=url,
        study_name=name,
        n_trials=n_trials,
        n_jobs=n_jobs,
        out_dir=folder,
        progress=progress,
    )
    (folder / SUMMARY_FILE).write_text(
        json.dumps(summary.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    result = None
    if best and summary.best_number is not None:
        assert config.tune is not None  # noqa: S101
        result = train_best(config, candles, load_study(url, name, config.tune), folder)
    elif best:
        logger.warning("study=%s has no complete trial: no best bundle", name)
    return TuneRun(name, redact_url(url), folder, summary, result)


def run_tune_best(
    config_path: Path,
    overrides: Sequence[str] = (),
    *,
    storage: str | None = None,
    study_name: str | None = None,
    out_dir: Path = Path("runs"),
) -> TuneRun:
    """``coinrl tune-best CONFIG [--storage URL] [--study-name NAME] [--out DIR]``: train the
    best trial of an existing study again, bundle it and evaluate it once on the test split.

    The bundle ``coinrl tune`` (or an earlier ``tune-best``) already made for the same best
    trial is reused instead of trained again, and its stored test result is reused instead of
    looking at the test split again.

    Raises:
        ConfigError: no such study; DataError: the study has no complete trial.
    """
    from coinrl.agents.tune import load_study, redact_url, summarize_study, train_best
    from coinrl.agents.tune.portfolio_data import load_tuning_candles

    config = _load(config_path, overrides)
    url, name, folder = study_location(config, storage, study_name, out_dir)
    assert config.tune is not None  # noqa: S101
    study = load_study(url, name, config.tune)
    folder.mkdir(parents=True, exist_ok=True)
    result = train_best(config, load_tuning_candles(config.data), study, folder)
    return TuneRun(name, redact_url(url), folder, summarize_study(study, url), result)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if v is None:
        return "-"
    return str(v)


def _pct(v: Any) -> str:
    return f"{100.0 * float(v):.1f}%" if isinstance(v, int | float) else "-"


def probability_text(p: Any) -> str:
    """A probabilistic or deflated Sharpe ratio in words: ``"3.1% (below 95%: not evidence of
    skill)"`` (both are probabilities; :data:`SHARPE_NOTE` says of what)."""
    if not isinstance(p, int | float) or p != p:  # None or NaN
        return "- (not computed)"
    verdict = "evidence of skill" if p >= 0.95 else "below 95%: not evidence of skill"
    return f"{_pct(p)} ({verdict})"


SHARPE_NOTE = (
    "PSR: the probability that the true Sharpe ratio is above 0; DSR (deflated): the "
    "probability that it beats the best Sharpe that {n} trials of a skill-less strategy reach "
    "by luck. 95% or more is evidence of skill."
)


def _print_run(run: TuneRun) -> None:
    from rich.table import Table

    from .console import console

    s = run.summary
    table = Table(title=f"study {run.study_name} ({run.storage})", show_header=False)
    table.add_column("what")
    table.add_column("value")
    table.add_row("trials (budget count)", str(s.n_trials))
    table.add_row("states", ", ".join(f"{k}={v}" for k, v in sorted(s.states.items())))
    table.add_row("best trial", _fmt(s.best_number))
    table.add_row("best validation score", _fmt(s.best_value))
    for k, v in sorted(s.best_params.items()):
        table.add_row(f"  {k}", _fmt(v))
    table.add_row("pruned fraction", f"{s.pruned_fraction:.2f}")
    table.add_row("compute saved by pruning", f"{s.compute_saved_fraction:.2f}")
    table.add_row("env steps trained", str(s.env_steps_used))
    table.add_row("worker processes", str(s.workers))
    b = run.best
    if b is not None:
        if b.test is not None:
            agent = b.test.get("agent", {})
            st = b.test.get("sharpe_stats", {})
            table.add_row("test total return", _pct(agent.get("total_return")))
            table.add_row("test Sharpe (annualised)", _fmt(agent.get("sharpe")))
            table.add_row("test probabilistic Sharpe (PSR)", probability_text(st.get("psr")))
            table.add_row(
                f"test deflated Sharpe (DSR, {b.n_trials} trials)", probability_text(st.get("dsr"))
            )
            if b.reused_test:
                table.add_row("", "test result reused from the study (no second look)")
    console.print(table)
    if b is not None:
        made = "reused: made earlier for this trial" if b.reused_bundle else "trained now"
        console.print(f"best bundle: {b.bundle} ({made})")
        if b.test is not None:
            console.print(SHARPE_NOTE.format(n=b.n_trials))
    for number, err in sorted(s.failed_errors.items())[:5]:
        console.print(f"[yellow]trial {number} failed:[/yellow] {err.splitlines()[0][:200]}")
    console.print(f"study folder: {run.study_dir}")
    console.print(f"dashboard: optuna-dashboard '{run.storage}'")


class _ProgressLine:
    """Shows the study's progress: the spinner's text, and one printed line per finished trial
    (so a log or CI output, where the spinner does not render, has it too)."""

    def __init__(self, status: Any, print_line: Callable[[str], None]) -> None:
        self.status = status
        self.print_line = print_line
        self.done = -1

    def __call__(self, p: TuneProgress) -> None:
        self.status.update(f"tuning: {p.line()} (kill and rerun to continue the same study)")
        if p.done != self.done:
            self.done = p.done
            self.print_line(p.line())


def register(app: typer.Typer) -> None:
    """Add ``tune`` and ``tune-best`` to the typer ``app`` (heavy imports inside the commands)."""
    from .console import err_console

    @app.command("tune")
    def tune(
        config: Annotated[Path, typer.Argument(help="Experiment YAML with a tune: section.")],
        overrides: Annotated[
            list[str] | None,
            typer.Argument(help="key.path=value overrides, e.g. tune.folds=2."),
        ] = None,
        storage: Annotated[
            str | None,
            typer.Option(
                "--storage",
                help="Optuna storage URL: sqlite:///file.db (default: a file in the study "
                "folder) or postgresql://user:pass@host/db shared by many machines.",
            ),
        ] = None,
        n_jobs: Annotated[
            int | None,
            typer.Option("--n-jobs", "-j", min=1, help="Worker processes on this machine."),
        ] = None,
        n_trials: Annotated[
            int | None,
            typer.Option("--n-trials", "-n", min=1, help="The study's total trial budget."),
        ] = None,
        study_name: Annotated[
            str | None, typer.Option("--study-name", help="Default: the experiment name.")
        ] = None,
        out: Annotated[
            Path, typer.Option("--out", "-o", help="Parent folder of the study folder.")
        ] = Path("runs"),
        best: Annotated[
            bool,
            typer.Option(
                "--best/--no-best",
                help="Train, bundle and test the best trial at the end (use --no-best on "
                "all but one machine).",
            ),
        ] = True,
    ) -> None:
        """Tune hyper-parameters, env, reward and features with Optuna (resumable)."""
        with err_console.status("tuning (kill and rerun to continue the same study)") as status:
            run = run_tune(
                config,
                list(overrides or []),
                storage=storage,
                n_jobs=n_jobs,
                n_trials=n_trials,
                study_name=study_name,
                out_dir=out,
                best=best,
                progress=_ProgressLine(status, err_console.print),
            )
        _print_run(run)

    @app.command("tune-best")
    def tune_best(
        config: Annotated[Path, typer.Argument(help="Experiment YAML the study was run with.")],
        overrides: Annotated[
            list[str] | None, typer.Argument(help="The same overrides as the study.")
        ] = None,
        storage: Annotated[
            str | None, typer.Option("--storage", help="The study's storage URL.")
        ] = None,
        study_name: Annotated[
            str | None, typer.Option("--study-name", help="Default: the experiment name.")
        ] = None,
        out: Annotated[
            Path, typer.Option("--out", "-o", help="Parent folder of the study folder.")
        ] = Path("runs"),
    ) -> None:
        """Train the best trial again, bundle it and evaluate it once on the test split."""
        with err_console.status("training the best trial"):
            run = run_tune_best(
                config,
                list(overrides or []),
                storage=storage,
                study_name=study_name,
                out_dir=out,
            )
        _print_run(run)


__all__ = [
    "SHARPE_NOTE",
    "SUMMARY_FILE",
    "TuneRun",
    "probability_text",
    "register",
    "run_tune",
    "run_tune_best",
    "study_location",
]
