"""No secret anywhere: a live session (keys from the environment, debug logging of coinrl and
ccxt to a file, W&B tracking offline, the journal exported to Parquet) and a bundle saved from
an agent whose config carries the keys leave neither the API key nor its secret in any file
they wrote: logs, journal (SQLite, its WAL, the Parquet export), W&B files, bundle."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest
from live_helpers import KEY, SECRET, candles, emulator, tiny_bundle

from coinrl.agents.bundle import load_model, save_model
from coinrl.experiments.live_cmd import run_session, run_status
from coinrl.live.emulator import ReplayClock
from coinrl.live.runner import ExitCode

pytestmark = pytest.mark.slow

K0 = 160
FRAME = candles(K0 + 40, seed=13)
NEEDLES = (KEY, SECRET)


def _leaks(root: Path) -> list[str]:
    found = []
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        blob = f.read_bytes()
        found += [f"{f.relative_to(root)}: {n[:6]}..." for n in NEEDLES if n.encode() in blob]
    return found


def test_no_key_or_secret_in_logs_journal_wandb_or_bundle(tmp_path, request, monkeypatch):
    cache = Path(request.config.cache.mkdir("coinrl-live-tiny-bundle"))
    agent = load_model(tiny_bundle(cache / "bundle"))
    out = tmp_path / "out"
    # a bundle saved from a config that carries the keys: they must be scrubbed
    cfg = {**agent.experiment_config, "exchange": {"name": "binance", "api_key": KEY, "secret": SECRET}}
    bundle = save_model(dataclasses.replace(agent, experiment_config=cfg), out / "bundle")

    monkeypatch.setenv("COINRL_BINANCE_API_KEY", KEY)
    monkeypatch.setenv("COINRL_BINANCE_API_SECRET", SECRET)
    monkeypatch.setenv("WANDB_SILENT", "true")
    handler = logging.FileHandler(out / "session.log")
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    for name in ("ccxt", "urllib3"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    clock = ReplayClock.bars(int(FRAME.ts_ms.iloc[K0]) + 1, 3_600_000, 1500.0)  # slack on a loaded machine
    try:
        with emulator(FRAME, K0, clock=clock) as (server, _):
            code = run_session(
                "live", bundle, exchange_url=server.base_url, journal_path=out / "j.sqlite",
                run_id="sec", max_bars=8, reload_every_bars=1, max_clock_skew_ms=None,
                wandb_mode="offline", wandb_dir=out / "wandb", install_signals=False,
            )
            n_orders = len(server.orders())
    finally:
        root.removeHandler(handler)
        handler.close()
        root.setLevel(old_level)
    assert code == ExitCode.OK
    run_status(out / "j.sqlite", export=out / "journal.parquet")

    # the scan can see: every kind of file is there and a planted needle is found
    names = {p.name for p in out.rglob("*") if p.is_file()}
    assert {"session.log", "j.sqlite", "journal.parquet", "manifest.json"} <= names
    assert any(p.suffix == ".wandb" for p in (out / "wandb").rglob("*"))
    assert (out / "session.log").stat().st_size > 0
    assert n_orders > 0
    (tmp_path / "planted.txt").write_text(f"x{SECRET}x")
    assert _leaks(tmp_path) == [f"planted.txt: {SECRET[:6]}..."]
    (tmp_path / "planted.txt").unlink()

    assert _leaks(out) == []
