"""Training levers of the recipe: the model-selection floor and the entropy schedule."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from coinrl.agents.config import TrainConfig
from coinrl.agents.train import train_model
from coinrl.envs.config import EnvConfig
from coinrl.pipeline.errors import ConfigError
from coinrl.pipeline.splits import PreparedData

TrainCfg = Callable[..., TrainConfig]


def test_selection_floor_defaults_to_a_quarter_of_the_budget() -> None:
    assert TrainConfig(total_timesteps=1000).select_floor == 250
    assert TrainConfig(total_timesteps=1000, min_select_steps=0).select_floor == 0
    assert TrainConfig(total_timesteps=1000, min_select_steps=600).select_floor == 600


def test_selection_floor_beyond_the_budget_is_refused() -> None:
    with pytest.raises((ValueError, ConfigError), match="min_select_steps"):
        TrainConfig(total_timesteps=1000, min_select_steps=1001)


@pytest.mark.slow
def test_barely_trained_network_with_the_best_early_score_is_not_kept(
    planted: PreparedData, small_env: EnvConfig, train_config: TrainCfg
) -> None:
    # seed 3: the 512-step network scores best on validation (checked below); the floor
    # of 1024 steps must keep a later one
    cfg = train_config(seed=3, eval_every_steps=512, min_select_steps=1024)
    agent = train_model(planted, cfg, small_env)
    steps = [h["step"] for h in agent.history]
    assert steps == [512, 1024, 1536, 2048]
    early_best = max(agent.history, key=lambda h: h["score"])
    assert early_best["step"] == 512  # the precondition: the early network wins on validation
    kept = max((h for h in agent.history if h["step"] >= 1024), key=lambda h: h["score"])
    assert agent.info["best_step"] == kept["step"] >= 1024
    assert agent.info["best_score"] == kept["score"] < early_best["score"]


def test_entropy_schedule_runs_from_ent_coef_to_ent_coef_final() -> None:
    cfg = TrainConfig(total_timesteps=1000, ent_coef_final=0.0, ppo={"ent_coef": 0.02})
    assert cfg.ent_coef_at(0) == 0.02
    assert cfg.ent_coef_at(500) == pytest.approx(0.01)
    assert cfg.ent_coef_at(1000) == 0.0
    assert cfg.ent_coef_at(5000) == 0.0  # clamped past the budget (a resumed, longer run)
    assert TrainConfig(total_timesteps=1000).ent_coef_at(700) == 0.01  # no schedule: constant
    a2c = TrainConfig(algo="a2c", total_timesteps=1000, ent_coef_final=0.05, a2c={"ent_coef": 0.0})
    assert a2c.ent_coef_at(1000) == 0.05
    with pytest.raises((ValueError, ConfigError), match="ent_coef_final"):
        TrainConfig(algo="dqn", ent_coef_final=0.0)


@pytest.mark.slow
def test_entropy_schedule_reaches_its_final_value_and_changes_training(
    planted: PreparedData, small_env: EnvConfig, train_config: TrainCfg
) -> None:
    plain = train_model(planted, train_config(), small_env)
    scheduled = train_model(planted, train_config(ent_coef_final=0.0), small_env)
    assert plain.model.ent_coef == 0.01
    assert scheduled.model.ent_coef == 0.0  # the last update (2,048 of 2,048 steps) used the final value
    assert scheduled.info["weights_sha256"] != plain.info["weights_sha256"]
