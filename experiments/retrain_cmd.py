"""``coinrl retrain``: retrain a live bundle on fresh candles and gate the challenger.

The same function as the live runner's scheduled job (:func:`~coinrl.live.retrain.retrain_once`),
for a separate process or cron. ``--every`` keeps it running on its own APScheduler schedule.
The YAML holds a :class:`~coinrl.live.retrain_config.RetrainConfig`, at the top level or under
``retrain:``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from coinrl.pipeline.errors import CoinrlError

from .console import console, err_console

EXIT_REJECTED = 3
"""Exit status of a retrain whose challenger failed the gate (0: passed, 1: retrain failed)."""


def load_retrain_config(path: Path | None, overrides: list[str]) -> Any:
    """The :class:`RetrainConfig` of a YAML file (top level or its ``retrain:`` section) with
    ``key=value`` overrides; defaults without a file."""
    from coinrl.live.retrain_config import RetrainConfig
    from coinrl.pipeline.config import apply_overrides, load_yaml, validate_config

    data: dict[str, Any] = {}
    if path is not None:
        raw = load_yaml(path) or {}
        data = dict(raw.get("retrain", raw)) if isinstance(raw, dict) else {}
    return validate_config(RetrainConfig, apply_overrides(data, overrides), source=str(path or "--set"))


def _report(outcome: Any) -> None:
    from rich.table import Table

    head = {"promoted": "[green]PASSED the gate[/]", "rejected": "[yellow]REJECTED by the gate[/]",
            "failed": "[red]FAILED[/]"}[outcome.status]
    console.print(f"challenger {outcome.trial}: {head} ({outcome.wall_s:.1f} s)"
                  + (f" -> {outcome.challenger}" if outcome.challenger else ""))
    if outcome.gate:
        table = Table(title="retrain gate (newest bars, never trained on)")
        table.add_column("figure")
        table.add_column("value", justify="right")
        for key in ("bars", "challenger_total_return", "champion_total_return", "buy_and_hold_total_return",
                    "cash_total_return", "p_better", "p_beats_cash", "dsr", "n_trials"):
            value = outcome.gate.get(key)
            table.add_row(key, "-" if value is None else (f"{value:+.4f}" if isinstance(value, float) else str(value)))
        console.print(table)
    for reason in outcome.reasons:
        console.print(f"  - {reason}")


def retrain(
    bundle: Annotated[Path, typer.Argument(help="The champion bundle folder (the live session's).")],
    candles: Annotated[Path, typer.Option(help="Stored candles of its market (Parquet, coinrl data fetch).")],
    journal: Annotated[Path, typer.Option(help="The run's journal (SQLite); created if missing.")],
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Retrain YAML (RetrainConfig).")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for challenger bundles.")] = Path("challengers"),
    run_id: Annotated[str | None, typer.Option(help="Run id of a new journal (default: the bundle's name).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override, e.g. --set gate_bars=720.")] = None,
    update: Annotated[bool, typer.Option(help="First fetch the candles closed since the file's last one.")] = False,
    exchange_url: Annotated[str | None, typer.Option(help="With --update: API base URL (e.g. the emulator).")] = None,
    as_of: Annotated[int | None, typer.Option(help="Only candles opening before this UTC epoch ms.")] = None,
    every: Annotated[bool, typer.Option(help="Keep running, retraining every retrain.every.")] = False,
    promote_to: Annotated[Path | None, typer.Option(
        help="The live bundle folder a session watches: a challenger that passes the gate (and "
             "has no shadow_bars to wait for) is promoted there, the champion archived.")] = None,
) -> None:
    """Retrain BUNDLE on a rolling window and judge the challenger against it on the newest bars."""
    from coinrl.live.journal import Journal
    from coinrl.live.retrain import retrain_once
    from coinrl.live.retrain_promote import promote_challenger
    from coinrl.live.retrain_schedule import make_retrain_scheduler, retrain_job

    try:
        cfg = load_retrain_config(config, set_ or [])
        jr = Journal(journal, run_id=None if journal.is_file() else (run_id or bundle.name))
    except CoinrlError as e:
        err_console.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from e

    def _update() -> None:
        from coinrl.pipeline.fetch import update_data
        from coinrl.pipeline.store import read_metadata

        meta = read_metadata(candles)
        n = update_data(meta["symbol"], meta["timeframe"], candles, exchange=meta.get("exchange"),
                        exchange_url=exchange_url)
        console.print(f"{candles}: {n} new candle(s)")

    with jr:
        if every:
            def _on_outcome(o: Any) -> None:
                _report(o)
                if promote_to is not None and o.promoted and o.challenger is not None and not cfg.shadow_bars:
                    promote_challenger(o.challenger, promote_to, jr)
                    console.print(f"promoted to {promote_to}")

            job = retrain_job(bundle, candles, cfg, out, jr, update=_update if update else None,
                              on_outcome=_on_outcome)
            sched = make_retrain_scheduler(job, cfg, run_now=True)
            console.print(f"retraining {bundle} every {cfg.every}; Ctrl-C to stop")
            sched.start()
            try:
                while True:
                    time.sleep(1.0)
            except KeyboardInterrupt:
                sched.shutdown(wait=True)
            return
        try:
            if update:
                _update()
            outcome = retrain_once(bundle, candles, cfg, out, jr, as_of_ts_ms=as_of)
            _report(outcome)
            if promote_to is not None and outcome.promoted and outcome.challenger is not None:
                if cfg.shadow_bars:
                    console.print(f"not promoted yet: shadow it for {cfg.shadow_bars} bars (check_shadow)")
                else:
                    archived = promote_challenger(outcome.challenger, promote_to, jr)
                    console.print(f"promoted to {promote_to} (previous champion kept at {archived})")
        except CoinrlError as e:
            err_console.print(f"[red]error:[/] {e}")
            raise typer.Exit(2) from e
    if outcome.status == "failed":
        raise typer.Exit(1)
    if outcome.status == "rejected":
        raise typer.Exit(EXIT_REJECTED)


def register(app: typer.Typer) -> None:
    """Add ``coinrl retrain`` to the ``coinrl`` app."""
    app.command("retrain")(retrain)


__all__ = ["EXIT_REJECTED", "load_retrain_config", "register", "retrain"]
