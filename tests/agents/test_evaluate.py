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


@pytest.mark.slow
def test_agent_evaluation_uses_its_own_env_config(trained: TrainedAgent, planted: PreparedData) -> None:
    rep = evaluate_model(trained, planted.validation, n_random=1)
    assert rep.meta["n_decisions"] == len(planted.validation) - trained.env_config.window
    assert rep.split == "validation"
    fig = equity_curve_figure(rep)
    assert len(fig.axes) == 2


def test_a_bare_policy_needs_the_env_config(trained: TrainedAgent, planted: PreparedData) -> None:
    with pytest.raises(ConfigError, match="env_config"):
        evaluate_model(trained.model, planted.validation)


def test_directional_quality_scores_calls_against_the_move_net_of_costs() -> None:
    from coinrl.agents.evaluate import directional_lines, directional_quality
    from coinrl.agents.rollout import Rollout

    def rollout(targets: list[float]) -> Rollout:
        z = np.zeros(5)
        return Rollout(
            ts_ms=np.arange(5, dtype=np.int64), equity_quote=np.ones(5), exposure=z, position_base=z,
            close_quote=np.array([100.0, 110.0, 99.0, 99.05, 120.0]), actions=np.zeros(4),
            target_exposure=np.array(targets), rewards=np.zeros(4), fees_paid_quote=0.0,
            slippage_paid_quote=0.0, turnover_quote=0.0, liquidated=False, timeframe="1h",
            open_quote=np.array([100.0, 100.0, 110.0, 99.0, 100.0]),
        )

    cfg = EnvConfig(window=1, action="continuous")  # cost 0.1 % fee + 1 bp slippage
    # held bars move +10 %, -10 %, +0.05 % (less than the cost: flat is right), +20 %
    perfect = directional_quality(rollout([1.0, -1.0, 0.0, 1.0]), cfg)
    assert perfect["direction/accuracy"] == 1.0
    assert perfect["direction/n"] == 4.0
    assert perfect["direction/actual_long"] == 0.5
    assert perfect["direction/actual_flat"] == 0.25
    assert perfect["direction/baseline_accuracy"] == 0.5
    wrong = directional_quality(rollout([1.0, -1.0, 0.0, -0.5]), cfg)
    assert wrong["direction/accuracy"] == 0.75
    assert wrong["direction/precision_short"] == 0.5
    assert wrong["direction/recall_long"] == 0.5
    assert wrong["direction/precision_long"] == 1.0
    assert wrong["direction/called_short"] == 0.5
    lines = directional_lines(wrong)
    assert lines[0].startswith("directional calls: accuracy 75% over 4 decisions")


def test_evaluate_model_reports_directional_quality_beside_trading_metrics(
    planted: PreparedData, small_env: EnvConfig, signal_policy: Callable[[np.ndarray], np.ndarray]
) -> None:
    rep = evaluate_model(signal_policy, planted.test, small_env, n_random=1)
    assert 0.0 <= rep.policy["direction/accuracy"] <= 1.0
    assert rep.policy["direction/n"] == rep.rollout.n_steps - (small_env.delay_bars - 1)
    balance = sum(rep.policy[f"direction/actual_{c}"] for c in ("long", "short", "flat"))
    assert balance == pytest.approx(1.0)
    assert "eval/policy/direction/accuracy" in rep.flat("eval")  # what W&B receives
