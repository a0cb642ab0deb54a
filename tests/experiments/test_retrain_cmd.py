"""``coinrl retrain``: the CLI around retrain_once (YAML config, journal, exit status)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from coinrl.experiments.cli import app
from coinrl.experiments.retrain_cmd import EXIT_REJECTED
from coinrl.live.journal import Journal
from coinrl.live.retrain import bundle_id
from coinrl.pipeline.store import store_data
from coinrl.pipeline.synthetic import planted_pattern

runner = CliRunner()
SPEC = {"features": [{"kind": "column", "name": "signal"}]}


@pytest.fixture(scope="module")
def champion(tmp_path_factory) -> tuple[Path, Path]:
    from coinrl.agents.bundle import save_model
    from coinrl.agents.config import TrainConfig
    from coinrl.agents.train import train_model
    from coinrl.envs.config import EnvConfig
    from coinrl.pipeline.splits import prepare_data_for_model

    root = tmp_path_factory.mktemp("cli")
    frame = planted_pattern(900, seed=31)
    candles = store_data(frame, root / "candles.parquet")
    first = frame.iloc[:400].reset_index(drop=True)
    first.attrs = dict(frame.attrs)
    prepared = prepare_data_for_model(first, spec=SPEC, split={"train": 0.85, "validation": 0.15, "test": 0.0})
    cfg = TrainConfig.model_validate({
        "total_timesteps": 512, "n_envs": 4, "net_arch": [16], "progress_bar": False, "torch_threads": 1,
        "ppo": {"n_steps": 128, "batch_size": 256, "n_epochs": 2}, "eval_every_steps": 0,
        "checkpoint_every_steps": 0, "early_stopping_patience": None,
    })
    env = EnvConfig(window=1, positions=(-1.0, 0.0, 1.0), allow_short=True, episode_length_bars=128)
    return save_model(train_model(prepared, cfg, env), root / "champ"), candles


def test_coinrl_retrain_writes_a_challenger_journals_the_gate_and_exits_by_verdict(champion, tmp_path) -> None:
    bundle, candles = champion
    cfg = tmp_path / "retrain.yaml"
    cfg.write_text(yaml.safe_dump({"retrain": {"window_bars": 400, "gate_bars": 200, "total_timesteps": 512,
                                               "subprocess": False, "n_boot": 200}}))
    out, journal = tmp_path / "challengers", tmp_path / "journal.sqlite"
    live = tmp_path / "live"
    shutil.copytree(bundle, live)
    res = runner.invoke(app, ["retrain", str(bundle), "--candles", str(candles), "--journal", str(journal),
                              "--config", str(cfg), "--out", str(out), "--run-id", "paper-1",
                              "--set", "seed=9", "--set", "min_p_better=0", "--set", "min_p_beats_cash=0",
                              "--promote-to", str(live)])
    assert res.exit_code == 0, res.output  # every rule at 0: the gate passes it
    assert "retrain gate" in res.output
    assert (out / "paper-1-c0001" / "manifest.json").is_file()
    lineage = json.loads((out / "paper-1-c0001" / "manifest.json").read_text())["lineage"]
    assert lineage["config_diff"]["train.seed"][1] == 9
    with Journal(journal) as j:
        rows = [e.payload for e in j.events("model")]
    gate = rows[2]
    assert gate["event"] == "retrain_gate"
    assert gate["verdict"] == "promoted"
    assert [r["event"] for r in rows[3:]] == ["promote_start", "promote_end"]
    assert bundle_id(live) == bundle_id(out / "paper-1-c0001")
    assert "promoted to" in res.output


def test_coinrl_retrain_exits_3_when_the_gate_rejects_and_promotes_nothing(champion, tmp_path) -> None:
    bundle, candles = champion
    live = tmp_path / "live"
    shutil.copytree(bundle, live)
    res = runner.invoke(app, ["retrain", str(bundle), "--candles", str(candles), "--journal",
                              str(tmp_path / "j.sqlite"), "--out", str(tmp_path / "o"), "--promote-to", str(live),
                              "--set", "window_bars=400", "--set", "gate_bars=200", "--set", "total_timesteps=512",
                              "--set", "subprocess=false", "--set", "min_p_better=1.0", "--set", "min_dsr=1.0",
                              "--set", "n_boot=100"])
    assert res.exit_code == EXIT_REJECTED, res.output
    assert "REJECTED" in res.output
    assert bundle_id(live) == bundle_id(bundle)


def test_coinrl_retrain_refuses_an_unknown_config_key(champion, tmp_path) -> None:
    bundle, candles = champion
    cfg = tmp_path / "retrain.yaml"
    cfg.write_text(yaml.safe_dump({"window_bar": 400}))
    res = runner.invoke(app, ["retrain", str(bundle), "--candles", str(candles), "--journal",
                              str(tmp_path / "j.sqlite"), "--config", str(cfg)])
    assert res.exit_code == 2
    assert "window_bar" in res.output
