"""The SB3 VecEnv adapter: SB3's autoreset contract, seeding, and PPO training on it."""

from __future__ import annotations

import numpy as np
import pytest
from market_helpers import random_market
from stable_baselines3 import PPO
from stable_baselines3.common.monitor import Monitor

from coinrl.envs.sb3 import TradingSB3VecEnv


def test_step_follows_sb3_same_step_autoreset_contract() -> None:
    venv = TradingSB3VecEnv(3, random_market(300), episode_length_bars=4)
    venv.seed(5)
    obs = venv.reset()
    assert obs.shape == (3, 24 * 5 + 4)
    for _ in range(3):
        obs, rew, dones, infos = venv.step(np.array([2, 0, 1]))
        assert not dones.any()
        assert rew.dtype == np.float32
        assert all({"ts_ms", "equity_quote", "position_base", "fees_paid_quote"} <= set(i) for i in infos)
    kept = obs.copy()
    obs, rew, dones, infos = venv.step(np.array([2, 0, 1]))
    assert dones.all()
    for i in range(3):
        term_obs = infos[i]["terminal_observation"]
        assert term_obs.shape == obs[i].shape
        assert infos[i]["TimeLimit.truncated"] is True  # ran out of episode, not liquidated
        assert infos[i]["episode"]["l"] == 4
        assert np.array_equal(obs[i, -4:], [0.0, 0.0, 0.0, 1.0])  # already the new episode
    assert infos[0]["position_base"] > 0.0
    assert infos[1]["position_base"] < 0.0
    assert np.array_equal(kept, kept.copy())  # returned arrays are the caller's
    assert venv.env_is_wrapped(Monitor) == [True, True, True]


def test_seeded_resets_are_reproducible() -> None:
    def run() -> np.ndarray:
        venv = TradingSB3VecEnv(4, random_market(600), episode_length_bars=30)
        venv.seed(123)
        venv.reset()
        out = []
        for k in range(40):
            obs, rew, dones, _ = venv.step(np.full(4, k % 3))
            out.append(rew)
        return np.array(out)

    assert np.array_equal(run(), run())


@pytest.mark.slow
def test_ppo_learns_2048_steps_on_the_adapter() -> None:
    venv = TradingSB3VecEnv(8, random_market(2_000, seed=3), window=16, episode_length_bars=128)
    model = PPO("MlpPolicy", venv, n_steps=256, batch_size=256, n_epochs=2, seed=0, device="cpu")
    model.learn(2048)
    assert model.num_timesteps >= 2048
    assert len(model.ep_info_buffer) > 0  # episodes finished and were logged via the infos


@pytest.mark.slow
def test_ppo_accepts_dict_observations() -> None:
    venv = TradingSB3VecEnv(4, random_market(500), obs_mode="dict", window=8, episode_length_bars=32)
    model = PPO("MultiInputPolicy", venv, n_steps=32, batch_size=64, n_epochs=1, seed=0, device="cpu")
    model.learn(128)
    assert model.num_timesteps >= 128
