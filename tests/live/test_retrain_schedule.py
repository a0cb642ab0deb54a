"""The scheduled retrain: an APScheduler job that runs retrain_once and journals its failures."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from retrain_helpers import champion_bundle, head, market

from coinrl.live.journal import Journal
from coinrl.live.retrain_config import RetrainConfig, RetrainOutcome
from coinrl.live.retrain_schedule import JOB_ID, make_retrain_scheduler, retrain_job

CFG = RetrainConfig(every="1h", window_bars=400, gate_bars=150, total_timesteps=512, subprocess=False, n_boot=200)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    frame = market(700, seed=21)
    champ = champion_bundle(tmp_path_factory.mktemp("sched") / "champ", head(frame, 400), steps=512)
    return frame, champ


def test_the_scheduler_runs_the_retrain_job_in_a_background_thread_and_reports_it(setup, tmp_path: Path) -> None:
    frame, champ = setup
    done = threading.Event()
    seen: list[RetrainOutcome] = []
    updates: list[int] = []

    def on_outcome(o: RetrainOutcome) -> None:
        seen.append(o)
        done.set()

    with Journal(tmp_path / "j.sqlite", run_id="live-1") as j:
        job = retrain_job(champ, frame, CFG, tmp_path / "out", j, update=lambda: updates.append(1),
                          on_outcome=on_outcome)
        sched = make_retrain_scheduler(job, CFG, run_now=True)
        assert sched.get_job(JOB_ID).trigger.interval.total_seconds() == 3600
        sched.start()
        try:
            assert done.wait(180), "the scheduled retrain did not run"
        finally:
            sched.shutdown(wait=True)
        events = [e.payload["event"] for e in j.events("model")]
    assert updates == [1]
    assert seen[0].status in ("promoted", "rejected")
    assert seen[0].challenger is not None
    assert events == ["retrain_start", "retrain_end", "retrain_gate"]


def test_a_failing_scheduled_retrain_is_journalled_and_does_not_raise(setup, tmp_path: Path) -> None:
    frame, champ = setup
    with Journal(tmp_path / "j.sqlite", run_id="live-1") as j:
        job = retrain_job(champ, head(frame, 100), CFG, tmp_path / "out", j)
        assert job() is None
        rows = [e.payload for e in j.events("model")]
    assert rows[-1]["event"] == "retrain_failed"
    assert "too few" in rows[-1]["reason"]


def test_every_parses_units_and_refuses_nonsense() -> None:
    assert RetrainConfig(every="30m").every_s == 1800
    assert RetrainConfig(every="1.5d").every_s == 129_600
    with pytest.raises(ValueError, match="every"):
        RetrainConfig(every="daily")


def test_the_job_thread_runs_at_lower_priority_and_the_main_thread_is_left_alone() -> None:
    import os

    from coinrl.live.retrain_schedule import lower_thread_priority

    seen: dict[str, int] = {}

    def work() -> None:
        tid = threading.get_native_id()
        before = os.getpriority(os.PRIO_PROCESS, tid)
        lower_thread_priority(5)
        seen["delta"] = os.getpriority(os.PRIO_PROCESS, tid) - before

    t = threading.Thread(target=work)
    t.start()
    t.join()
    main_before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    lower_thread_priority(5)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == main_before
    assert seen["delta"] == min(5, 19 - main_before)
