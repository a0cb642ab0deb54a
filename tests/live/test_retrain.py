"""retrain_once: windows, lineage, journal, the gate never reading training candles, crash safety."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from retrain_helpers import champion_bundle, head, market, train_config

from coinrl.live.journal import Journal
from coinrl.live.retrain import bundle_id, retrain_once, retrain_trials
from coinrl.live.retrain_config import RetrainConfig
from coinrl.pipeline.errors import ConfigError, DataError

N = 1_400
TINY = {"window_bars": 600, "gate_bars": 200, "total_timesteps": 1024, "subprocess": False,
        "seed": 5, "n_boot": 300}


@pytest.fixture(scope="module")
def frame():
    return market(N, seed=11)


@pytest.fixture(scope="module")
def champion(tmp_path_factory, frame) -> Path:
    return champion_bundle(tmp_path_factory.mktemp("champ") / "bundle", head(frame, 500), steps=1024)


def _run(champion: Path, frame, tmp: Path, tag: str, as_of: int | None = None, **over):
    cfg = RetrainConfig.model_validate({**TINY, **over})
    with Journal(tmp / f"{tag}.sqlite", run_id="live-1") as j:
        out = retrain_once(champion, frame, cfg, tmp / f"{tag}-out", j, as_of_ts_ms=as_of)
        rows = [e.payload for e in j.events("model")]
        assert j.integrity_check() == "ok"
    return out, rows


def test_a_retrain_writes_a_challenger_with_lineage_and_journals_every_step(champion, frame, tmp_path) -> None:
    out, rows = _run(champion, frame, tmp_path, "a")
    assert out.status in ("promoted", "rejected")
    assert out.trial == 1
    assert out.challenger is not None
    assert out.challenger.name == "live-1-c0001"
    manifest = json.loads((out.challenger / "manifest.json").read_text())
    lin = manifest["lineage"]
    assert lin["parent_bundle_id"] == bundle_id(champion)
    assert lin["data"]["rows"] == 600
    assert len(lin["data"]["data_fingerprint"]) == 64
    assert lin["config_diff"]["train.seed"] == [0, 5]
    # training window ends embargo_bars (warm-up 0 + window 1) before the gate slice
    assert lin["data"]["end_ts_ms"] < lin["gate"]["start_ts_ms"]
    assert lin["gate"]["start_ts_ms"] == int(frame["ts_ms"].iloc[N - 200])
    assert [r["event"] for r in rows] == ["retrain_start", "retrain_end", "retrain_gate"]
    gate = rows[-1]
    assert gate["verdict"] == out.status
    for key in ("p_better", "p_beats_cash", "dsr", "champion_total_return", "buy_and_hold_total_return"):
        assert key in gate["figures"]
    assert not any(p.name.startswith(".staging") for p in (tmp_path / "a-out").iterdir())
    with Journal(tmp_path / "other.sqlite", run_id="live-1") as j:  # another run, same folder
        with pytest.raises(ConfigError, match="already exists"):
            retrain_once(champion, frame, TINY, tmp_path / "a-out", j)
        assert retrain_trials(j) == 0


def test_the_gate_never_reads_candles_after_as_of_and_training_candles_change_only_the_challenger(
    champion, frame, tmp_path
) -> None:
    as_of = int(frame["ts_ms"].iloc[N - 100])
    base, _ = _run(champion, frame, tmp_path, "base", as_of=as_of)
    later = frame.copy()
    later.attrs = dict(frame.attrs)
    after = later["ts_ms"] >= as_of
    for col in ("open", "high", "low", "close"):
        later.loc[after, col] *= 1.7
    later.loc[after, "signal"] = -later.loc[after, "signal"]
    same, _ = _run(champion, later, tmp_path, "later", as_of=as_of)
    assert same.gate == base.gate
    assert json.loads((same.challenger / "training.json").read_text())["info"]["weights_sha256"] == \
        json.loads((base.challenger / "training.json").read_text())["info"]["weights_sha256"]
    # poison the TRAINING window (rows before the embargo): the challenger changes, the
    # champion's gate figures do not (the gate reads no training candle)
    cut = N - 100 - 200 - 1
    poisoned = frame.copy()
    poisoned.attrs = dict(frame.attrs)
    poisoned.loc[: cut - 1, "signal"] = poisoned.loc[: cut - 1, "signal"][::-1].to_numpy()
    other, _ = _run(champion, poisoned, tmp_path, "poisoned", as_of=as_of)
    sha = json.loads((other.challenger / "training.json").read_text())["info"]["weights_sha256"]
    assert sha != json.loads((base.challenger / "training.json").read_text())["info"]["weights_sha256"]
    assert other.gate["champion_total_return"] == base.gate["champion_total_return"]
    assert other.gate["buy_and_hold_total_return"] == base.gate["buy_and_hold_total_return"]


def test_a_warm_started_retrain_continues_the_champions_weights_on_the_new_window(champion, frame, tmp_path) -> None:
    out, rows = _run(champion, frame, tmp_path, "warm", init="warm")
    assert out.status in ("promoted", "rejected"), out.reasons
    info = json.loads((out.challenger / "training.json").read_text())["info"]
    assert info["warm_started"] is True
    assert info["num_timesteps"] >= 1024 + 1024  # the champion's steps, then the retrain's
    assert out.lineage["init"] == "warm"
    assert rows[-1]["event"] == "retrain_gate"


def test_an_embargo_shorter_than_the_gate_context_and_too_few_candles_are_refused(champion, frame, tmp_path) -> None:
    with Journal(tmp_path / "j.sqlite", run_id="r") as j:
        with pytest.raises(ConfigError, match="embargo_bars"):
            retrain_once(champion, frame, {**TINY, "embargo_bars": 0}, tmp_path / "o", j)
        with pytest.raises(DataError, match="too few"):
            retrain_once(champion, frame, {**TINY, "window_bars": N}, tmp_path / "o", j)
        assert retrain_trials(j) == 0


def test_a_training_past_its_time_limit_fails_cleanly_and_leaves_no_bundle(champion, frame, tmp_path) -> None:
    out, rows = _run(champion, frame, tmp_path, "slow", subprocess=True, time_limit_s=0.5,
                     total_timesteps=10_000_000)
    assert out.status == "failed"
    assert out.challenger is None
    assert "time limit" in out.reasons[0]
    assert [r["event"] for r in rows] == ["retrain_start", "retrain_failed"]
    assert list((tmp_path / "slow-out").iterdir()) == []


_KILL_SCRIPT = """
import sys
from coinrl.live.journal import Journal
from coinrl.live.retrain import retrain_once
from coinrl.pipeline.store import load_data
champ, candles, out, jpath = sys.argv[1:5]
with Journal(jpath, run_id="live-1") as j:
    retrain_once(champ, load_data(candles), {"window_bars": 600, "gate_bars": 200,
                 "total_timesteps": 10_000_000, "subprocess": True}, out, j)
"""


def test_sigkill_during_a_retrain_leaves_no_bundle_and_a_sound_journal(champion, frame, tmp_path) -> None:
    from coinrl.pipeline.store import store_data

    candles = store_data(frame, tmp_path / "candles.parquet")
    out, jpath = tmp_path / "out", tmp_path / "journal.sqlite"
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-c", _KILL_SCRIPT, str(champion), str(candles), str(out), str(jpath)],
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # until the child is training
            if out.is_dir() and any((p / "job.json").is_file() for p in out.iterdir()):
                break
            assert proc.poll() is None, "the retrain script ended before it was killed"
            time.sleep(0.2)
        time.sleep(1.0)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the retrain and its training process
        proc.wait()
    assert [p.name for p in out.iterdir() if not p.name.startswith(".staging-")] == []
    with Journal(jpath) as j:
        assert j.integrity_check() == "ok"
        assert [e.payload["event"] for e in j.events("model")] == ["retrain_start"]
        again = retrain_once(champion, frame, TINY, out, j)
        assert again.trial == 2
        assert again.challenger is not None
    assert sorted(p.name for p in out.iterdir()) == ["live-1-c0002"]  # the staging folder is gone
    assert train_config(1)["n_envs"] == 4
