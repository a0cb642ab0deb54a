"""The ``coinrl`` command line.

typer (on click) gives typed options, ``--help`` on every level and shell completion; rich gives
progress bars and tables. Heavy imports (pandas, ccxt, torch) happen inside the commands so
``coinrl --help`` stays instant. Library errors (:class:`CoinrlError`) are shown as one clear
line and exit with status 2; anything else is a bug and shows its traceback.
"""

from __future__ import annotations

import logging
import re
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from coinrl.pipeline.errors import CoinrlError, DataError
from coinrl.pipeline.logutil import setup_logging

from .console import console, err_console, print_metrics_table, progress_bar

logger = logging.getLogger(__name__)

app = typer.Typer(
    help="coinrl: train RL agents to trade crypto, backtest them, run them paper or live.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(
    help="Download, ingest, update, list and featurise market data.", no_args_is_help=True
)
emulator_app = typer.Typer(
    help="The offline exchange emulator (Binance REST subset on 127.0.0.1).", no_args_is_help=True
)
app.add_typer(data_app, name="data")
app.add_typer(emulator_app, name="emulator")


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        console.print(f"coinrl {version('coinrl')}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: Annotated[int, typer.Option(
        "-v", "--verbose", count=True, help="More logging: metric dumps and debug (-vv: libraries too).")] = 0,
    quiet: Annotated[int, typer.Option("-q", "--quiet", count=True, help="Less logging (warnings only).")] = 0,
    version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the installed coinrl version.")] = False,
) -> None:
    """-q/-v may come before or after the subcommand (``coinrl train -v ...``)."""
    setup_logging(verbose - quiet)


_VERBOSITY_FLAGS = re.compile(r"^(-v+|-q+|--verbose|--quiet)$")


def hoist_verbosity_flags(argv: list[str]) -> list[str]:
    """Move ``-q``/``-v`` (and ``-vv``, ``--verbose``, ``--quiet``) anywhere before ``--`` to
    the front, where the root command reads them, so ``coinrl train -v CONFIG`` works too."""
    end = argv.index("--") if "--" in argv else len(argv)
    flags = [a for a in argv[:end] if _VERBOSITY_FLAGS.match(a)]
    rest = [a for a in argv[:end] if not _VERBOSITY_FLAGS.match(a)]
    return flags + rest + argv[end:]


def _fmt_ts(ts_ms: int | None) -> str:
    if ts_ms is None:
        return "-"
    import pandas as pd

    return pd.Timestamp(int(ts_ms), unit="ms", tz="UTC").strftime("%Y-%m-%dT%H:%MZ")


def _stored_name(symbol: str, exchange: str, timeframe: str) -> str:
    sym = (symbol or "UNKNOWN").replace("/", "-").replace(":", "_")
    return f"{exchange or 'unknown'}_{sym}_{timeframe}.parquet"


# --------------------------------------------------------------------------- data


@data_app.command("ingest")
def data_ingest(
    paths: Annotated[list[Path] | None, typer.Argument(help="Files to ingest (CSV, feather, parquet).")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the cleaned Parquet files.")] = Path("coinrl_data"),
    fmt: Annotated[str, typer.Option("--format", help="Input format, or 'auto' to detect.")] = "auto",
    sample: Annotated[bool, typer.Option("--sample", help="Ingest the packaged hourly BTC/USD sample.")] = False,
    duplicates: Annotated[str, typer.Option(help="Conflicting duplicate bars: error|first|last.")] = "last",
    gaps: Annotated[str, typer.Option(help="Missing bars: report|error|ffill.")] = "report",
    invalid: Annotated[str, typer.Option(help="Invalid rows (NaN, high<low, ...): error|drop.")] = "drop",
    symbol: Annotated[str | None, typer.Option(
        help="Market of files that do not say it, e.g. BTC/USDT (names the stored file).")] = None,
    exchange: Annotated[str | None, typer.Option(
        help="Exchange of files that do not say it, e.g. binance (names the stored file).")] = None,
) -> None:
    """Read exchange exports, clean them, store Parquet and print what was found and fixed.

    A stored series is never replaced: a file of the same market is merged only when the bars
    both hold are identical; anything else is refused (use --symbol/--exchange or --out).
    """
    from rich.table import Table

    from coinrl.pipeline.clean import CleanConfig, preprocess_data
    from coinrl.pipeline.config import validate_config
    from coinrl.pipeline.formats import read_ohlcv
    from coinrl.pipeline.store import merge_into_store

    clean = validate_config(
        CleanConfig, {"duplicates": duplicates, "gaps": gaps, "invalid": invalid}, "command line"
    )
    sources: list[Path | str] = list(paths or [])
    if sample:
        sources.insert(0, "<packaged sample>")
    if not sources:
        raise CoinrlError("nothing to ingest: pass file paths, or --sample for the packaged sample")
    table = Table(title="ingested")
    stored: list[Path] = []
    for col in ("source", "format", "symbol", "tf", "rows", "from", "to", "gaps", "fixes", "stored"):
        table.add_column(col, overflow="fold")
    with progress_bar(transient=True) as prog:
        task = prog.add_task("ingest", total=len(sources))
        for src in sources:
            if src == "<packaged sample>":
                from coinrl.pipeline.sample import load_sample

                df = preprocess_data(load_sample(), clean)
                df.attrs.setdefault("format", "coinrl-sample")
            else:
                df = read_ohlcv(src, fmt=fmt, clean=clean)
            rep = dict(df.attrs.get("clean_report", {}))
            for key, given in (("symbol", symbol), ("exchange", exchange)):
                found = df.attrs.get(key) or ""
                if given and found and found != given:
                    raise DataError(f"{src} says its {key} is {found!r}, --{key} says {given!r}; drop --{key}")
                df.attrs[key] = given or found
            name = _stored_name(df.attrs["symbol"], df.attrs["exchange"], df.attrs.get("timeframe", ""))
            if src == "<packaged sample>":
                name = name.replace(".parquet", "_sample.parquet")
            dest = out / name
            existed = dest.exists()
            _, n_new = merge_into_store(df, dest)
            fixes = []
            for key in ("n_duplicates_identical", "n_duplicates_conflicting", "n_filled", "n_unsorted_fixed"):
                if rep.get(key):
                    fixes.append(f"{key.removeprefix('n_')}={rep[key]}")
            inv = rep.get("n_invalid") or {}
            if isinstance(inv, dict) and sum(inv.values()):
                fixes.append(f"invalid={sum(inv.values())}")
            if rep.get("reversed"):
                fixes.append("reversed")
            if df.attrs.get("n_volume_swapped"):
                fixes.append(f"volume_swapped={df.attrs['n_volume_swapped']}")
            if dest not in stored:
                stored.append(dest)
            table.add_row(
                Path(str(src)).name,
                str(df.attrs.get("format", "")),
                str(df.attrs.get("symbol", "")),
                str(df.attrs.get("timeframe", "")),
                f"{len(df):,}",
                _fmt_ts(int(df["ts_ms"].iloc[0]) if len(df) else None),
                _fmt_ts(int(df["ts_ms"].iloc[-1]) if len(df) else None),
                f"{rep.get('n_gaps', 0)} (max {rep.get('largest_gap_bars', 0)})",
                ", ".join(fixes) or "-",
                f"{dest.name} (+{n_new:,} bars)" if existed else dest.name,
            )
            prog.advance(task)
    console.print(table)
    console.print(f"stored {len(stored)} file(s) in {out}: " + ", ".join(p.name for p in stored))


@data_app.command("list")
def data_list(
    directory: Annotated[Path, typer.Argument(help="Folder holding stored Parquet files.")] = Path("coinrl_data"),
) -> None:
    """Show what is stored: symbol, timeframe, range, rows and gaps."""
    from rich.table import Table

    from coinrl.pipeline.store import iter_catalog

    if not directory.is_dir():
        raise CoinrlError(f"{directory} is not a folder; pass the folder given to ingest/fetch --out")
    table = Table(title=f"stored data in {directory}")
    for col in ("file", "symbol", "tf", "rows", "from", "to", "gaps", "max gap"):
        table.add_column(col, overflow="fold")
    n = 0
    for e in iter_catalog(directory):
        n += 1
        table.add_row(
            str(e.path.relative_to(directory)), e.symbol, e.timeframe, f"{e.rows:,}",
            _fmt_ts(e.first_ts_ms), _fmt_ts(e.last_ts_ms), str(e.n_gaps), f"{e.largest_gap_bars} bars",
        )
    if n == 0:
        console.print(f"no coinrl data in {directory} (try: coinrl data ingest --sample --out {directory})")
        return
    console.print(table)


@data_app.command("fetch")
def data_fetch(
    symbol: Annotated[str, typer.Argument(help="Unified ccxt symbol, e.g. BTC/USDT or BTC/USDT:USDT.")],
    timeframe: Annotated[str, typer.Option("--timeframe", "-t", help="Bar size, e.g. 1m, 1h, 1d.")] = "1h",
    since: Annotated[str, typer.Option(help="Start (ISO date/time UTC, or epoch ms).")] = "2024-01-01",
    until: Annotated[str | None, typer.Option(help="End (ISO UTC or epoch ms); default now.")] = None,
    exchange: Annotated[str, typer.Option(help="Any ccxt exchange id.")] = "binance",
    exchange_url: Annotated[str | None, typer.Option(help="Override the API base URL (e.g. the emulator).")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Parquet file to write.")] = None,
) -> None:
    """Download closed candles through ccxt (resumable: rerun after an interruption)."""
    from coinrl.pipeline.fetch import fetch_data

    dest = out or Path("coinrl_data") / _stored_name(symbol, exchange, timeframe)
    with progress_bar() as prog:
        task = prog.add_task(f"fetch {symbol} {timeframe}", total=None)

        def _progress(done: int, total: int) -> None:
            prog.update(task, completed=done, total=total or None)

        df = fetch_data(
            symbol, timeframe, since, dest, exchange=exchange, end_time=until,
            exchange_url=exchange_url, progress=_progress,
        )
    console.print(
        f"stored {len(df):,} closed candles {symbol} {timeframe} "
        f"{_fmt_ts(int(df['ts_ms'].iloc[0]) if len(df) else None)} → "
        f"{_fmt_ts(int(df['ts_ms'].iloc[-1]) if len(df) else None)} in {dest}"
    )


@data_app.command("update")
def data_update(
    files: Annotated[list[Path], typer.Argument(help="Stored Parquet files to bring up to date.")],
    exchange_url: Annotated[str | None, typer.Option(help="Override the API base URL (e.g. the emulator).")] = None,
    every: Annotated[str | None, typer.Option(help="Repeat on a schedule, e.g. 1h (runs until stopped).")] = None,
    max_runs: Annotated[int | None, typer.Option(help="With --every: stop after this many runs.")] = None,
) -> None:
    """Append only new closed candles to stored files (idempotent); optionally on a schedule."""
    from coinrl.pipeline.fetch import UpdateJob, schedule_updates, update_data
    from coinrl.pipeline.store import read_metadata

    jobs = []
    for f in files:
        meta = read_metadata(f)
        if not meta.get("symbol") or not meta.get("timeframe") or not meta.get("exchange"):
            raise CoinrlError(
                f"{f} does not record its symbol/timeframe/exchange; re-create it with coinrl data fetch"
            )
        jobs.append(
            UpdateJob(
                symbol=meta["symbol"], interval=meta["timeframe"], filename=f,
                exchange=meta["exchange"], exchange_url=exchange_url,
            )
        )

    if every is None:
        for job in jobs:
            n = update_data(
                job.symbol, job.interval, job.filename, exchange=job.exchange, exchange_url=job.exchange_url
            )
            console.print(f"{job.filename}: {n} new candle(s)")
        return

    def _on_run(run: int, added: dict[str, int]) -> None:
        for name, n in added.items():
            console.print(f"run {run}: {name}: {n} new candle(s)")

    console.print(f"updating {len(jobs)} file(s) every {every}; Ctrl-C to stop")
    schedule_updates(jobs, every, max_runs=max_runs, on_run=_on_run)


@data_app.command("features")
def data_features(
    path: Annotated[Path, typer.Argument(help="Stored candles (Parquet) or any readable export.")],
    spec: Annotated[Path | None, typer.Option(help="YAML feature spec; default spec if omitted.")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Parquet file for the features.")] = None,
) -> None:
    """Compute the (causal) feature frame of a candle file and show a summary."""
    from rich.table import Table

    from coinrl.pipeline.config import load_config
    from coinrl.pipeline.features import FeatureSpec, default_feature_spec, feature_engineering
    from coinrl.pipeline.formats import read_ohlcv
    from coinrl.pipeline.store import atomic_write_bytes

    fspec = load_config(FeatureSpec, spec) if spec else default_feature_spec()
    candles = read_ohlcv(path)
    if fspec.fitted_kinds:  # e.g. hmm_regime: fitted on training rows only, as in training
        from coinrl.pipeline.splits import fit_spec_on_train

        fspec = fit_spec_on_train(candles, fspec)
        console.print(f"{', '.join(fspec.fitted_kinds)} fitted on the default split's training rows")
    with progress_bar(transient=True) as prog:
        task = prog.add_task("features", total=1)
        feats = feature_engineering(candles, fspec)
        prog.advance(task)
    table = Table(title=f"{len(feats.columns) - 1} features over {len(feats):,} rows")
    for col in ("feature", "mean", "std", "min", "max"):
        table.add_column(col)
    desc = feats.drop(columns=["ts_ms"]).describe().T
    for name, row in desc.iterrows():
        table.add_row(str(name), f"{row['mean']:.4g}", f"{row['std']:.4g}", f"{row['min']:.4g}", f"{row['max']:.4g}")
    console.print(table)
    if out is not None:
        atomic_write_bytes(out, lambda tmp: feats.to_parquet(tmp, index=False))
        console.print(f"features written to {out}")


# --------------------------------------------------------------------------- agents


@app.command("train")
def train(
    config: Annotated[Path, typer.Argument(help="Experiment YAML (experiments/configs/*.yaml or a bundle's config.yaml).")],
    overrides: Annotated[
        list[str] | None, typer.Argument(help="key.path=value overrides, e.g. train.total_timesteps=50000.")
    ] = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue the run in OUT/<name> from its latest checkpoint (same run only).")] = False,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Delete the run in OUT/<name> and start a new one.")] = False,
    out: Annotated[Path, typer.Option("--out", "-o", help="Parent folder of the run folder.")] = Path("runs"),
) -> None:
    """Train an agent (PPO/DQN/A2C/SAC/RecurrentPPO), validate it beside the baselines, save its bundle.

    A run folder holds one run: an occupied OUT/<name> is refused unless --resume (same
    config and data) or --overwrite.
    """
    import json

    from coinrl.experiments.train_cmd import EVALUATION_FILE, run_train

    try:
        bundle = run_train(config, list(overrides or []), resume, out, overwrite=overwrite)
    except KeyboardInterrupt:
        err_console.print(_resume_hint(config, list(overrides or []), out), markup=False)
        raise typer.Exit(130) from None
    report = json.loads((bundle.parent / EVALUATION_FILE).read_text(encoding="utf-8"))
    print_metrics_table(
        f"{bundle.parent.name}: the bundled policy on the validation split (fees and slippage included)",
        {"agent": report["agent"], **report["baselines"]}, (), (),
    )
    console.print(f"bundle written to {bundle}")


def _resume_hint(config: Path, overrides: list[str], out: Path) -> str:
    """What an interrupted ``coinrl train`` says: where it can continue from, and the command."""
    from coinrl.agents.train import latest_checkpoint
    from coinrl.experiments.config import load_experiment_config

    again = shlex.join(["coinrl", "train", str(config), *overrides, "--out", str(out), "--resume"])
    ckpt = latest_checkpoint(out / load_experiment_config(config, overrides).name)
    where = (
        f"its latest checkpoint, step {int(ckpt.name.removeprefix('step_')):,}" if ckpt is not None
        else "the start (no checkpoint yet: train.checkpoint_every_steps)"
    )
    return f"interrupted; the run continues from {where} with:\n  {again}"


@app.command("evaluate")
def evaluate(
    bundle: Annotated[Path, typer.Argument(help="Bundle folder or zip written by coinrl train.")],
    split: Annotated[str, typer.Option(help="train | validation | test | full.")] = "test",
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the report as JSON here.")] = None,
) -> None:
    """Evaluate a bundle on a split with its own features and normaliser, beside the baselines."""
    import json

    from coinrl.experiments.train_cmd import run_evaluate

    rep = run_evaluate(bundle, split)
    warnings = []
    if not rep["meta"].get("data_matches_bundle", True):
        warnings.append("the data differs from what the bundle was trained on")
    print_metrics_table(
        f"{bundle} on the {split} split (fees and slippage included)",
        {"agent": rep["agent"], **rep["baselines"]}, (), warnings, rep.get("policy"),
    )
    if json_out is not None:
        json_out.write_text(json.dumps(rep, indent=2, sort_keys=True))
        console.print(f"report written to {json_out}")


# --------------------------------------------------------------------------- emulator


@emulator_app.command("serve")
def emulator_serve(
    data: Annotated[
        list[str], typer.Option("--data", help="Candle files to serve: PATH or SYMBOL=PATH (repeatable).")
    ],
    port: Annotated[int, typer.Option(help="TCP port (0: any free port).")] = 8765,
    host: Annotated[str, typer.Option(help="Bind address (loopback only by default).")] = "127.0.0.1",
    clock: Annotated[
        str,
        typer.Option(help="end | real | fixed:<ms|ISO> | replay:<ms|ISO>:<speed, e.g. 1h/50>"),
    ] = "end",
) -> None:
    """Serve stored candles over Binance's REST API (ccxt's binance client can point at it)."""
    from coinrl.live.emulator import serve

    def _ready(url: str) -> None:
        console.print(f"emulator listening on {url} (ccxt: exchange_url={url}); Ctrl-C to stop")

    serve(host, port, data, clock=clock, on_ready=_ready)


def _register_command_modules() -> None:
    """Command groups that live in their own modules add themselves here (``register(app)``).

    Each module imports its heavy dependencies inside its commands, so ``coinrl --help`` stays
    fast.
    """
    from . import backtest_cmd, bundle_cmd, live_cmd, retrain_cmd, tune_cmd

    for module in (backtest_cmd, tune_cmd, live_cmd, bundle_cmd, retrain_cmd):
        module.register(app)


_register_command_modules()


def main() -> None:
    """Console-script entry point."""
    try:
        app(args=hoist_verbosity_flags(sys.argv[1:]), prog_name="coinrl")
    except CoinrlError as e:
        err_console.print(f"[red]error:[/red] {e}")
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
