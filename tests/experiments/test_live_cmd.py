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
    return ReplayClock.bars(int(FRAME.ts_ms.iloc[K0]) + 1, HOUR, 250.0)


def _invoke(args: list[str], **kw):
    return CliRunner().invoke(app, args, catch_exceptions=False, **kw)


def test_paper_session_runs_and_status_reads_it_back(bundle, tmp_path):
    journal = tmp_path / "paper.sqlite"
    with emulator(FRAME, K0, clock=_replay()) as (server, _):
        res = _invoke(["paper", str(bundle), "--exchange-url", server.base_url, "--journal",
                       str(journal), "--max-bars", "3", "--no-clock-check",
                       "--reload-every-bars", "0", "--run-id", "clipaper"])
        orders = server.orders()
    assert res.exit_code == ExitCode.OK, res.output
    assert orders == []  # paper never sends an order
    st = _invoke(["status", "--journal", str(journal), "--json", "--export",
                  str(tmp_path / "j.parquet")])
    assert st.exit_code == 0, st.output
    info = json.loads(st.stdout)
    assert (info["run_id"], info["mode"], info["symbol"]) == ("clipaper", "paper", SYMBOL)
    assert info["decisions"] == 3
    assert info["stopped"]["exit_name"] == "OK"
    assert info["integrity"] == "ok"
    assert (tmp_path / "j.parquet").is_file()


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


def test_bad_keys_and_a_wrong_symbol_are_one_clear_error_not_a_crash(bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("COINRL_BINANCE_API_KEY", KEY)
    monkeypatch.setenv("COINRL_BINANCE_API_SECRET", "not-the-secret")
    with emulator(FRAME, K0) as (server, _):
        base = ["live", str(bundle), "--live", "--yes", "--exchange-url", server.base_url,
                "--no-clock-check", "--journal", str(tmp_path / "k.sqlite")]
        bad_keys = _invoke(base)
        monkeypatch.setenv("COINRL_BINANCE_API_SECRET", SECRET)
        wrong = _invoke([*base, "--symbol", "SOLL/USDT"])
        requests = len(server.requests("/api/v3/account"))
    assert bad_keys.exit_code == ExitCode.CRITICAL
    assert "API key" in bad_keys.output
    assert "Traceback" not in bad_keys.output
    assert SECRET not in bad_keys.output
    assert wrong.exit_code == ExitCode.CONFIG
    assert "SOLL/USDT" in wrong.output
    assert "SOL/USDT" in wrong.output
    assert requests <= 2  # one balance check per attempt: a rejected key is not retried


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
