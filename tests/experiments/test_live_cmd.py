"""``coinrl paper``, ``coinrl live`` and ``coinrl status`` through the real CLI app against the
emulator: a paper session runs and journals; live refuses to send anything without ``--live``
and a confirmation; bad keys and a wrong symbol end with one clear line and a distinct exit
status (no traceback, no retry loop); status reads the journal back."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "live"))
from live_helpers import KEY, SECRET, SYMBOL, candles, emulator, tiny_bundle  # noqa: E402

from coinrl.experiments.cli import app  # noqa: E402
from coinrl.live.emulator import ReplayClock  # noqa: E402
from coinrl.live.runner import ExitCode  # noqa: E402

K0 = 160
FRAME = candles(K0 + 40, seed=9)
HOUR = 3_600_000


@pytest.fixture(scope="module")
def bundle(request) -> Path:
    cache = Path(request.config.cache.mkdir("coinrl-live-tiny-bundle"))
    return tiny_bundle(cache / "bundle")


@pytest.fixture
def keys(monkeypatch):
    monkeypatch.setenv("COINRL_BINANCE_API_KEY", KEY)
    monkeypatch.setenv("COINRL_BINANCE_API_SECRET", SECRET)


def _replay() -> ReplayClock:
    return ReplayClock.bars(int(FRAME.ts_ms.iloc[K0]) + 1, HOUR, 1000.0)  # 40 bars of data: slack on a loaded machine


def _invoke(args: list[str], **kw):
    return CliRunner().invoke(app, args, catch_exceptions=False, **kw)


@pytest.mark.slow
def test_paper_session_runs_and_status_reads_it_back(bundle, tmp_path):
    journal = tmp_path / "paper.sqlite"
    with emulator(FRAME, K0, clock=_replay()) as (server, _):
        res = _invoke(["paper", str(bundle), "--exchange-url", server.base_url, "--journal",
                       str(journal), "--max-bars", "3", "--no-clock-check",
                       "--reload-every-bars", "0", "--run-id", "clipaper"])
        orders = server.orders()
    assert res.exit_code == ExitCode.OK, res.output
    assert orders == []  # paper never sends an order
    # one line per decision: bar time (UTC ISO), verdict, target, orders, fills, equity
    lines = [ln for ln in res.stdout.splitlines() if ln[:4].isdigit()]
    assert len(lines) == 3, res.stdout
    assert all("+00:00" in ln and "target" in ln and "equity" in ln for ln in lines)
    st = _invoke(["status", "--journal", str(journal), "--json", "--export",
                  str(tmp_path / "j.parquet")])
    assert st.exit_code == 0, st.output
    info = json.loads(st.stdout)
    assert (info["run_id"], info["mode"], info["symbol"]) == ("clipaper", "paper", SYMBOL)
    assert info["decisions"] == 3
    assert info["stopped"]["exit_name"] == "OK"
    assert info["integrity"] == "ok"
    assert (tmp_path / "j.parquet").is_file()
    # times in UTC ISO, the PnL since the first sync
    assert info["started_utc"].endswith("+00:00")
    assert info["stopped"]["time_utc"].endswith("+00:00")
    assert info["last_decision"]["bar_utc"].startswith("20")
    assert info["books"]["pnl_quote"] == pytest.approx(info["books"]["equity_quote"] - 10_000.0)
    table = _invoke(["status", "--journal", str(journal)])
    assert table.exit_code == 0, table.output
    assert "+00:00" in table.stdout


def test_live_without_the_flag_or_the_confirmation_sends_nothing(bundle, tmp_path, keys):
    with emulator(FRAME, K0) as (server, _):
        url = server.base_url
        no_flag = _invoke(["live", str(bundle), "--exchange-url", url, "--journal",
                           str(tmp_path / "a.sqlite"), "--yes"])
        declined = _invoke(["live", str(bundle), "--live", "--exchange-url", url, "--journal",
                            str(tmp_path / "b.sqlite")], input="n\n")
        orders = server.orders()
    assert no_flag.exit_code == ExitCode.CONFIG
    assert "--live" in no_flag.output
    assert declined.exit_code == ExitCode.CONFIG
    assert "not confirmed" in declined.output
    assert orders == []
    assert not (tmp_path / "a.sqlite").exists()
    assert not (tmp_path / "b.sqlite").exists()


@pytest.mark.slow
def test_bad_keys_and_a_wrong_symbol_are_one_clear_error_not_a_crash(bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("COINRL_BINANCE_API_KEY", KEY)
    monkeypatch.setenv("COINRL_BINANCE_API_SECRET", "not-the-secret")
    with emulator(FRAME, K0) as (server, _):
        base = ["live", str(bundle), "--live", "--yes", "--exchange-url", server.base_url,
                "--no-clock-check", "--journal", str(tmp_path / "k.sqlite")]
        bad_keys = _invoke(base)
        monkeypatch.setenv("COINRL_BINANCE_API_SECRET", SECRET)
        wrong = _invoke([*base, "--symbol", "SOLL/USDT", "--allow-symbol-mismatch"])
        requests = len(server.requests("/api/v3/account"))
    assert bad_keys.exit_code == ExitCode.CRITICAL
    assert "API key" in bad_keys.output
    assert "Traceback" not in bad_keys.output
    assert SECRET not in bad_keys.output
    assert wrong.exit_code == ExitCode.CONFIG
    assert "SOLL/USDT" in wrong.output
    assert "SOL/USDT" in wrong.output
    assert requests <= 2  # one balance check per attempt: a rejected key is not retried


@pytest.mark.slow
def test_live_session_trades_on_the_emulator(bundle, tmp_path, keys):
    journal = tmp_path / "live.sqlite"
    # a small SOL holding to start with: the first decision (flat, half or full) must trade it
    with emulator(FRAME, K0, clock=_replay(), balances={"USDT": 10_000.0, "SOL": 10.0}) as (server, _):
        res = _invoke(["live", str(bundle), "--live", "--yes", "--exchange-url",
                       server.base_url, "--journal", str(journal), "--max-bars", "3",
                       "--no-clock-check", "--reload-every-bars", "0", "--run-id", "clilive",
                       "--flatten-on-exit"])
        orders = server.orders()
        balances = server.balances(KEY)
    assert res.exit_code == ExitCode.OK, res.output
    assert orders
    assert all(o.client_order_id.startswith("clilive-") for o in orders)
    assert balances.get("SOL", (0.0, 0.0)) == (0.0, 0.0)  # flattened at the end
    info = json.loads(_invoke(["status", "--journal", str(journal), "--json"]).stdout)
    assert info["mode"] == "live"
    assert info["decisions"] == 3


def _one_error_line(output: str) -> str:
    """The one line the error is (log records of the steps before it aside)."""
    import re

    log = re.compile(r"^\d{4}-\d\d-\d\dT\S+ +(DEBUG|INFO|WARNING) ")
    lines = [ln for ln in output.splitlines() if ln.strip() and not log.match(ln)]
    assert len(lines) == 1, output
    assert "Traceback" not in output
    return lines[0]


@pytest.mark.slow
def test_a_bundle_trained_on_another_symbol_is_refused_unless_allowed(bundle, tmp_path):
    from live_helpers import MARKET, ohlcv

    from coinrl.live.emulator import EmulatorServer, MarketSpec
    from coinrl.live.journal import Journal

    other = "AVAX/USDT"
    spec = MarketSpec(**{**MARKET.__dict__, "symbol": other, "base": "AVAX"})
    server = EmulatorServer({SYMBOL: ohlcv(FRAME), other: ohlcv(FRAME)}, clock=_replay(),
                            markets={SYMBOL: MARKET, other: spec})
    server.start()
    try:
        base = ["paper", str(bundle), "--exchange-url", server.base_url, "--no-clock-check",
                "--reload-every-bars", "0", "--symbol", other, "--max-bars", "2"]
        refused = _invoke([*base, "--journal", str(tmp_path / "a.sqlite")])
        allowed = _invoke([*base, "--journal", str(tmp_path / "b.sqlite"), "--allow-symbol-mismatch"])
    finally:
        server.stop()
    assert refused.exit_code == ExitCode.CONFIG
    line = _one_error_line(refused.output)
    assert "trained on SOL/USDT" in line
    assert "--allow-symbol-mismatch" in line
    assert not (tmp_path / "a.sqlite").exists()
    assert allowed.exit_code == ExitCode.OK, allowed.output
    with Journal(tmp_path / "b.sqlite") as j:
        note = j.events("model")[0].payload
    assert (note["status"], note["bundle_symbol"], note["symbol"]) == ("symbol_mismatch", SYMBOL, other)


def _rehash(folder: Path, name: str) -> None:
    import hashlib

    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"][name] = hashlib.sha256((folder / name).read_bytes()).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.slow
def test_a_corrupted_bundle_is_one_clear_line_and_exit_2(bundle, tmp_path):
    import shutil

    from coinrl.agents.bundle import load_model, save_model

    zipped = save_model(load_model(bundle), tmp_path / "b.zip")
    blob = bytearray(Path(zipped).read_bytes())
    blob[len(blob) // 2: len(blob) // 2 + 64] = b"\x00" * 64
    Path(zipped).write_bytes(bytes(blob))
    rehashed = tmp_path / "rehashed"
    shutil.copytree(bundle, rehashed)
    model = bytearray((rehashed / "model.zip").read_bytes())
    model[len(model) // 2: len(model) // 2 + 256] = b"\xff" * 256
    (rehashed / "model.zip").write_bytes(bytes(model))
    _rehash(rehashed, "model.zip")  # the manifest agrees with the damaged file
    for damaged in (zipped, rehashed):
        res = _invoke(["paper", str(damaged), "--exchange-url", "http://127.0.0.1:9",
                       "--journal", str(tmp_path / "j.sqlite"), "--no-clock-check"])
        assert res.exit_code == ExitCode.CONFIG, res.output
        assert str(damaged) in _one_error_line(res.output)


@pytest.mark.slow
def test_an_unreachable_exchange_is_a_connection_failure_not_config(bundle, tmp_path):
    with emulator(FRAME, K0) as (server, _):
        server.faults.server_error(503, count=None)
        res = _invoke(["paper", str(bundle), "--exchange-url", server.base_url, "--journal",
                       str(tmp_path / "j.sqlite"), "--no-clock-check"])
    assert res.exit_code == ExitCode.UNREACHABLE, res.output
    assert "could not be reached" in _one_error_line(res.output)


@pytest.mark.slow
def test_a_session_whose_decisions_were_all_blocked_by_stale_data_ends_as_a_data_halt(bundle, tmp_path):
    journal = tmp_path / "stale.sqlite"
    from live_helpers import public

    with emulator(FRAME, K0, clock=_replay()) as (server, clock):
        server.faults.stale()  # the candles stop advancing; the clock runs on
        public(server).fetch_closed_candles(SYMBOL, "1h", limit=5, max_stale_bars=None)
        clock.advance(4 * HOUR)  # the data is stale before the first decision
        res = _invoke(["paper", str(bundle), "--exchange-url", server.base_url, "--journal",
                       str(journal), "--max-bars", "2", "--no-clock-check",
                       "--reload-every-bars", "0"])
    assert res.exit_code == ExitCode.DATA_HALT, res.output
    info = json.loads(_invoke(["status", "--journal", str(journal), "--json"]).stdout)
    assert info["stopped"]["exit_name"] == "DATA_HALT"
    assert info["halts"] == info["decisions"] == 2
