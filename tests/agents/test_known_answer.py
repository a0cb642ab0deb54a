"""The known-answer check: PPO with the DEFAULT training config finds a planted signal.

On ``planted_pattern`` data the sign of ``signal[t]`` predicts bar t+1's return. PPO trained
with the shipped defaults (``TrainConfig()`` with only the seed set, default ``EnvConfig``:
0.1 % taker fee, 1 bp slippage) must beat buy-and-hold AND the turnover-matched random policy
on the held-out TEST split, net of fees, for each of three seeds (each seed also draws its own
market). Measured on the dev machine: test-split total return +0.90 / +3.00 / +1.93 against
buy-and-hold -0.07 / -0.69 / -0.63 and random -0.66 / -0.35 / -0.58 (about 28 s per seed).
"""

from __future__ import annotations

import pytest

from coinrl.agents.config import TrainConfig
from coinrl.agents.evaluate import evaluate_model
from coinrl.agents.train import train_model
from coinrl.envs.config import EnvConfig
from coinrl.pipeline.splits import prepare_data_for_model
from coinrl.pipeline.synthetic import planted_pattern

SPEC = {
    "features": [
        {"kind": "column", "name": "signal"},
        {"kind": "returns", "horizons": [1, 4]},
    ]
}
MARGIN = 0.20
"""Required lead of the agent's test-split total return (a fraction) over each baseline."""


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_default_ppo_beats_buy_and_hold_and_random_on_a_planted_signal(seed: int) -> None:
    prepared = prepare_data_for_model(planted_pattern(20_000, seed=100 + seed), spec=SPEC)
    config = TrainConfig(seed=seed)  # the shipped defaults, 300k steps
    assert config.total_timesteps == TrainConfig().total_timesteps
    agent = train_model(prepared, config, EnvConfig())
    report = evaluate_model(agent, prepared.test, n_random=5, seed=seed)
    agent_ret = report.agent["total_return"]
    bh = report.baselines["buy_and_hold"]["total_return"]
    rnd = report.baselines["random"]["total_return"]
    assert report.agent["fees_paid_quote"] > 0  # it trades, and pays for it
    assert agent_ret > bh + MARGIN, (agent_ret, bh)
    assert agent_ret > rnd + MARGIN, (agent_ret, rnd)
    assert report.agent["sharpe"] > report.baselines["buy_and_hold"]["sharpe"]
