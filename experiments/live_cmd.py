"""What ``coinrl paper``, ``coinrl live`` and ``coinrl status`` do.

The CLI only parses arguments and prints; these functions do the work:

* :func:`run_paper`: a bundle traded on live market data with simulated fills (the env's own
  books): no keys, no orders. The default way to run a model.
* :func:`run_live`: the same session sending real orders over the exchange's API. It refuses
  to start without ``live=True`` (``--live``) AND an explicit confirmation (``--yes``, or
  typing the symbol at the prompt).
* :func:`run_status`: what a session's journal says: run id, mode, last decision, books,
  orders, fills, errors, and how and why it stopped.

Both trading commands journal to an append-only SQLite file (``--journal``). Pointing a new
session at the journal of an earlier one continues that run: the runner reconciles with the
journal and the exchange before its first decision and never re-sends a decision's order.
The process exit status is the session's :class:`~coinrl.live.runner.ExitCode`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from coinrl.pipeline.errors import ConfigError

from .console import console, err_console

logger = logging.getLogger(__name__)

DEFAULT_RUNS_DIR = Path("coinrl_runs")
"""Where journals go when ``--journal`` is not given."""

Mode = Literal["paper", "live"]

_MODE_OF_BROKER = {"paper": "paper", "exchange": "live"}


def default_journal_path(mode: Mode, symbol: str, timeframe: str, runs_dir: Path = DEFAULT_RUNS_DIR) -> Path:
    """``<runs_dir>/<mode>_<SYMBOL>_<timeframe>.sqlite`` (``/`` and ``:`` replaced)."""
    sym = symbol.replace("/", "-").replace(":", "_")
    return runs_dir / f"{mode}_{sym}_{timeframe}.sqlite"


def _market_of(
    agent: Any, symbol: str | None, timeframe: str | None, *, allow_symbol_mismatch: bool = False,
) -> tuple[str, str, str | None]:
    """The market to trade and the bundle's own symbol when it differs (allowed explicitly)."""
    info = dict(getattr(agent, "data_info", {}) or {})
    trained = str(info.get("symbol") or "") or None
    sym = symbol or trained or ""
    tf = timeframe or str(info.get("timeframe") or "")
    if not sym or not tf:
        raise ConfigError(
            "the bundle does not record its market (data_info.symbol/timeframe): pass --symbol "
            "and --timeframe"
        )
    mismatch = trained if trained is not None and trained != sym else None
    if mismatch is not None and not allow_symbol_mismatch:
        raise ConfigError(
            f"the bundle was trained on {trained}, not {sym}: its normaliser and policy fit "
            f"{trained}'s prices; trade it on {trained}, or pass --allow-symbol-mismatch to "
            "trade it on another market anyway (journalled)"
        )
    if tf != info.get("timeframe", tf):
        raise ConfigError(
            f"the bundle was trained on {info.get('timeframe')} bars, not {tf}: its features "
            "would not mean the same thing; trade it on its own timeframe"
        )
    return sym, tf, mismatch


def _load_bundle(bundle: Path, trusted_keys: Any = None) -> Any:
    """The bundle's agent; any failure to read it is a :class:`DataError` with one clear line,
    a portfolio bundle a :class:`ConfigError` (live trading takes one market for now)."""
    import pickle
    import zipfile

    from coinrl.agents.bundle import load_model
    from coinrl.pipeline.errors import CoinrlError, DataError

    try:
        agent = load_model(bundle, trusted_keys=trusted_keys)
    except CoinrlError:
        raise
    except (zipfile.BadZipFile, pickle.UnpicklingError, OSError, ValueError, KeyError, EOFError,
            RuntimeError, TypeError, AttributeError, ImportError) as e:
        first = (str(e).strip().splitlines() or [""])[0][:300]
        raise DataError(
            f"bundle {bundle} cannot be loaded ({type(e).__name__}: {first}): it is damaged or "
            "not a coinrl bundle; restore it or save the model again"
        ) from e
    if agent.portfolio is not None:
        from coinrl.pipeline.errors import ConfigError

        raise ConfigError(
            f"bundle {bundle} trades a portfolio ({', '.join(agent.portfolio.symbols)}); live and "
            "paper trading take one-market bundles only for now: backtest it with coinrl backtest"
        )
    return agent


def _open_journal(path: Path, run_id: str | None) -> Any:
    from coinrl.live.brokers import check_run_id, new_run_id
    from coinrl.live.journal import Journal

    if path.is_file():
        journal = Journal(path, run_id=run_id)  # a different run id is refused
        logger.info("journal exists: continuing run run_id=%s path=%s", journal.run_id, path)
        return journal
    return Journal(path, run_id=check_run_id(run_id) if run_id else new_run_id())


def run_session(
    mode: Mode,
    bundle: Path,
    *,
    exchange: str = "binance",
    exchange_url: str | None = None,
    symbol: str | None = None,
    timeframe: str | None = None,
    journal_path: Path | None = None,
    run_id: str | None = None,
    risk_path: Path | None = None,
    max_bars: int | None = None,
    flatten_on_exit: bool = False,
    reload_every_bars: int = 1,
    key_file: Path | None = None,
    max_clock_skew_ms: float | None = 1000.0,
    wandb_mode: Literal["disabled", "offline", "online"] = "disabled",
    wandb_dir: Path | None = None,
    client_config: Mapping[str, Any] | None = None,
    install_signals: bool = True,
    on_start: Callable[[Any], None] | None = None,
    trusted_keys: Path | None = None,
    allow_symbol_mismatch: bool = False,
    on_decision: Callable[[dict[str, Any]], None] | None = None,
) -> int:
    """Trade ``bundle`` paper or live until stopped; the session's exit code.

    Args:
        mode: ``paper`` (simulated fills, no keys) or ``live`` (real orders).
        bundle: the model bundle (watched for hot reloads).
        exchange: ccxt exchange id.
        exchange_url: send every request to this base URL (the emulator).
        symbol, timeframe: the market (default: the bundle's training market).
        journal_path: the journal (default :func:`default_journal_path`); an existing one
            continues its run.
        run_id: the run id of a new journal (default: a fresh one); it prefixes client order ids.
        risk_path: a YAML file of :class:`~coinrl.live.risk.RiskConfig` (default: its defaults).
        max_bars: stop after this many decisions (None: until stopped).
        flatten_on_exit: close the position on SIGINT/SIGTERM and at the end.
        reload_every_bars: check the bundle for a new version every this many bars (0: never).
        key_file: a key file (live; default: environment variables, then the default file).
        max_clock_skew_ms: largest accepted clock skew (None: not checked: an emulator
            replaying history).
        wandb_mode, wandb_dir: W&B tracking of the session's equity and position.
        client_config: extra ccxt settings.
        install_signals: route SIGINT/SIGTERM to a safe stop (main thread only).
        on_start: called with the runner before it runs (tests, the CLI's banner).
        trusted_keys: a trusted-keys file: the bundle (and every hot reload) must be signed
            by one of its keys (:mod:`coinrl.agents.signing`); None: not checked.
        allow_symbol_mismatch: trade a market other than the bundle's own (journalled);
            without it that is refused.
        on_decision: called after every decision with its summary (the CLI prints one line).

    Returns:
        The :class:`~coinrl.live.runner.ExitCode` as an int.

    Raises:
        ConfigError: a bad risk file, symbol or journal, or a bundle trained on another
            symbol (before any trading).
        DataError: the bundle cannot be read (damaged).
        AuthenticationError: the exchange refused the keys (live).
    """
    from coinrl.live.data import public_client
    from coinrl.live.exchange import connect_to_exchange
    from coinrl.live.risk import RiskConfig
    from coinrl.live.runner import RunnerConfig, build_runner
    from coinrl.pipeline.config import load_config

    if mode not in ("paper", "live"):
        raise ConfigError(f"mode must be 'paper' or 'live', got {mode!r}")
    trusted = None
    if trusted_keys is not None:
        from coinrl.agents.signing import load_trusted_keys

        trusted = load_trusted_keys(trusted_keys)
    agent = _load_bundle(bundle, trusted)
    sym, tf, trained_on = _market_of(agent, symbol, timeframe,
                                     allow_symbol_mismatch=allow_symbol_mismatch)
    risk = load_config(RiskConfig, risk_path) if risk_path is not None else RiskConfig()
    cfg = RunnerConfig(max_bars=max_bars, flatten_on_exit=flatten_on_exit,
                       reload_every_bars=reload_every_bars)
    settings = dict(client_config or {})
    secrets: tuple[str, ...] = ()
    if mode == "live":
        from coinrl.live.keys import load_credentials

        creds = load_credentials(exchange, key_file=key_file)
        secrets = (creds.api_key, creds.reveal_secret())
        client = connect_to_exchange(credentials=creds, exchange=exchange, exchange_url=exchange_url,
                                     symbols=[sym], max_clock_skew_ms=max_clock_skew_ms,
                                     config=settings)
    else:
        client = public_client(exchange, exchange_url=exchange_url, config=settings)
        client.market(sym)  # an unknown symbol fails here, with close matches
    path = journal_path or default_journal_path(mode, sym, tf)
    journal = _open_journal(path, run_id)
    journal.redact(*secrets)
    if trained_on is not None:
        logger.warning("trading %s with a bundle trained on %s (--allow-symbol-mismatch)", sym,
                       trained_on)
        journal.append("model", ts_ms=client.server_time_ms(), payload={
            "status": "symbol_mismatch", "bundle": str(bundle), "bundle_symbol": trained_on,
            "symbol": sym, "reason": "allowed by --allow-symbol-mismatch",
        })
    tracker = None
    if wandb_mode != "disabled":
        from coinrl.agents.config import TrackingConfig
        from coinrl.agents.tracking import Tracker

        tracker = Tracker(TrackingConfig(mode=wandb_mode, dir=str(wandb_dir) if wandb_dir else None),
                          f"{mode}-{journal.run_id}",
                          {"mode": mode, "symbol": sym, "timeframe": tf, "bundle": str(bundle),
                           "risk": risk.model_dump(), "runner": cfg.model_dump()},
                          path.parent)
    runner = build_runner(
        agent, env_config=agent.env_config, spec=agent.feature_spec, normaliser=agent.normaliser,
        client=client, symbol=sym, timeframe=tf, mode=mode, journal=journal, risk_config=risk,
        config=cfg, bundle_path=bundle, check_clock_skew=max_clock_skew_ms is not None,
        tracker=tracker,
    )
    logger.info("session starting mode=%s symbol=%s timeframe=%s run_id=%s journal=%s",
                mode, sym, tf, journal.run_id, path)
    runner.on_decision = on_decision
    if trusted is not None:  # a hot-reloaded bundle must be signed by the same keys
        from functools import partial

        from coinrl.agents.bundle import load_model

        runner.loader = partial(load_model, trusted_keys=trusted)
    if on_start is not None:
        on_start(runner)
    restore = runner.install_signal_handlers() if install_signals else (lambda: None)
    try:
        code = runner.run()
    finally:
        restore()
        if tracker is not None:
            tracker.finish()
    return int(code)


def run_paper(bundle: Path, **kw: Any) -> int:
    """Paper-trade ``bundle`` (see :func:`run_session` for the options); the exit code."""
    return run_session("paper", bundle, **kw)


def run_live(bundle: Path, *, live: bool, confirmed: bool, **kw: Any) -> int:
    """Trade ``bundle`` with real orders (see :func:`run_session`); the exit code.

    Args:
        bundle: the model bundle.
        live: the ``--live`` flag: without it nothing is sent.
        confirmed: the operator confirmed (``--yes`` or the prompt).

    Raises:
        ConfigError: ``live`` or ``confirmed`` is False (nothing was sent).
    """
    if not live:
        raise ConfigError(
            "coinrl live sends REAL orders: pass --live to confirm you mean it (or use "
            "`coinrl paper` to trade on simulated fills)"
        )
    if not confirmed:
        raise ConfigError("live trading was not confirmed: pass --yes or answer the prompt")
    return run_session("live", bundle, **kw)


_NOT_SENT = frozenset({"skipped", "not_found", "rejected", "intent"})
"""Journal order statuses of orders the exchange does not hold (never sent, or refused)."""


def _utc(ts_ms: Any) -> str | None:
    """UTC ISO-8601 of epoch ms (None for None or 0)."""
    import pandas as pd

    if not ts_ms:
        return None
    return pd.Timestamp(int(ts_ms), unit="ms", tz="UTC").isoformat()


def run_status(journal_path: Path, *, export: Path | None = None) -> dict[str, Any]:
    """A session's state from its journal (read-only).

    Args:
        journal_path: the journal a session wrote.
        export: also write the whole journal to this Parquet file.

    Returns:
        ``run_id``, ``mode``, ``symbol``, ``events``, ``starts``, ``decisions``, ``orders``
        (those the exchange holds: never-sent and refused ones are left out, so the count
        agrees with the exchange's), ``orders_by_status``, ``fills``, ``errors``, ``halts``,
        ``reconciliations``, ``last_decision`` (its bar ts_ms and UTC time, verdict and
        target), ``books`` (the last balance: cash, position, equity, fees, its UTC time and
        the PnL since the first sync, quote), ``started_utc``, ``stopped`` (exit code, name,
        reason and UTC time of the last stop; None while running or killed) and
        ``integrity`` (SQLite's check).
    """
    from coinrl.live.journal import Journal

    with Journal.open_existing(journal_path) as j:
        starts = j.events("start")
        last_dec = j.last("decision")
        bal = j.last("balance")
        stop = j.last("stop")
        last_start = starts[-1] if starts else None
        stopped = None
        if stop is not None and (last_start is None or stop.seq > last_start.seq):
            stopped = {k: stop.payload.get(k) for k in ("exit_code", "exit_name", "reason")}
            stopped["time_utc"] = _utc(stop.ts_ms)
        by_status: dict[str, int] = {}
        for info in j.orders().values():
            k = str(info.get("status"))
            by_status[k] = by_status.get(k, 0) + 1
        first_bal = j.events("balance")[:1]
        out: dict[str, Any] = {
            "run_id": j.run_id,
            "journal": str(journal_path),
            "mode": None if last_start is None else _MODE_OF_BROKER.get(
                str(last_start.payload.get("broker")), last_start.payload.get("broker")),
            "symbol": None if last_start is None else last_start.payload.get("symbol"),
            "events": j.count(),
            "starts": len(starts),
            "decisions": j.count("decision"),
            "orders": sum(n for k, n in by_status.items() if k not in _NOT_SENT),
            "orders_by_status": by_status,
            "fills": j.count("fill"),
            "errors": j.count("error"),
            "halts": j.count("halt"),
            "reconciliations": j.count("reconciliation"),
            "last_decision": None if last_dec is None else {
                "bar_ts_ms": last_dec.bar_ts_ms, "bar_utc": _utc(last_dec.bar_ts_ms),
                "verdict": last_dec.payload.get("verdict"),
                "target_exposure": last_dec.payload.get("target_exposure"),
            },
            "books": None if bal is None else {
                **{k: bal.payload.get(k) for k in ("ts_ms", "cash_quote", "position_base",
                                                    "equity_quote", "fees_paid_quote")},
                "time_utc": _utc(bal.payload.get("ts_ms")),
                "pnl_quote": (float(bal.payload["equity_quote"])
                              - float(first_bal[0].payload["equity_quote"])),
            },
            "started_utc": None if not starts else _utc(starts[0].ts_ms),
            "last_start_utc": None if last_start is None else _utc(last_start.ts_ms),
            "stopped": stopped,
            "integrity": j.integrity_check(),
        }
        if export is not None:
            out["exported"] = str(j.export_parquet(export))
    return out


# --------------------------------------------------------------------------- CLI


def _print_status(st: Mapping[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"run {st['run_id']} ({st.get('mode') or '?'} {st.get('symbol') or ''})")
    table.add_column("item")
    table.add_column("value", overflow="fold")
    for key in ("journal", "started_utc", "starts", "decisions", "orders", "fills", "errors",
                "halts", "reconciliations", "integrity"):
        table.add_row(key, str(st[key]))
    if st.get("orders_by_status"):
        table.add_row("orders by status", ", ".join(f"{k} {n}" for k, n in sorted(st["orders_by_status"].items())))
    books = st.get("books") or {}
    for key, value in books.items():
        table.add_row(key, f"{value:.10g}" if isinstance(value, float) else str(value))
    dec = st.get("last_decision")
    if dec:
        table.add_row("last decision", f"bar {dec['bar_utc']} {dec['verdict']} target {dec['target_exposure']}")
    stopped = st.get("stopped")
    table.add_row("state", "running or killed (no stop after the last start)" if stopped is None
                  else f"stopped {stopped['exit_name']} ({stopped['exit_code']}) at "
                       f"{stopped['time_utc']}: {stopped['reason']}")
    if "exported" in st:
        table.add_row("exported", st["exported"])
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add ``paper``, ``live`` and ``status`` to the ``coinrl`` app."""

    def _banner(mode: str) -> Callable[[Any], None]:
        def show(runner: Any) -> None:
            err_console.print(
                f"{mode} trading {runner.env.broker.symbol} run {runner.journal.run_id}, journal "
                f"{runner.journal.path}; Ctrl-C stops safely"
            )
        return show

    def _guarded(fn: Callable[[], int]) -> int:
        """Errors before the first decision (bad bundle, keys, symbol, journal) end the command
        with one clear line and a distinct exit status; they are never retried in a loop."""
        from coinrl.live.runner import ExitCode
        from coinrl.pipeline.errors import AuthenticationError, CoinrlError, TemporaryExchangeError

        try:
            return fn()
        except AuthenticationError as e:
            code, line = ExitCode.CRITICAL, str(e)
        except TemporaryExchangeError as e:  # not a configuration problem: try again later
            code, line = ExitCode.UNREACHABLE, f"the exchange could not be reached: {e}"
        except CoinrlError as e:
            code, line = ExitCode.CONFIG, str(e)
        err_console.print(f"error: {' '.join(line.split())}", markup=False, highlight=False,
                          soft_wrap=True)
        raise typer.Exit(int(code))

    def _decision_line(d: Mapping[str, Any]) -> None:
        target = d.get("target_exposure")
        equity = d.get("equity_quote")
        console.print(
            f"{d['bar']}  {d.get('verdict') or '-'}  target "
            f"{'-' if target is None else format(float(target), '.4g')}  orders "
            f"{', '.join(d['orders']) or 'none'}  fills {d['fills']}  equity "
            f"{'-' if equity is None else format(float(equity), '.2f')}"
            + (f"  risk {', '.join(d['risk_events'])}" if d["risk_events"] else ""),
            markup=False, highlight=False, soft_wrap=True,
        )

    def _finish(code: int) -> None:
        from coinrl.live.runner import ExitCode

        name = ExitCode(code).name
        (console if code == 0 else err_console).print(f"session ended: {name} (exit {code})")
        raise typer.Exit(code)

    @app.command("paper")
    def paper_cmd(
        bundle: Annotated[Path, typer.Argument(help="Model bundle (folder or zip).")],
        exchange: Annotated[str, typer.Option(help="ccxt exchange id.")] = "binance",
        exchange_url: Annotated[str | None, typer.Option("--exchange-url", help="Base URL (the emulator).")] = None,
        trusted_keys: Annotated[Path | None, typer.Option("--trusted-keys", help="Refuse a bundle not signed by one of these public keys (coinrl bundle keygen).")] = None,
        symbol: Annotated[str | None, typer.Option(help="Market (default: the bundle's).")] = None,
        timeframe: Annotated[str | None, typer.Option(help="Bar size (default: the bundle's).")] = None,
        journal: Annotated[Path | None, typer.Option(help="Journal file (an existing one continues its run).")] = None,
        run_id: Annotated[str | None, typer.Option(help="Run id of a new journal.")] = None,
        risk: Annotated[Path | None, typer.Option(help="RiskConfig YAML.")] = None,
        max_bars: Annotated[int | None, typer.Option(help="Stop after this many decisions.")] = None,
        flatten_on_exit: Annotated[bool, typer.Option(help="Close the position when stopped.")] = False,
        reload_every_bars: Annotated[int, typer.Option(help="Check the bundle for a new version every N bars (0: never).")] = 1,
        max_clock_skew_ms: Annotated[float | None, typer.Option(help="Largest accepted clock skew, ms.")] = 1000.0,
        no_clock_check: Annotated[bool, typer.Option("--no-clock-check", help="Skip the clock-skew check (an emulator replaying history).")] = False,
        wandb: Annotated[str, typer.Option(help="W&B tracking: disabled|offline|online.")] = "disabled",
        allow_symbol_mismatch: Annotated[bool, typer.Option("--allow-symbol-mismatch", help="Trade a market other than the bundle's own (journalled).")] = False,
    ) -> None:
        """Paper-trade a bundle on live market data (simulated fills; no keys, no orders)."""
        code = _guarded(lambda: run_paper(
            bundle, exchange=exchange, exchange_url=exchange_url, symbol=symbol,
            timeframe=timeframe, journal_path=journal, run_id=run_id, risk_path=risk,
            max_bars=max_bars, flatten_on_exit=flatten_on_exit,
            reload_every_bars=reload_every_bars,
            max_clock_skew_ms=None if no_clock_check else max_clock_skew_ms,
            wandb_mode=_wandb_mode(wandb), on_start=_banner("paper"), trusted_keys=trusted_keys,
            allow_symbol_mismatch=allow_symbol_mismatch, on_decision=_decision_line,
        ))
        _finish(code)

    @app.command("live")
    def live_cmd(
        bundle: Annotated[Path, typer.Argument(help="Model bundle (folder or zip).")],
        live: Annotated[bool, typer.Option("--live", help="Required: send REAL orders.")] = False,
        yes: Annotated[bool, typer.Option("--yes", help="Confirm without the prompt.")] = False,
        exchange: Annotated[str, typer.Option(help="ccxt exchange id.")] = "binance",
        exchange_url: Annotated[str | None, typer.Option("--exchange-url", help="Base URL (the emulator).")] = None,
        trusted_keys: Annotated[Path | None, typer.Option("--trusted-keys", help="Refuse a bundle not signed by one of these public keys (coinrl bundle keygen).")] = None,
        key_file: Annotated[Path | None, typer.Option(help="API key file (default: env vars, then ~/.config/coinrl/keys.json).")] = None,
        symbol: Annotated[str | None, typer.Option(help="Market (default: the bundle's).")] = None,
        timeframe: Annotated[str | None, typer.Option(help="Bar size (default: the bundle's).")] = None,
        journal: Annotated[Path | None, typer.Option(help="Journal file (an existing one continues its run).")] = None,
        run_id: Annotated[str | None, typer.Option(help="Run id of a new journal.")] = None,
        risk: Annotated[Path | None, typer.Option(help="RiskConfig YAML.")] = None,
        max_bars: Annotated[int | None, typer.Option(help="Stop after this many decisions.")] = None,
        flatten_on_exit: Annotated[bool, typer.Option(help="Close the position when stopped.")] = False,
        reload_every_bars: Annotated[int, typer.Option(help="Check the bundle for a new version every N bars (0: never).")] = 1,
        max_clock_skew_ms: Annotated[float | None, typer.Option(help="Largest accepted clock skew, ms.")] = 1000.0,
        no_clock_check: Annotated[bool, typer.Option("--no-clock-check", help="Skip the clock-skew check (an emulator replaying history).")] = False,
        wandb: Annotated[str, typer.Option(help="W&B tracking: disabled|offline|online.")] = "disabled",
        allow_symbol_mismatch: Annotated[bool, typer.Option("--allow-symbol-mismatch", help="Trade a market other than the bundle's own (journalled).")] = False,
    ) -> None:
        """Trade a bundle with REAL orders (needs --live and a confirmation)."""
        confirmed = yes
        if live and not yes:
            target = symbol or "the bundle's market"
            confirmed = typer.confirm(
                f"Send REAL orders on {exchange} for {target}?", default=False, err=True
            )
        code = _guarded(lambda: run_live(
            bundle, live=live, confirmed=confirmed, exchange=exchange, exchange_url=exchange_url,
            key_file=key_file, symbol=symbol, timeframe=timeframe, journal_path=journal,
            run_id=run_id, risk_path=risk, max_bars=max_bars, flatten_on_exit=flatten_on_exit,
            reload_every_bars=reload_every_bars,
            max_clock_skew_ms=None if no_clock_check else max_clock_skew_ms,
            wandb_mode=_wandb_mode(wandb), on_start=_banner("LIVE"), trusted_keys=trusted_keys,
            allow_symbol_mismatch=allow_symbol_mismatch, on_decision=_decision_line,
        ))
        _finish(code)

    @app.command("status")
    def status_cmd(
        journal: Annotated[Path, typer.Option(help="Journal of the session.")],
        export: Annotated[Path | None, typer.Option(help="Also export the journal to this Parquet file.")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    ) -> None:
        """Show a trading session's state from its journal."""
        st = run_status(journal, export=export)
        if as_json:
            import json

            console.print_json(json.dumps(st))
        else:
            _print_status(st)


def _wandb_mode(value: str) -> Literal["disabled", "offline", "online"]:
    if value == "disabled":
        return "disabled"
    if value == "offline":
        return "offline"
    if value == "online":
        return "online"
    raise ConfigError(f"--wandb must be disabled, offline or online, got {value!r}")


__all__ = [
    "DEFAULT_RUNS_DIR",
    "default_journal_path",
    "register",
    "run_live",
    "run_paper",
    "run_session",
    "run_status",
]
