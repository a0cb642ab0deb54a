"""evaluate_model: agent metrics beside baselines on the same env and costs."""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import pytest

from coinrl.agents.agent import TrainedAgent
from coinrl.agents.baselines import count_changes
from coinrl.agents.evaluate import evaluate_model
from coinrl.agents.plots import equity_curve_figure
from coinrl.envs.config import EnvConfig
from coinrl.pipeline.errors import ConfigError
from coinrl.pipeline.splits import PreparedData


def test_report_holds_agent_policy_and_baselines(
    planted: PreparedData, small_env: EnvConfig, signal_policy: Callable[[np.ndarray], np.ndarray]
) -> None:
    rep = evaluate_model(signal_policy, planted.test, small_env, n_random=3)
    assert set(rep.baselines) == {"buy_and_hold", "flat", "random"}
    for key in ("total_return", "annualised_return", "sharpe", "sortino", "max_drawdown", "calmar",
                "win_rate", "profit_factor", "turnover", "exposure", "fees_paid_quote"):
        assert key in rep.agent
        assert key in rep.baselines["buy_and_hold"]
    # the signal rule is always long or short
    assert rep.policy["action_frac/1"] + rep.policy["action_frac/-1"] == pytest.approx(1.0)
    assert rep.policy["action_frac/0"] == 0.0
    assert rep.policy["mean_episode_reward"] == pytest.approx(float(rep.rollout.rewards.sum()))
    # the random baseline trades as often as the agent
    changes = count_changes(rep.rollout.target_exposure, threshold=small_env.rebalance_threshold)
    assert rep.baselines["random"]["n_changes"] == changes
    assert rep.margin()["flat"] == pytest.approx(rep.agent["total_return"])
    flat = rep.flat("eval")
    assert flat["eval/agent/sharpe"] == rep.agent["sharpe"]
    assert flat["eval/buy_and_hold/total_return"] == rep.baselines["buy_and_hold"]["total_return"]
    json.dumps(rep.to_dict(), allow_nan=False)


def test_agent_evaluation_uses_its_own_env_config(trained: TrainedAgent, planted: PreparedData) -> None:
    rep = evaluate_model(trained, planted.validation, n_random=1)
    assert rep.meta["n_decisions"] == len(planted.validation) - trained.env_config.window
    assert rep.split == "validation"
    fig = equity_curve_figure(rep)
    assert len(fig.axes) == 2


def test_a_bare_policy_needs_the_env_config(trained: TrainedAgent, planted: PreparedData) -> None:
    with pytest.raises(ConfigError, match="env_config"):
        evaluate_model(trained.model, planted.validation)
