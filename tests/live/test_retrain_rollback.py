"""Automatic rollback: a promoted model that trails the champion it replaced is rolled back."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from retrain_helpers import head, market, oracle_bundle

from coinrl.live.journal import Journal
from coinrl.live.retrain import bundle_id
from coinrl.live.retrain_config import RetrainConfig
from coinrl.live.retrain_promote import promote_challenger
from coinrl.live.retrain_rollback import check_rollback

FLIP = 1_000
CFG = RetrainConfig(rollback_bound=0.05, rollback_min_bars=48)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    frame = market(FLIP, 1_000, seed=4)
    root = tmp_path_factory.mktemp("rollback")
    train = head(frame, 600)
    return frame, oracle_bundle(root / "plus", train, 1.0), oracle_bundle(root / "minus", train, -1.0)


def _promote(tmp_path: Path, champ: Path, chal: Path, frame, at: int, j: Journal) -> Path:
    live = tmp_path / "live"
    shutil.copytree(champ, live)
    promote_challenger(chal, live, j, ts_ms=int(frame["ts_ms"].iloc[at]))
    return live


def test_a_promoted_model_that_trails_the_old_champion_beyond_the_bound_is_rolled_back(setup, tmp_path) -> None:
    frame, plus, minus = setup
    with Journal(tmp_path / "j.sqlite", run_id="live-1") as j:
        live = _promote(tmp_path, plus, minus, frame, 700, j)  # the wrong sign before the flip
        early = check_rollback(live, head(frame, 730), CFG, j)
        assert early.status == "too_early"
        check = check_rollback(live, head(frame, 900), CFG, j)
        events = [e.payload["event"] for e in j.events("model")]
    assert check.status == "rolled_back", check.reason
    assert check.bars == 200
    assert check.promoted_total_return < check.previous_total_return - 0.05
    assert bundle_id(live) == bundle_id(plus)
    assert events == ["promote_start", "promote_end", "rollback_check", "rollback_start", "rollback_end"]
    with Journal(tmp_path / "j.sqlite") as j:
        assert check_rollback(live, head(frame, 950), CFG, j).status == "no_promotion"


def test_a_promoted_model_that_does_better_is_kept(setup, tmp_path) -> None:
    frame, plus, minus = setup
    with Journal(tmp_path / "j.sqlite", run_id="live-1") as j:
        live = _promote(tmp_path, plus, minus, frame, 1_200, j)  # the right sign after the flip
        check = check_rollback(live, head(frame, 1_400), CFG, j)
        row = [e.payload for e in j.events("model")][-1]
    assert check.status == "kept"
    assert check.promoted_total_return > check.previous_total_return
    assert bundle_id(live) == bundle_id(minus)
    assert row["event"] == "rollback_check"
    assert row["rolled_back"] is False


def test_a_gated_challenger_is_shadowed_on_the_bars_after_the_gate_before_promotion(setup, tmp_path) -> None:
    from coinrl.live.retrain_rollback import check_shadow

    frame, plus, minus = setup
    cfg = RetrainConfig(shadow_bars=100)
    after_flip = int(frame["ts_ms"].iloc[1_100])
    before_flip = int(frame["ts_ms"].iloc[700])
    with Journal(tmp_path / "j.sqlite", run_id="live-1") as j:
        pending = check_shadow(minus, plus, head(frame, 1_150), cfg, j, since_ts_ms=after_flip)
        holds = check_shadow(minus, plus, head(frame, 1_200), cfg, j, since_ts_ms=after_flip)
        fails = check_shadow(minus, plus, head(frame, 800), cfg, j, since_ts_ms=before_flip)
        rows = [e.payload for e in j.events("model")]
    assert pending.status == "pending"
    assert pending.bars == 50
    assert holds.status == "passed"
    assert holds.challenger_total_return > holds.champion_total_return
    assert fails.status == "failed"
    assert [(r["event"], r["passed"]) for r in rows] == [("shadow_check", True), ("shadow_check", False)]
