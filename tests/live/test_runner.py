"""The runner: a session runs its bars and journals start, decisions, fills and stop; hot reload
swaps a valid new bundle and keeps the old model on a bad one; SIGTERM/SIGINT, the kill-switch
and the end stop it safely (open orders canceled, optional flatten, distinct exit codes); a
restarted runner reconciles and carries on without sending a decision twice."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from live_helpers import SYMBOL, RulePolicy, candles, connect, emulator, public, tiny_bundle

from coinrl.agents.bundle import load_model, save_model
from coinrl.live.journal import Journal
from coinrl.live.live_env import SteppedClock
from coinrl.live.risk import RiskConfig
from coinrl.live.runner import (
    ExitCode,
    RunnerConfig,
    build_runner,
    bundle_fingerprint,
    update_live_model,
)
from coinrl.pipeline.splits import prepare_data_for_model

K0 = 160
FRAME = candles(K0 + 80, seed=31)
OFF = RiskConfig.permissive()


class HookClock(SteppedClock):
    """A SteppedClock that calls ``hooks[k]()`` before its k-th wait (k = 1, 2, ...)."""

    def __init__(self, clock: Any, hooks: dict[int, Any]) -> None:
        super().__init__(clock)
        self.hooks = hooks
        self.waits = 0

    def sleep_until(self, ts_ms: int) -> bool:
        self.waits += 1
        hook = self.hooks.get(self.waits)
        if hook is not None:
            hook()
        return super().sleep_until(ts_ms)


@pytest.fixture(scope="module")
def agent_path(request) -> Path:
    cache = Path(request.config.cache.mkdir("coinrl-live-tiny-bundle"))
    return tiny_bundle(cache / "bundle")


@pytest.fixture(scope="module")
def agent(agent_path):
    return load_model(agent_path)


def session(server, clock, tmp_path: Path, agent: Any, *, mode: str = "live", policy: Any = None,
            hooks: dict[int, Any] | None = None, risk: RiskConfig = OFF, **cfg: Any):
    client = connect(server) if mode == "live" else public(server)
    journal = Journal(tmp_path / "j.sqlite", run_id="rt")
    return build_runner(
        policy or RulePolicy(), env_config=agent.env_config, spec=agent.feature_spec,
        normaliser=agent.normaliser, client=client, symbol=SYMBOL, timeframe="1h", mode=mode,
        journal=journal, risk_config=risk,
        config=RunnerConfig(**{"reload_every_bars": 0, **cfg}),
        clock=HookClock(clock, hooks or {}), history_bars=K0, check_clock_skew=False,
    )


@pytest.mark.slow
def test_a_session_runs_its_bars_and_journals_everything(tmp_path, agent):
    with emulator(FRAME, K0) as (server, clock):
        runner = session(server, clock, tmp_path, agent, max_bars=12)
        assert runner.run() == ExitCode.OK
        trades = server.trades()
    with Journal(tmp_path / "j.sqlite") as j:
        kinds = [e.kind for e in j.events()]
        assert kinds[0] == "start"
        assert kinds[-1] == "stop"
        assert j.count("decision") == 12
        stop = j.last("stop").payload
        assert (stop["exit_code"], stop["exit_name"]) == (0, "OK")
        assert sorted(f.fill_id for f in j.fills()) == sorted(str(t.trade_id) for t in trades)
        assert len(trades) >= 3
    assert runner.journal.closed


@pytest.mark.slow
def test_hot_reload_swaps_a_valid_bundle_and_keeps_the_old_model_on_a_bad_one(tmp_path, agent_path):
    watched = tmp_path / "watched"
    shutil.copytree(agent_path, watched)
    agent = load_model(watched)  # the running model (its own copy)
    fresh = tmp_path / "fresh"  # the same weights, saved again: a new, valid bundle
    save_model(agent, fresh)
    other = prepare_data_for_model(candles(600, seed=3), spec={"features": [
        {"kind": "returns", "horizons": [1, 2, 3, 4]}]})
    odd = tmp_path / "odd"  # same shapes, other features: must be refused
    save_model(dataclasses.replace(agent, feature_spec=other.spec, normaliser=other.normaliser), odd)

    def put(src: Path) -> Any:
        def swap() -> None:
            shutil.rmtree(watched)
            shutil.copytree(src, watched)
        return swap

    def tamper() -> None:
        shutil.rmtree(watched)
        shutil.copytree(fresh, watched)
        blob = bytearray((watched / "model.zip").read_bytes())
        blob[100] ^= 0xFF
        (watched / "model.zip").write_bytes(bytes(blob))

    hooks = {3: put(fresh), 6: tamper, 9: put(odd)}
    with emulator(FRAME, K0) as (server, clock):
        runner = session(server, clock, tmp_path, agent, mode="paper", policy=agent,
                         hooks=hooks, max_bars=12, reload_every_bars=1)
        runner.bundle_path = watched
        runner.model_fingerprint = bundle_fingerprint(watched)
        first_policy = runner.policy
        assert runner.run() == ExitCode.OK
    statuses = [(r.status, r.reason) for r in runner.reloads]
    assert [s for s, _ in statuses] == ["loaded", "rejected", "rejected"]
    assert "do not match the sha256" in statuses[1][1]
    assert "feature spec" in statuses[2][1]
    assert runner.policy is not first_policy  # swapped once, then kept through the rejections
    with Journal(tmp_path / "j.sqlite") as j:
        models = [e.payload["status"] for e in j.events("model")]
        fps = [e.payload["model_fingerprint"] for e in j.events("decision")]
    assert models == ["loaded", "rejected", "rejected"]
    assert fps[0] == bundle_fingerprint(agent_path)
    assert fps[-1] == bundle_fingerprint(fresh)


def test_update_live_model_reports_unchanged_without_loading(tmp_path, agent_path):
    calls = []
    res = update_live_model(agent_path, None, None, known_fingerprint=bundle_fingerprint(agent_path),  # type: ignore[arg-type]
                            loader=lambda p: calls.append(p))
    assert (res.status, calls) == ("unchanged", [])


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, ExitCode.TERMINATED),
                                           (signal.SIGINT, ExitCode.INTERRUPTED)])
def test_a_signal_stops_cancels_and_flattens(tmp_path, agent, sig, code):
    with emulator(FRAME, K0) as (server, clock):
        def resting_then_signal() -> None:
            # an order of this run resting on the book when the signal comes
            runner.env.broker.client.create_order(SYMBOL, "sell", 1.0, "limit", 1000.0,
                                                  client_order_id="rt-rest-0")
            os.kill(os.getpid(), sig)

        runner = session(server, clock, tmp_path, agent, policy=_AlwaysLong(),
                         hooks={4: resting_then_signal}, flatten_on_exit=True)
        restore = runner.install_signal_handlers()
        try:
            assert runner.run() == code
        finally:
            restore()
        key = next(iter(server.accounts)).api_key
        balances = server.balances(key)
        open_orders = [o for o in server.orders() if o.is_open]
    assert balances.get("SOL", (0.0, 0.0)) == (0.0, 0.0)  # flattened
    assert open_orders == []
    with Journal(tmp_path / "j.sqlite") as j:
        stop = j.last("stop").payload
        assert j.count("decision") == 4
    assert stop["exit_code"] == int(code)
    assert stop["reason"] == f"signal {sig.name}"
    assert stop["canceled"] == ["rt-rest-0"]


class _AlwaysLong:
    def predict(self, observation: Any, deterministic: bool = True) -> np.ndarray:
        return np.full(len(observation), 2, dtype=np.int64)


def test_kill_switch_stops_with_its_exit_code_and_flattens(tmp_path, agent):
    risk = OFF.model_copy(update={"max_drawdown_frac": 0.002})
    with emulator(FRAME, K0) as (server, clock):
        runner = session(server, clock, tmp_path, agent, policy=_AlwaysLong(), risk=risk, max_bars=60)
        assert runner.run() == ExitCode.KILL_SWITCH
        key = next(iter(server.accounts)).api_key
        assert server.balances(key).get("SOL", (0.0, 0.0))[0] == 0.0
    with Journal(tmp_path / "j.sqlite") as j:
        stop = j.last("stop").payload
        assert "max_drawdown" in stop["reason"]
        assert stop["flatten"]["position_base"] == 0.0
        assert j.events("risk")[-1].payload["verdict"] == "kill"


@pytest.mark.slow
def test_a_restarted_runner_reconciles_and_carries_on_without_duplicates(tmp_path, agent):
    with emulator(FRAME, K0) as (server, clock):
        first = session(server, clock, tmp_path, agent, max_bars=6)
        assert first.run() == ExitCode.OK
        second = session(server, clock, tmp_path, agent, max_bars=6)
        assert second.run() == ExitCode.OK
        orders = server.orders()
        trades = server.trades()
    cids = [o.client_order_id for o in orders]
    assert len(cids) == len(set(cids))
    with Journal(tmp_path / "j.sqlite") as j:
        starts = [e.payload["restarted"] for e in j.events("start")]
        assert starts == [False, True]
        assert j.count("decision") == 12
        assert sorted(f.fill_id for f in j.fills()) == sorted(str(t.trade_id) for t in trades)
        assert any(e.payload.get("what") == "restart" for e in j.events("reconciliation"))


def test_metrics_go_to_the_tracker_with_live_keys(tmp_path, agent):
    logged: list[tuple[dict[str, Any], int]] = []

    class Sink:
        def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
            logged.append((metrics, step))

    with emulator(FRAME, K0) as (server, clock):
        runner = session(server, clock, tmp_path, agent, mode="paper", max_bars=3)
        runner.tracker = Sink()
        assert runner.run() == ExitCode.OK
    assert [s for _, s in logged] == [1, 2, 3]
    assert set(logged[0][0]) >= {"live/equity_quote", "live/position_base", "live/fees_paid_quote"}


def test_a_candle_revised_mid_session_is_journalled_and_trading_goes_on(tmp_path, agent):
    """A closed candle the exchange corrects (or one that was never really closed) used to halt
    the session for good ("the exchange revised a closed candle" on every update)."""
    bar = int(FRAME.ts_ms.iloc[K0 - 2])
    with emulator(FRAME, K0) as (server, clock):
        def revise() -> None:
            server.revise_candle(SYMBOL, bar, close=float(FRAME.close.iloc[K0 - 2]) + 0.25)

        runner = session(server, clock, tmp_path, agent, mode="paper", hooks={3: revise}, max_bars=6)
        assert runner.run() == ExitCode.OK
    with Journal(tmp_path / "j.sqlite") as j:
        revised = [e for e in j.events("reconciliation") if e.payload.get("what") == "candle_revised"]
        assert j.count("decision") == 6
        assert j.count("error") == 0
    assert [e.bar_ts_ms for e in revised] == [bar]
