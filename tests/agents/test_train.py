"""train_model: reproducible weights, validation/best/early stop, checkpoints and resume."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from coinrl.agents.config import TrainConfig
from coinrl.agents.model_io import read_model
from coinrl.agents.train import (
    latest_checkpoint,
    list_checkpoints,
    make_vec_env,
    train_model,
    weights_hash,
)
from coinrl.envs.config import EnvConfig
from coinrl.pipeline.config import validate_config
from coinrl.pipeline.errors import ConfigError
from coinrl.pipeline.splits import PreparedData

TrainCfg = Callable[..., TrainConfig]


@pytest.mark.slow
def test_same_config_and_seed_give_identical_weights(
    planted: PreparedData, small_env: EnvConfig, train_config: TrainCfg
) -> None:
    a = train_model(planted, train_config(), small_env)
    b = train_model(planted, train_config(), small_env)
    c = train_model(planted, train_config(seed=1), small_env)
    assert a.info["weights_sha256"] == b.info["weights_sha256"] == weights_hash(b.model)
    assert c.info["weights_sha256"] != a.info["weights_sha256"]


@pytest.mark.slow
def test_validation_best_model_and_one_metrics_sink(
    planted: PreparedData, small_env: EnvConfig, train_config: TrainCfg, tmp_path: Path
) -> None:
    cfg = train_config(total_timesteps=3072, eval_every_steps=1024, checkpoint_every_steps=1024)
    agent = train_model(planted, cfg, small_env, out_dir=tmp_path)
    steps = [h["step"] for h in agent.history]
    assert steps == [1024, 2048, 3072]
    best = max(agent.history, key=lambda h: h["score"])
    assert agent.info["best_step"] == best["step"]
    assert agent.history[0]["score"] == agent.history[0]["sharpe"]  # eval_metric = sharpe
    # the returned weights are the best evaluated ones, as saved in best/model.zip
    saved_best = read_model(tmp_path / "best" / "model.zip", cfg,
                            env=make_vec_env(planted.train, small_env, cfg.n_envs))
    assert weights_hash(saved_best) == agent.info["weights_sha256"]
    # SB3's train/ metrics and coinrl's eval/ metrics went through the same logger
    with open(tmp_path / "progress.csv") as fh:
        header = next(csv.reader(fh))
    assert "eval/sharpe" in header
    assert "train/loss" in header
    # checkpoints are pruned to keep_checkpoints
    assert len(list_checkpoints(tmp_path)) == cfg.keep_checkpoints


@pytest.mark.slow
def test_early_stopping_ends_training(
    planted: PreparedData, small_env: EnvConfig, train_config: TrainCfg
) -> None:
    cfg = train_config(
        total_timesteps=8192, eval_every_steps=512, early_stopping_patience=1, min_improvement=1e9,
        min_select_steps=0,
    )
    agent = train_model(planted, cfg, small_env)
    assert agent.info["stopped_early"] is True
    assert agent.info["num_timesteps"] <= 1536
    assert len(agent.history) == 2
    assert agent.info["best_step"] == 512


@pytest.mark.slow
def test_resume_continues_from_the_checkpoint_step(
    planted: PreparedData, small_env: EnvConfig, train_config: TrainCfg, tmp_path: Path
) -> None:
    first = train_model(
        planted, train_config(total_timesteps=1024, checkpoint_every_steps=512), small_env, out_dir=tmp_path
    )
    ckpt = latest_checkpoint(tmp_path)
    assert ckpt is not None
    assert ckpt.name == "step_000000001024"
    n_updates = first.model._n_updates
    resumed = train_model(
        planted, train_config(total_timesteps=2048, checkpoint_every_steps=512), small_env,
        out_dir=tmp_path, resume=True,
    )
    assert resumed.info["resumed_from"] == str(ckpt)
    assert resumed.info["num_timesteps"] == 2048  # 1024 more, not 2048 from scratch
    assert resumed.model._n_updates == n_updates + 2 * 2  # two more rollouts of n_epochs=2
    with pytest.raises(ConfigError, match="different"):
        train_model(
            planted, train_config(total_timesteps=4096, checkpoint_every_steps=512, seed=5),
            small_env, out_dir=tmp_path, resume=True,
        )


CHILD = textwrap.dedent(
    """
    import sys
    from coinrl.agents.config import TrainConfig
    from coinrl.agents.train import train_model
    from coinrl.envs.config import EnvConfig
    from coinrl.pipeline.splits import prepare_data_for_model
    from coinrl.pipeline.synthetic import planted_pattern

    spec = {"features": [{"kind": "column", "name": "signal"}, {"kind": "returns", "horizons": [1, 4]}]}
    prepared = prepare_data_for_model(planted_pattern(3000, seed=7), spec=spec)
    cfg = TrainConfig.model_validate(dict(
        total_timesteps=10**7, n_envs=8, seed=0, eval_every_steps=0, early_stopping_patience=None,
        ppo=dict(n_steps=64, batch_size=256, n_epochs=2),
        checkpoint_every_steps=1024, keep_checkpoints=50,
    ))
    train_model(prepared, cfg, EnvConfig(window=8, episode_length_bars=256), out_dir=sys.argv[1])
    """
)


@pytest.mark.slow
def test_killed_training_resumes_from_its_last_checkpoint(
    planted: PreparedData, small_env: EnvConfig, train_config: TrainCfg, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(run)])
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            found = list_checkpoints(run)
            if len(found) >= 2:
                break
            assert proc.poll() is None, "the training process died on its own"
            time.sleep(0.2)
        else:
            pytest.fail("no checkpoint written within 180 s")
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # the simulated crash
        proc.wait()
    ckpt = latest_checkpoint(run)
    assert ckpt is not None
    step = int(ckpt.name.removeprefix("step_"))
    cfg = train_config(total_timesteps=step + 1024, checkpoint_every_steps=1024, keep_checkpoints=50)
    at_ckpt = read_model(ckpt / "model.zip", cfg, env=make_vec_env(planted.train, small_env, cfg.n_envs))
    assert at_ckpt.num_timesteps == step
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    a = train_model(planted, cfg, small_env, out_dir=run, resume=True)
    b = train_model(planted, cfg, small_env, out_dir=copy, resume=True)
    assert a.info["resumed_from"] == str(ckpt)
    assert a.info["num_timesteps"] == step + 1024
    assert a.model._n_updates == at_ckpt._n_updates + 2 * 2
    assert a.info["weights_sha256"] != weights_hash(at_ckpt)  # it trained on
    assert a.info["weights_sha256"] == b.info["weights_sha256"]  # and reproducibly so


@pytest.mark.parametrize(
    ("algo", "env_kw", "extra"),
    [
        ("dqn", {}, {"dqn": {"learning_starts": 256, "buffer_size": 4096, "batch_size": 64}}),
        ("a2c", {}, {}),
        ("sac", {"action": "continuous"}, {"sac": {"learning_starts": 256, "buffer_size": 4096, "batch_size": 64}}),
    ],
)
@pytest.mark.slow
def test_other_algorithms_train_and_evaluate(
    planted: PreparedData, train_config: TrainCfg, algo: str, env_kw: dict[str, str], extra: dict[str, object]
) -> None:
    env = EnvConfig(window=8, episode_length_bars=256, **env_kw)  # type: ignore[arg-type]
    cfg = train_config(algo=algo, total_timesteps=1024, eval_every_steps=512, **extra)
    agent = train_model(planted, cfg, env)
    assert agent.info["num_timesteps"] >= 1024
    assert len(agent.history) >= 1


@pytest.mark.slow
def test_recurrent_ppo_trains_when_sb3_contrib_is_installed(
    planted: PreparedData, small_env: EnvConfig, train_config: TrainCfg
) -> None:
    pytest.importorskip("sb3_contrib")
    cfg = train_config(
        algo="recurrent_ppo", total_timesteps=1024, eval_every_steps=1024,
        recurrent_ppo={"n_steps": 64, "batch_size": 256, "n_epochs": 1, "lstm_hidden_size": 16},
    )
    agent = train_model(planted, cfg, small_env)
    assert len(agent.history) == 1


def test_algorithm_must_fit_the_action_space(planted: PreparedData, train_config: TrainCfg) -> None:
    with pytest.raises(ConfigError, match="dqn needs a discrete"):
        train_model(planted, train_config(algo="dqn"), EnvConfig(window=8, action="continuous"))
    with pytest.raises(ConfigError, match="sac needs a continuous"):
        train_model(planted, train_config(algo="sac"), EnvConfig(window=8))


def test_train_config_is_validated_with_field_paths() -> None:
    with pytest.raises(ConfigError, match="batch_size"):
        validate_config(TrainConfig, {"n_envs": 2, "ppo": {"n_steps": 8, "batch_size": 64}})
    with pytest.raises(ConfigError, match=r"ppo\.n_epochs"):
        validate_config(TrainConfig, {"ppo": {"n_epochs": 0}})
    with pytest.raises(ConfigError, match="unknown key"):
        validate_config(TrainConfig, {"learning_rat": 0.1})
    assert TrainConfig().with_seed(7).seed == 7
    assert TrainConfig(seed=3).with_seed(7).seed == 3


def test_a_checkpoint_without_fields_added_later_resumes_at_their_defaults(
    planted: PreparedData, small_env: EnvConfig, train_config: TrainCfg, tmp_path: Path
) -> None:
    train_model(planted, train_config(total_timesteps=512, checkpoint_every_steps=512), small_env, out_dir=tmp_path)
    ckpt = latest_checkpoint(tmp_path)
    assert ckpt is not None
    state = json.loads((ckpt / "state.json").read_text())
    del state["resume_key"]["train"]["ent_coef_final"]  # as written by a coinrl before these fields
    del state["resume_key"]["env"]["turnover_penalty"]
    (ckpt / "state.json").write_text(json.dumps(state))
    with pytest.raises(ConfigError, match="different"):  # a new field set to a non-default value
        train_model(planted, train_config(total_timesteps=1024, checkpoint_every_steps=512),
                    small_env.model_copy(update={"turnover_penalty": 0.1}), out_dir=tmp_path, resume=True)
    resumed = train_model(planted, train_config(total_timesteps=1024, checkpoint_every_steps=512), small_env,
                          out_dir=tmp_path, resume=True)
    assert resumed.info["resumed_from"] == str(ckpt)
