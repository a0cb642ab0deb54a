"""Rate limits and retries: a Retry-After beyond the usual cap is honoured when it ends before
the next decision's deadline, and past it that decision is skipped explicitly (journalled)
instead of hammering the exchange and stopping; retry jitter never follows Python's global
``random`` (which loading a bundle seeds), so runner processes do not back off in lockstep."""

from __future__ import annotations

import random
import time

import pytest
from live_helpers import ENV, SPEC, SYMBOL, RulePolicy, candles, connect, emulator

from coinrl.live.journal import Journal
from coinrl.live.live_env import SteppedClock
from coinrl.live.risk import RiskConfig
from coinrl.live.runner import ExitCode, RunnerConfig, build_runner
from coinrl.pipeline.errors import TemporaryExchangeError
from coinrl.pipeline.exchange_client import call_exchange
from coinrl.pipeline.splits import prepare_data_for_model

K0 = 160
HOUR = 3_600_000
FRAME = candles(K0 + 40, seed=17)


@pytest.fixture(scope="module")
def prepared():
    return prepare_data_for_model(candles(600, seed=2), spec=SPEC)


def _session(server, clock, path, prepared, slept: list[float], bars: int = 6):
    client = connect(server)
    client.sleep = slept.append  # a Retry-After is waited here (recorded, not slept)
    return build_runner(
        RulePolicy(), env_config=ENV, spec=prepared.spec, normaliser=prepared.normaliser,
        client=client, symbol=SYMBOL, timeframe="1h", mode="live",
        journal=Journal(path, run_id="rl"), risk_config=RiskConfig.permissive(),
        config=RunnerConfig(reload_every_bars=0, max_bars=bars), clock=SteppedClock(clock),
        history_bars=K0, check_clock_skew=False,
    )


@pytest.mark.slow
def test_a_long_retry_after_before_the_deadline_is_waited_not_an_error(tmp_path, prepared):
    slept: list[float] = []
    with emulator(FRAME, K0) as (server, clock):
        runner = _session(server, clock, tmp_path / "j.sqlite", prepared, slept)
        server.faults.rate_limit(retry_after_s=300, count=1, path_prefix="/api/v3/klines", after=3)
        assert runner.run() == ExitCode.OK
        limited = [r for r in server.requests("/api/v3/klines") if r.fault == "rate_limit"]
    assert len(limited) == 1
    assert slept == [300.0]  # 5 minutes < the hour left before the next decision
    with Journal(tmp_path / "j.sqlite") as j:
        assert j.count("error") == 0
        assert j.count("halt") == 0
        assert j.count("decision") == 6


@pytest.mark.slow
def test_a_retry_after_past_the_deadline_skips_that_decision_explicitly(tmp_path, prepared):
    slept: list[float] = []
    with emulator(FRAME, K0) as (server, clock):
        runner = _session(server, clock, tmp_path / "j.sqlite", prepared, slept)
        server.faults.rate_limit(retry_after_s=7200, count=1, path_prefix="/api/v3/klines", after=3)
        assert runner.run() == ExitCode.OK
        after_429 = [r for r in server.requests() if r.t_s > next(
            x.t_s for x in server.requests("/api/v3/klines") if x.fault == "rate_limit")]
        n_limited = len([r for r in server.requests() if r.fault == "rate_limit"])
    assert n_limited == 1  # the exchange was not hammered
    assert slept == []  # not waited in a call: the decision was skipped and the clock moved on
    with Journal(tmp_path / "j.sqlite") as j:
        skips = [e.payload for e in j.events("halt")]
        assert [(s["rule"], s["skipped"], s["retry_after_s"]) for s in skips] == [
            ("rate_limited", True, 7200.0)]
        until = skips[0]["until_ms"]
        decisions = [e.ts_ms for e in j.events("decision")]
        assert j.count("error") == 0
        assert j.last("stop").payload["exit_name"] == "OK"
    # the decision before the 429 was taken (its step was cut short while fetching the next
    # bar), the one due at the next close was skipped, and the session decided on after the wait
    assert len(decisions) >= 6
    assert any(ts >= until for ts in decisions)
    assert after_429


def _jitter_after_seeding(monkeypatch) -> list[float]:
    random.seed(1234)  # what loading a bundle does to the global generator
    sleeps: list[float] = []
    monkeypatch.setattr(time, "sleep", sleeps.append)
    failures = iter([TemporaryExchangeError("down"), TemporaryExchangeError("down"), None])

    def flaky() -> int:
        err = next(failures)
        if err is not None:
            raise err
        return 1

    assert call_exchange(flaky, "flaky", max_retries=3) == 1
    monkeypatch.undo()
    return sleeps


def test_retry_jitter_does_not_follow_the_global_random_seed(monkeypatch):
    first = _jitter_after_seeding(monkeypatch)
    second = _jitter_after_seeding(monkeypatch)
    assert len(first) == len(second) == 2
    assert first != second  # two processes that loaded the same bundle still spread out
