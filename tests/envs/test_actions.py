"""The one action map (``ActionMap``) as every single-asset env, the rollouts and live use it."""

from __future__ import annotations

import numpy as np
import pytest
from market_helpers import random_market

from coinrl.agents.rollout import actions_to_targets, targets_to_actions
from coinrl.envs import TradingEnv
from coinrl.envs.actions import ActionMap
from coinrl.envs.config import EnvConfig
from coinrl.envs.vector import TradingVectorEnv
from coinrl.pipeline.errors import ConfigError

CONT = EnvConfig(action="continuous", allow_short=True, max_leverage=2.0, maintenance_margin_rate=0.05)
LONG = EnvConfig(action="continuous", allow_short=False, max_leverage=1.0)
DISC = EnvConfig(action="discrete", allow_short=True, max_leverage=1.0)


@pytest.mark.parametrize("cfg", [CONT, LONG])
def test_continuous_is_the_clip_to_the_exposure_bounds(cfg: EnvConfig) -> None:
    amap = ActionMap.from_env_config(cfg)
    lo, hi = cfg.exposure_bounds
    xs = np.linspace(-5.0, 5.0, 101).astype(np.float32)
    want = np.clip(xs.astype(np.float64), lo, hi)
    assert [amap.exposure(np.array([x])) for x in xs] == want.tolist()
    np.testing.assert_array_equal(amap.exposures(xs[:, None]), want)
    np.testing.assert_array_equal(amap.weights_batch(xs[:, None])[:, 0], want)


def test_discrete_indexes_the_positions_and_inverts() -> None:
    amap = ActionMap.from_env_config(DISC)
    assert [amap.exposure(a) for a in (0, 1, 2, np.int64(2), np.array([1]), 2.0)] == [-1.0, 0.0, 1.0, 1.0, 0.0, 1.0]
    np.testing.assert_array_equal(amap.exposures(np.array([[0, 2], [1, 1]])), [[-1.0, 1.0], [0.0, 0.0]])
    np.testing.assert_array_equal(amap.actions_for([1.0, -1.0, 0.0]), [2, 0, 1])
    with pytest.raises(ConfigError, match="not one of the env's discrete positions"):
        amap.actions_for([0.5])


@pytest.mark.parametrize(("cfg", "bad", "match"), [
    (DISC, 3, r"integer in \[0, 3\)"), (DISC, 0.5, "integer"), (DISC, -1, "integer"),
    (CONT, [float("nan")], "NaN"), (CONT, [float("inf")], "inf"), (CONT, [1.0, 2.0], "one action"),
])
def test_bad_actions_are_errors_everywhere(cfg: EnvConfig, bad: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ActionMap.from_env_config(cfg).exposure(bad)
    env = TradingEnv(random_market(80), cfg, window=4, episode_length_bars=10)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=match):
        env.step(bad)


def test_every_caller_gets_the_same_targets() -> None:
    """TradingEnv, the vector env and the rollout helpers map the same actions to the same
    targets (the env's books see the target: equal positions prove equal targets)."""
    md = random_market(120)
    rng = np.random.default_rng(3)
    acts = rng.normal(0.0, 2.0, (30, 1)).astype(np.float32)
    env = TradingEnv(md, CONT, window=4, episode_length_bars=30)
    venv = TradingVectorEnv(1, md, CONT, window=4, episode_length_bars=30)
    env.reset(seed=5)
    venv.reset(seed=5)
    for a in acts:
        *_, info = env.step(a)
        *_, vinfo = venv.step(a[None])
        assert info["position_base"] == vinfo["position_base"][0]
    assert actions_to_targets(acts, CONT).tolist() == [env.action_map.exposure(a) for a in acts]
    assert np.array_equal(actions_to_targets(targets_to_actions([0.25, 9.0], CONT), CONT), [0.25, 2.0])


@pytest.mark.parametrize(("positions", "gross", "net", "short", "n_assets"), [
    ((-1.0, 0.0, 1.0), 2.0, 2.0, True, 2),   # every combination fits: no projection needed
    ((-1.0, 0.0, 1.0), 1.5, 0.5, True, 2),   # some do not: projected
    ((0.0, 0.5, 1.0), 1.0, 1.0, False, 3),
    ((0.0, 1.0), 1.0, 1.0, False, 1),
])
def test_discrete_weights_are_the_projected_positions(
    positions: tuple[float, ...], gross: float, net: float, short: bool, n_assets: int
) -> None:
    """The shortcut for combinations inside the budget changes no weight: every combination
    against the positions run through the continuous projection."""
    amap = ActionMap(kind="discrete", symbols=tuple(f"A{i}" for i in range(n_assets)), gross=gross,
                     net=net, allow_short=short, positions=positions)
    cont = ActionMap(kind="continuous", symbols=amap.symbols, gross=gross, net=net, allow_short=short)
    idx = np.stack(np.meshgrid(*[np.arange(len(positions))] * n_assets), -1).reshape(-1, n_assets)
    want = cont.weights_batch(np.asarray(positions)[idx])
    assert np.array_equal(amap.weights_batch(idx), want)
