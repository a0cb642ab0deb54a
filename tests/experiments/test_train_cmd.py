"""run_train / run_evaluate / retrain_from_bundle end to end on the packaged sample."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coinrl.agents.bundle import load_model
from coinrl.agents.train import latest_checkpoint
from coinrl.experiments.train_cmd import retrain_from_bundle, run_evaluate, run_train
from coinrl.pipeline.errors import ConfigError, DataError

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


# --------------------------------------------------------------------------- one run per folder

def _training_info(bundle: Path) -> dict[str, object]:
    """The bundle's ``training.json`` info (read as data: this checks the run, not bundle loading)."""
    info: dict[str, object] = json.loads((bundle / "training.json").read_text())["info"]
    return info


MICRO = [
    "train.total_timesteps=512",
    "train.n_envs=4",
    "train.ppo.n_steps=64",
    "train.ppo.batch_size=128",
    "train.ppo.n_epochs=1",
    "train.eval_every_steps=256",
    "train.checkpoint_every_steps=256",
    "train.progress_bar=false",
    "tracking.mode=disabled",
]


@pytest.mark.slow
def test_a_new_run_over_an_existing_run_is_refused_and_overwrite_starts_clean(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    run_train(CONFIGS / "ppo_btc_1h.yaml", MICRO, False, out)
    run_dir = out / "ppo_btc_1h"
    first_id = json.loads((run_dir / "run.json").read_text())["run_id"]
    first_ckpts = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert first_ckpts == ["step_000000000256", "step_000000000512"]
    with pytest.raises(ConfigError, match=r"already holds run .*--resume.*--overwrite"):
        run_train(CONFIGS / "ppo_btc_1h.yaml", [*MICRO, "train.total_timesteps=256"], False, out)
    assert json.loads((run_dir / "run.json").read_text())["run_id"] == first_id  # untouched

    run_train(CONFIGS / "ppo_btc_1h.yaml", [*MICRO, "train.total_timesteps=256"], False, out, overwrite=True)
    assert json.loads((run_dir / "run.json").read_text())["run_id"] != first_id
    # the old run's step-512 checkpoint is gone, so a later --resume cannot continue it
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step_000000000256"]
    assert _training_info(run_dir / "bundle")["num_timesteps"] == 256


@pytest.mark.slow
def test_resume_refuses_a_different_run_and_accepts_a_bigger_budget(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    run_train(CONFIGS / "ppo_btc_1h.yaml", [*MICRO, "train.total_timesteps=256"], False, out)
    with pytest.raises(ConfigError, match=r"different run .*train\.ppo\.learning_rate"):
        run_train(CONFIGS / "ppo_btc_1h.yaml", [*MICRO, "train.ppo.learning_rate=0.001"], True, out)
    with pytest.raises(ConfigError, match="one of them"):
        run_train(CONFIGS / "ppo_btc_1h.yaml", MICRO, True, out, overwrite=True)
    bundle = run_train(CONFIGS / "ppo_btc_1h.yaml", MICRO, True, out)  # total 256 -> 512: same run
    assert _training_info(bundle)["resumed_from"] is not None
    assert _training_info(bundle)["num_timesteps"] == 512


def test_overwrite_never_empties_a_folder_coinrl_did_not_write(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    (out / "ppo_btc_1h").mkdir(parents=True)
    (out / "ppo_btc_1h" / "thesis.tex").write_text("mine")
    with pytest.raises(ConfigError, match="thesis.tex"):
        run_train(CONFIGS / "ppo_btc_1h.yaml", MICRO, False, out, overwrite=True)
    assert (out / "ppo_btc_1h" / "thesis.tex").read_text() == "mine"


@pytest.mark.usefixtures("offline_wandb")
def test_a_window_longer_than_the_data_fails_before_creating_anything(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    with pytest.raises(DataError, match="window=100000"):
        run_train(CONFIGS / "ppo_btc_1h.yaml", [*MICRO, "env.window=100000", "tracking.mode=offline"], False, out)
    assert not out.exists()


def test_an_empty_config_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing yet\n")
    with pytest.raises(ConfigError, match="empty"):
        run_train(empty, ["train.total_timesteps=64"], False, tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


# --------------------------------------------------------------------------- what the CLI shows


def _coinrl(*args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    code = "from coinrl.experiments.cli import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "COLUMNS": "200"}, **kw,  # type: ignore[call-overload]
    )


@pytest.mark.slow
def test_train_ends_with_a_results_table_and_keeps_metric_dumps_in_the_log_file(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    res = _coinrl("train", str(CONFIGS / "ppo_btc_1h.yaml"), *MICRO, "--out", str(out))
    assert res.returncode == 0, res.stderr
    # the validation table: the agent beside every baseline, in backtest's format
    for word in ("validation split", "agent", "buy_and_hold", "flat", "random", "total return", "Sharpe"):
        assert word in res.stdout, res.stdout
    assert "coinrl.agents.metrics" not in res.stderr  # no metric dumps on the console ...
    log = (out / "ppo_btc_1h" / "train.log").read_text()
    assert "coinrl.agents.metrics" in log  # ... they are in the run's log file
    assert "eval/sharpe=" in log
    res = _coinrl("-v", "train", str(CONFIGS / "ppo_btc_1h.yaml"), *MICRO, "--out", str(out), "--overwrite")
    assert res.returncode == 0, res.stderr
    assert "coinrl.agents.metrics" in res.stderr  # -v shows them


@pytest.mark.slow
def test_ctrl_c_says_how_to_resume(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    args = [*MICRO, "train.total_timesteps=10000000", "train.eval_every_steps=0"]
    code = "from coinrl.experiments.cli import main; main()"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "train", str(CONFIGS / "ppo_btc_1h.yaml"), *args, "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 180
        while latest_checkpoint(out / "ppo_btc_1h") is None:  # training is under way, one checkpoint done
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "no checkpoint within 180 s"
            time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "interrupted" in err
    assert "from its latest checkpoint, step " in err
    assert "--resume" in err
    assert f"--out {out}" in err


@pytest.mark.slow
def test_evaluate_prints_the_backtest_table_format(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    bundle = run_train(CONFIGS / "ppo_btc_1h.yaml", MICRO, False, out)
    res = _coinrl("evaluate", str(bundle), "--split", "test")
    assert res.returncode == 0, res.stderr
    # backtest's layout: one row per metric, one column per strategy, percentages for returns
    rows = [line for line in res.stdout.splitlines() if "│" in line or "┃" in line]
    labels = [r.split("│")[1].strip() if "│" in r else "" for r in rows]
    for label in ("total return", "ann. return", "Sharpe", "max drawdown", "turnover", "fees"):
        assert label in labels, res.stdout
    header = next(r for r in rows if "┃" in r)
    for name in ("agent", "buy_and_hold", "flat", "random"):
        assert name in header
    assert "%" in rows[labels.index("total return")]


# --------------------------------------------------------------------------- portfolios


@pytest.mark.slow
@pytest.mark.usefixtures("offline_wandb")
def test_coinrl_train_trains_the_shipped_portfolio_config_into_a_bundle(
    tmp_path: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from coinrl.experiments.cli import app

    monkeypatch.chdir(CONFIGS.parents[1])  # the YAML's ../shared/data paths are from the repo root
    tiny = ["train.total_timesteps=4096", "train.eval_every_steps=2048",
            "train.checkpoint_every_steps=2048", "train.progress_bar=false"]
    out = tmp_path / "runs"
    res = CliRunner().invoke(app, ["train", str(CONFIGS / "ppo_portfolio.yaml"), *tiny, "--out", str(out)])
    assert res.exit_code == 0, res.output
    run_dir = out / "ppo_portfolio"
    agent = load_model(run_dir / "bundle")
    assert agent.portfolio is not None
    assert agent.portfolio.symbols == ("ADA/BTC", "ETH/BTC", "LTC/BTC")
    assert agent.info["num_timesteps"] == 4096
    assert [h["step"] for h in agent.history] == [2048, 4096]
    validation = json.loads((run_dir / "evaluation.json").read_text())
    assert {"cash", "equal_weight_hold", "crp_daily", "random_weights"} <= set(validation["baselines"])
    assert validation["agent"]["fees_frac"] > 0  # costs charged
    assert "crp_daily" in res.output  # the CLI's results table

    report = run_evaluate(run_dir / "bundle", "test")
    assert report["split"] == "test"
    assert report["meta"]["data_matches_bundle"] is True
    assert report["bundle"]["data"]["kind"] == "portfolio"
    json.dumps(report, allow_nan=False)

    # --resume after completion trains nothing more; the bundle alone reproduces the weights
    again = CliRunner().invoke(app, ["train", str(CONFIGS / "ppo_portfolio.yaml"), *tiny, "--out", str(out), "--resume"])
    assert again.exit_code == 0, again.output
    assert load_model(run_dir / "bundle").info["resumed_from"] is not None
    _, same = retrain_from_bundle(run_dir / "bundle", tmp_path / "again", ["tracking.mode=disabled"])
    assert same, "retraining the portfolio from its bundle's config gave other weights"
