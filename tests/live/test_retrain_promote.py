"""Promotion and rollback: the live bundle folder is swapped whole, journalled, recoverable."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from retrain_helpers import champion_bundle, market

from coinrl.agents.bundle import load_model
from coinrl.live.journal import Journal
from coinrl.live.retrain import bundle_id
from coinrl.live.retrain_promote import promote_challenger, recover_promotion, rollback_champion
from coinrl.pipeline.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("promote")
    frame = market(400, seed=41)
    return (champion_bundle(root / "a", frame, steps=512, seed=0),
            champion_bundle(root / "b", frame, steps=512, seed=1))


def _live(tmp_path: Path, src: Path) -> Path:
    live = tmp_path / "live" / "bundle"
    shutil.copytree(src, live)
    return live


def test_promotion_puts_the_challenger_at_the_live_path_and_rollback_restores_the_champion(bundles, tmp_path) -> None:
    champ, chal = bundles
    live = _live(tmp_path, champ)
    with Journal(tmp_path / "j.sqlite", run_id="live-1") as j:
        archived = promote_challenger(chal, live, j)
        assert bundle_id(live) == bundle_id(chal)
        assert bundle_id(archived) == bundle_id(champ)
        load_model(live)  # a whole, loadable bundle
        rollback_champion(live, j, reason="lost 5 % more than the old champion's shadow")
        assert bundle_id(live) == bundle_id(champ)
        events = [e.payload["event"] for e in j.events("model")]
        assert j.integrity_check() == "ok"
    assert events == ["promote_start", "promote_end", "rollback_start", "rollback_end"]
    assert not any(p.name.endswith(".promote") for p in live.parent.iterdir())


def test_a_promotion_killed_between_its_renames_is_finished_at_restart(bundles, tmp_path) -> None:
    champ, chal = bundles
    live = _live(tmp_path, champ)
    with Journal(tmp_path / "j.sqlite", run_id="live-1") as j:
        staged = live.parent / f".{live.name}.promote"
        shutil.copytree(chal, staged)
        archive = tmp_path / "archive"
        archive.mkdir()
        j.append("model", ts_ms=0, payload={"event": "promote_start", "live": str(live),
                                            "archive": str(archive / bundle_id(champ))})
        os.replace(live, archive / bundle_id(champ))  # ... and the process dies here
        assert recover_promotion(live, j) == "finished"
        assert bundle_id(live) == bundle_id(chal)
        assert recover_promotion(live, j) == "ok"


def test_rollback_without_a_promotion_and_a_damaged_challenger_are_refused(bundles, tmp_path) -> None:
    champ, chal = bundles
    live = _live(tmp_path, champ)
    bad = tmp_path / "bad"
    shutil.copytree(chal, bad)
    (bad / "normaliser.json").write_text("{}")
    with Journal(tmp_path / "j.sqlite", run_id="live-1") as j:
        with pytest.raises(ConfigError, match="no promoted champion"):
            rollback_champion(live, j, reason="test")
        with pytest.raises(DataError, match="sha256"):
            promote_challenger(bad, live, j)
    assert bundle_id(live) == bundle_id(champ)


@pytest.mark.slow
def test_a_running_session_trades_the_promoted_challenger_and_then_the_rolled_back_champion(tmp_path) -> None:
    """Promotion is the runner's validated hot reload: the session polls its bundle folder,
    promote_challenger swaps it (journalled in the session's own journal), the runner loads
    and validates it; rollback_champion puts the champion back the same way."""
    from live_helpers import SYMBOL, candles, emulator, public, tiny_bundle

    from coinrl.live.live_env import SteppedClock
    from coinrl.live.risk import RiskConfig
    from coinrl.live.runner import ExitCode, RunnerConfig, build_runner

    champ = tiny_bundle(tmp_path / "champ", seed=0)
    chal = tiny_bundle(tmp_path / "chal", seed=1)
    live = _live(tmp_path, champ)
    agent = load_model(live)
    k0 = 160

    class Hooks(SteppedClock):
        waits = 0

        def sleep_until(self, ts_ms: int) -> bool:
            self.waits += 1
            if self.waits == 3:
                promote_challenger(chal, live, runner.journal)
            if self.waits == 7:
                rollback_champion(live, runner.journal, reason="test: lost beyond the bound")
            return super().sleep_until(ts_ms)

    with emulator(candles(k0 + 40, seed=31), k0) as (server, clock):
        runner = build_runner(
            agent, env_config=agent.env_config, spec=agent.feature_spec, normaliser=agent.normaliser,
            client=public(server), symbol=SYMBOL, timeframe="1h", mode="paper",
            journal=Journal(tmp_path / "j.sqlite", run_id="rt"), risk_config=RiskConfig.permissive(),
            config=RunnerConfig(max_bars=10, reload_every_bars=1), clock=Hooks(clock),
            history_bars=k0, check_clock_skew=False, bundle_path=live,
        )
        assert runner.run() == ExitCode.OK
    assert [r.status for r in runner.reloads] == ["loaded", "loaded"]
    with Journal(tmp_path / "j.sqlite") as j:
        rows = [e.payload for e in j.events("model")]
    assert [r.get("event") or r.get("status") for r in rows] == [
        "promote_start", "promote_end", "loaded", "rollback_start", "rollback_end", "loaded"]
    assert bundle_id(live) == bundle_id(champ)
