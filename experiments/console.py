"""Console output for the CLI: one rich Console, progress bars and tables.

rich is what the Python CLI ecosystem uses for progress bars and tables (typer renders its help
with it too), so the CLI gets both without hand-written terminal code.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=False, highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


@contextmanager
def progress_bar(transient: bool = False) -> Iterator[Progress]:
    """A progress bar on stderr (quiet when stderr is not a terminal)."""
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=transient,
    ) as prog:
        yield prog


def print_metrics_table(
    title: str,
    columns: Mapping[str, Mapping[str, Any]],
    verdicts: Sequence[str] = (),
    warnings: Sequence[str] = (),
    policy: Mapping[str, Any] | None = None,
) -> None:
    """The metrics table of ``coinrl backtest`` (one column per strategy), verdicts, warnings.

    ``train``, ``evaluate``, ``backtest``, ``walkforward`` and ``quickstart`` print one format:
    this delegates to the backtest command's table so there is one implementation of it.

    Args:
        title: the table title (say which data and split).
        columns: strategy name -> metrics (``total_return``, ``sharpe``, ... as fractions).
        verdicts: plain-text verdict lines printed under the table.
        warnings: warning lines printed under the verdicts.
        policy: the agent's policy metrics; their ``direction/*`` keys (the directional
            quality of its calls) are printed under the table.
    """
    from .backtest_cmd import _print_summary

    _print_summary(title, {k: dict(v) for k, v in columns.items()}, verdicts, warnings,
                   dict(policy) if policy else None)
