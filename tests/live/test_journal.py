"""The journal: append-only (triggers refuse UPDATE/DELETE), WAL + synchronous=FULL, each fill
once, committed rows survive ``kill -9``, Parquet export round-trips, secrets never stored."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from coinrl.envs.domain import Fill, Side
from coinrl.live.journal import Journal, fill_from_payload, fill_payload, log_trades
from coinrl.pipeline.errors import ConfigError, DataError


def a_fill(i: int = 1, **kw) -> Fill:
    base = {"fill_id": f"t{i}", "order_id": f"cid-{i}", "symbol": "BTC/USDT", "side": Side.BUY,
            "qty_base": 0.01 * i, "price_quote": 40_000.5, "fee_quote": 0.4, "ts_ms": 1000 * i,
            "slippage_quote": 0.08}
    base.update(kw)
    return Fill(**base)


@pytest.fixture
def journal(tmp_path: Path):
    with Journal(tmp_path / "j.sqlite", run_id="run-1") as j:
        yield j


def test_append_and_read_back_in_order(journal):
    s1 = journal.append("start", ts_ms=5, payload={"symbol": "BTC/USDT"})
    s2 = journal.append("decision", ts_ms=6, bar_ts_ms=3, payload={"target_exposure": 0.5,
                                                                    "nan": float("nan")})
    assert s2 == s1 + 1
    ev = journal.events()
    assert [e.kind for e in ev] == ["start", "decision"]
    assert ev[1].payload == {"target_exposure": 0.5, "nan": None}
    assert (ev[1].bar_ts_ms, ev[1].run_id, ev[1].ts_ms) == (3, "run-1", 6)
    assert journal.last("decision").seq == s2
    assert journal.count("start") == 1


def test_unknown_kind_is_refused(journal):
    with pytest.raises(DataError, match="unknown"):
        journal.append("gossip", ts_ms=1)  # type: ignore[arg-type]


def test_rows_can_never_be_updated_or_deleted(journal, tmp_path):
    journal.append("decision", ts_ms=1, payload={"target_exposure": 1.0})
    journal.record_fill(a_fill())
    raw = sqlite3.connect(tmp_path / "j.sqlite")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        raw.execute("UPDATE events SET payload = '{}' WHERE kind = 'decision'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        raw.execute("DELETE FROM events")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        raw.execute("UPDATE meta SET value = 'other' WHERE key = 'run_id'")
    raw.close()
    assert journal.count() == 2


def test_durability_settings_are_wal_and_synchronous_full(journal):
    conn = journal._conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_a_fill_is_journalled_once(journal):
    f = a_fill()
    assert journal.record_fill(f, bar_ts_ms=0) is True
    assert journal.record_fill(f, bar_ts_ms=0) is False
    assert log_trades(journal, [f, a_fill(2)]) == 1
    assert [x.fill_id for x in journal.fills()] == ["t1", "t2"]
    assert journal.fills()[0] == f
    with pytest.raises(DataError, match="journalled once"):
        journal.append("fill", ts_ms=1, fill_id="t1", payload=fill_payload(f))


def test_fill_payload_round_trips():
    f = a_fill(3, side=Side.SELL, liquidity="maker")
    assert fill_from_payload(fill_payload(f)) == f


def test_orders_merge_their_updates_in_order(journal):
    journal.append("order", ts_ms=1, bar_ts_ms=0, client_order_id="c1",
                   payload={"status": "intent", "qty_base": 0.1})
    journal.append("order_update", ts_ms=2, client_order_id="c1", payload={"status": "open"})
    journal.append("order_update", ts_ms=3, client_order_id="c1", payload={"status": "closed"})
    assert journal.orders() == {"c1": {"bar_ts_ms": 0, "status": "closed", "qty_base": 0.1}}


def test_reopening_continues_the_run_and_refuses_another_run_id(tmp_path):
    path = tmp_path / "j.sqlite"
    with Journal(path, run_id="abc") as j:
        j.append("start", ts_ms=1)
    with Journal(path) as j:
        assert j.run_id == "abc"
        assert j.count() == 1
    with pytest.raises(ConfigError, match="belongs to run 'abc'"):
        Journal(path, run_id="xyz")
    with pytest.raises(ConfigError, match="pass the run_id"):
        Journal(tmp_path / "new.sqlite")
    with pytest.raises(ConfigError, match="does not exist"):
        Journal.open_existing(tmp_path / "missing.sqlite")
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(ConfigError, match="not a usable coinrl journal"):
        Journal(bad, run_id="x")


def test_export_to_parquet_round_trips(journal, tmp_path):
    journal.append("start", ts_ms=1, payload={"a": 1})
    journal.record_fill(a_fill(), bar_ts_ms=7)
    out = journal.export_parquet(tmp_path / "out" / "journal.parquet")
    back = pd.read_parquet(out)
    pd.testing.assert_frame_equal(back, journal.to_frame(), check_dtype=False)
    assert back.kind.tolist() == ["start", "fill"]
    assert int(back.bar_ts_ms.iloc[1]) == 7


def test_secret_keys_and_registered_values_never_reach_a_row(journal, tmp_path):
    journal.redact("SuperSecretValue123", "MyApiKeyABC")
    journal.append("error", ts_ms=1, payload={
        "message": "auth failed for MyApiKeyABC with SuperSecretValue123",
        "api_key": "MyApiKeyABC", "nested": {"secret": "x", "ok": 1},
    })
    journal.close()
    blob = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert b"SuperSecretValue123" not in blob
    assert b"MyApiKeyABC" not in blob
    with Journal(tmp_path / "j.sqlite") as j:
        (e,) = j.events("error")
    assert e.payload == {"message": "auth failed for *** with ***", "nested": {"ok": 1}}


WRITER = textwrap.dedent("""
    import sys
    from coinrl.live.journal import Journal
    j = Journal(sys.argv[1], run_id="crash")
    i = 0
    while True:
        i += 1
        j.append("decision", ts_ms=i, bar_ts_ms=i, payload={"i": i, "pad": "x" * 200})
        print(i, flush=True)
""")


@pytest.mark.slow
def test_committed_rows_survive_kill_9(tmp_path):
    path = tmp_path / "crash.sqlite"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE,
                            text=True)
    acked = 0
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while acked < 150 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        acked = int(line)
    os.kill(proc.pid, signal.SIGKILL)  # mid-write, no cleanup, no checkpoint
    proc.wait(10)
    assert acked >= 150
    with Journal(path) as j:
        assert j.integrity_check() == "ok"
        got = [e.payload["i"] for e in j.events("decision")]
    assert len(got) >= acked  # every acknowledged row is there (and maybe one more)
    assert got == list(range(1, len(got) + 1))  # contiguous: no torn or lost row
