"""run_train / run_evaluate / retrain_from_bundle end to end on the packaged sample."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coinrl.agents.bundle import load_model
from coinrl.experiments.train_cmd import retrain_from_bundle, run_evaluate, run_train
from coinrl.pipeline.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[2] / "experiments" / "configs"
TINY = [
    "train.total_timesteps=2048",
    "train.n_envs=8",
    "train.ppo.n_steps=64",
    "train.ppo.batch_size=256",
    "train.ppo.n_epochs=2",
    "train.eval_every_steps=1024",
    "train.checkpoint_every_steps=1024",
    "train.progress_bar=false",
    "tracking.mode=offline",
]


@pytest.fixture
def offline_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_home"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_home" / "config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb_home" / "cache"))


@pytest.mark.slow
@pytest.mark.usefixtures("offline_wandb")
def test_train_evaluate_and_reproduce_from_the_bundle(tmp_path: Path) -> None:
    bundle = run_train(CONFIGS / "ppo_btc_1h.yaml", TINY, False, tmp_path / "runs")
    run_dir = tmp_path / "runs" / "ppo_btc_1h"
    assert bundle == run_dir / "bundle"
    agent = load_model(bundle)
    assert agent.info["num_timesteps"] == 2048
    validation = json.loads((run_dir / "evaluation.json").read_text())
    assert set(validation["baselines"]) == {"buy_and_hold", "flat", "random"}
    assert (run_dir / "equity_validation.png").stat().st_size > 0
    # one W&B run with the equity-curve image and the bundle artifact
    wandb_files = [p.name for p in (run_dir / "wandb").rglob("*") if p.is_file()]
    assert any(n.startswith("eval/equity_curve") or "equity_curve" in n for n in wandb_files)
    assert any(n.endswith(".wandb") for n in wandb_files)

    report = run_evaluate(bundle, "test")
    assert report["split"] == "test"
    assert report["meta"]["data_matches_bundle"] is True
    assert report["agent"]["n_bars"] == report["meta"]["n_decisions"]
    json.dumps(report, allow_nan=False)
    with pytest.raises(ConfigError, match="split"):
        run_evaluate(bundle, "holdout")

    # --resume after completion continues the same W&B run and trains nothing more
    again = run_train(CONFIGS / "ppo_btc_1h.yaml", TINY, True, tmp_path / "runs")
    assert load_model(again).info["resumed_from"] is not None
    assert load_model(again).info["num_timesteps"] == 2048
    assert len(list((run_dir / "wandb" / "wandb").glob("offline-run-*"))) == 2
    assert len({p.name.rsplit("-", 1)[-1] for p in (run_dir / "wandb" / "wandb").glob("offline-run-*")}) == 1

    # the bundle alone reproduces the run: same weights
    new_bundle, same = retrain_from_bundle(bundle, tmp_path / "again")
    assert same, "retraining from the bundle's config gave other weights"
    assert new_bundle.is_dir()
