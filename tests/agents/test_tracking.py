"""W&B tracking (offline) and the single metrics sink; secrets never reach a run."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from coinrl.agents.config import TrackingConfig
from coinrl.agents.redact import scrub_secrets, secret_paths
from coinrl.agents.tracking import LoggingWriter, Tracker, WandbWriter, make_logger

SECRET = "SEKRET-9f8e7d6c5b4a"  # noqa: S105  (a fake secret to look for)


def _run_files(root: Path, expect: bytes = b"", timeout_s: float = 20.0) -> bytes:
    """All bytes of the run's files; waits (bounded) until ``expect`` is in them, because
    wandb-core is a separate process that may still be writing after ``finish`` under load."""
    deadline = time.monotonic() + timeout_s
    while True:
        blobs = b"".join(p.read_bytes() for p in root.rglob("*") if p.is_file())
        if expect in blobs or time.monotonic() > deadline:
            return blobs
        time.sleep(0.2)


def test_scrub_drops_every_secret_looking_key() -> None:
    cfg = {
        "exchange": {"name": "binance", "api_key": SECRET, "apiSecret": SECRET},
        "auth_token": SECRET,
        "accounts": [{"PASSWORD": SECRET, "id": 1}],
        "train": {"keep_checkpoints": 2},
    }
    clean = scrub_secrets(cfg)
    assert SECRET not in repr(clean)
    assert clean == {"exchange": {"name": "binance"}, "accounts": [{"id": 1}], "train": {"keep_checkpoints": 2}}
    assert sorted(secret_paths(cfg)) == [
        "accounts[0].PASSWORD", "auth_token", "exchange.apiSecret", "exchange.api_key",
    ]


@pytest.mark.slow
def test_offline_run_holds_the_config_and_metrics_without_secrets(
    offline_wandb: Path, tmp_path: Path
) -> None:
    run_cfg: dict[str, Any] = {
        "name": "tracking-test",
        "train": {"algo": "ppo", "marker": "MARKER-31415"},
        "live": {"exchange": "binance", "api_key": SECRET, "secret": SECRET},
    }
    tracker = Tracker(TrackingConfig(mode="offline", dir=str(tmp_path / "wb")), "tracking-test", run_cfg)
    assert tracker.enabled
    sink = make_logger(tmp_path / "run", tracker)
    sink.record("eval/sharpe", 1.25)
    sink.record("train/loss", 0.5)
    sink.dump(step=100)
    sink.close()
    tracker.finish()
    blobs = _run_files(tmp_path / "wb", expect=b"eval/sharpe")
    assert b"MARKER-31415" in blobs  # the config is in the run
    assert b"eval/sharpe" in blobs  # so are the metrics
    assert SECRET.encode() not in blobs
    assert b"api_key" not in blobs
    assert (tmp_path / "run" / "progress.csv").read_text().startswith(("eval/sharpe", "train/loss"))


def test_disabled_tracking_is_a_no_op(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    tracker = Tracker(TrackingConfig(mode="disabled"), "off", {"a": 1}, out_dir=tmp_path)
    assert not tracker.enabled
    tracker.log({"eval/x": 1.0}, step=1)
    tracker.finish()
    sink = make_logger(None, tracker)
    assert not any(isinstance(f, WandbWriter) for f in sink.output_formats)
    assert any(isinstance(f, LoggingWriter) for f in sink.output_formats)
    assert list(tmp_path.iterdir()) == []


def test_sink_fans_every_dump_out_to_wandb(caplog: pytest.LogCaptureFixture) -> None:
    got: list[tuple[dict[str, float], int | None]] = []

    class FakeTracker(Tracker):
        def __init__(self) -> None:
            super().__init__(TrackingConfig(mode="disabled"))
            self.run = object()  # "enabled"

        def log(self, metrics: Any, step: int | None = None) -> None:
            got.append((dict(metrics), step))

    sink = make_logger(None, FakeTracker())
    sink.record("eval/total_return", 0.1)
    sink.record("rollout/ep_rew_mean", -0.2)
    sink.record("eval/note", "text is skipped")
    with caplog.at_level("INFO", logger="coinrl.agents.metrics"):
        sink.dump(step=4096)
    assert got == [({"eval/total_return": 0.1, "rollout/ep_rew_mean": -0.2}, 4096)]
    assert "step=4096" in caplog.text
    assert "eval/total_return=0.1" in caplog.text
