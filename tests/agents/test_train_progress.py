"""Training progress never runs past its end; DQN checkpoints leave the replay buffer out by default."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from coinrl.agents.config import TrainConfig
from coinrl.agents.progress import planned_timesteps
from coinrl.agents.train import REPLAY_FILE, latest_checkpoint, train_model
from coinrl.envs.config import EnvConfig
from coinrl.pipeline.splits import PreparedData

TrainCfg = Callable[..., TrainConfig]


def test_progress_ends_exactly_at_the_steps_trained_never_past_them(
    planted: PreparedData, small_env: EnvConfig, train_config: TrainCfg
) -> None:
    cfg = train_config(total_timesteps=1000)  # rollouts of 64 * 8 = 512: SB3 trains 1,024
    seen: list[tuple[int, int]] = []
    agent = train_model(planted, cfg, small_env, progress=lambda done, total: seen.append((done, total)))
    trained = agent.info["num_timesteps"]
    assert trained == planned_timesteps(cfg) == 1024
    assert {total for _, total in seen} == {1024}
    assert all(done <= total for done, total in seen)
    assert seen[0][0] == 0
    assert seen[-1] == (1024, 1024)


def test_planned_steps_round_up_to_whole_collections() -> None:
    ppo = TrainConfig.model_validate({"total_timesteps": 30_000, "n_envs": 8, "ppo": {"n_steps": 128, "batch_size": 512}})
    assert planned_timesteps(ppo) == 30_720  # the 30,720 / 30,000
    assert planned_timesteps(ppo, done=30_720) == 30_720
    dqn = TrainConfig.model_validate({"algo": "dqn", "total_timesteps": 1000, "n_envs": 64, "dqn": {"train_freq": 2}})
    assert planned_timesteps(dqn) == 1024


def _dqn(train_config: TrainCfg, **extra: object) -> TrainConfig:
    base: dict[str, object] = {
        "algo": "dqn", "total_timesteps": 512, "checkpoint_every_steps": 256,
        "dqn": {"learning_starts": 128, "buffer_size": 4096, "batch_size": 64},
    }
    return train_config(**{**base, **extra})


def test_dqn_checkpoints_hold_no_replay_buffer_unless_asked(
    planted: PreparedData, train_config: TrainCfg, tmp_path: Path
) -> None:
    env = EnvConfig(window=8, episode_length_bars=256, action="discrete")
    train_model(planted, _dqn(train_config), env, out_dir=tmp_path / "default")
    ckpt = latest_checkpoint(tmp_path / "default")
    assert ckpt is not None
    assert not (ckpt / REPLAY_FILE).exists()
    # a resumed run without the buffer still trains on (from an empty buffer)
    resumed = train_model(
        planted, _dqn(train_config, total_timesteps=768), env, out_dir=tmp_path / "default", resume=True
    )
    assert resumed.info["num_timesteps"] == 768

    train_model(planted, _dqn(train_config, save_replay_buffer=True), env, out_dir=tmp_path / "opt_in")
    ckpt = latest_checkpoint(tmp_path / "opt_in")
    assert ckpt is not None
    assert (ckpt / REPLAY_FILE).stat().st_size > 0
