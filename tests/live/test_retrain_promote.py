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
