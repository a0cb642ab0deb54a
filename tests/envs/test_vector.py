"""TradingVectorEnv: bit-identical to N single envs, Gymnasium 1.x autoreset, registration."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode
from market_helpers import copy_obs, obs_equal, random_market

import coinrl.envs  # noqa: F401
from coinrl.envs import TradingEnv
from coinrl.envs.vector import INFO_KEYS, TradingVectorEnv

CASES = [
    pytest.param({}, 1, id="default"),
    pytest.param({"obs_mode": "dict"}, 1, id="dict-obs"),
    pytest.param({"action": "continuous", "max_leverage": 3.0}, 1, id="continuous"),
    # high leverage on a volatile market: liquidations and autoresets mid-run
    pytest.param({"action": "continuous", "max_leverage": 25.0, "maintenance_margin_rate": 0.02,
                  "rebalance_threshold": 0.0, "reward": "drawdown_penalised"}, 1, id="liquidations"),
    pytest.param({"delay_bars": 3, "reward": "differential_sharpe", "lot_size_base": 0.001,
                  "min_notional_quote": 50.0, "impact_coef": 0.5, "borrow_rate_per_bar": 1e-5}, 1,
                 id="delay-rules-costs"),
    pytest.param({"allow_short": False, "positions": (0.0, 0.5, 1.0)}, 1, id="spot"),
    pytest.param({"window": 4}, 3, id="three-markets"),
]


def _markets(k: int) -> list[Any]:
    return [random_market(400 + 50 * i, seed=i, funding=True, vol=0.03, symbol=f"M{i}") for i in range(k)]


@pytest.mark.parametrize(("kw", "n_markets"), CASES)
def test_batched_env_equals_single_envs_bit_for_bit(kw: dict[str, Any], n_markets: int) -> None:
    n, steps, seed = 6, 160, 11
    data = _markets(n_markets)
    data_arg = data if n_markets > 1 else data[0]
    venv = TradingVectorEnv(n, data_arg, episode_length_bars=40, **kw)
    obs, infos = venv.reset(seed=seed)
    venv.action_space.seed(seed)
    actions = [venv.action_space.sample() for _ in range(steps)]
    batched = [(copy_obs(obs), {k: infos[k].copy() for k in INFO_KEYS})]
    for a in actions:
        obs, r, te, tr, infos = venv.step(a)
        batched.append((copy_obs(obs), r.copy(), te.copy(), tr.copy(), {k: infos[k].copy() for k in INFO_KEYS}))
    n_done = sum(int(b[2].sum() + b[3].sum()) for b in batched[1:])
    assert n_done > 0  # episodes end and restart inside the run
    if kw.get("max_leverage") == 25.0:
        assert sum(int(b[2].sum()) for b in batched[1:]) > 0  # some were liquidated

    for i in range(n):
        env = TradingEnv(data_arg, episode_length_bars=40, **kw)
        o, info = env.reset(seed=seed + i)
        def pick(x: Any, i: int = i) -> Any:
            return {k: v[i] for k, v in x.items()} if isinstance(x, dict) else x[i]

        assert obs_equal(o, pick(batched[0][0]))
        assert all(info[k] == batched[0][1][k][i] for k in INFO_KEYS)
        done = False
        for k, a in enumerate(actions, start=1):
            if done:  # NEXT_STEP autoreset: the step after the end is the reset
                o, info = env.reset()
                r, te, tr = 0.0, False, False
            else:
                o, r, te, tr, info = env.step(a[i])
            done = te or tr
            b_obs, b_r, b_te, b_tr, b_info = batched[k]
            assert obs_equal(o, pick(b_obs)), (i, k)
            assert (r, te, tr) == (b_r[i], b_te[i], b_tr[i]), (i, k)
            assert all(info[key] == b_info[key][i] for key in INFO_KEYS), (i, k)


def test_next_step_autoreset_semantics() -> None:
    venv = TradingVectorEnv(3, random_market(300), episode_length_bars=5)
    assert venv.metadata["autoreset_mode"] is AutoresetMode.NEXT_STEP
    venv.reset(seed=0)
    for _ in range(4):
        _, _, te, tr, _ = venv.step(np.array([2, 0, 1]))
        assert not (te.any())
        assert not (tr.any())
    _, _, te, tr, info = venv.step(np.array([2, 0, 1]))
    assert tr.all()
    assert not te.any()
    obs, r, te, tr, info = venv.step(np.array([2, 2, 2]))  # ignored: this step resets
    assert (r == 0.0).all()
    assert not (te.any())
    assert not (tr.any())
    assert (info["equity_quote"] == 10_000.0).all()
    assert (info["position_base"] == 0.0).all()
    assert (obs[:, -4:] == np.array([0.0, 0.0, 0.0, 1.0], dtype=np.float32)).all()


def test_same_step_autoreset_reports_final_observation() -> None:
    venv = TradingVectorEnv(2, random_market(300), episode_length_bars=3, autoreset_mode="SameStep")
    venv.reset(seed=0)
    for _ in range(2):
        venv.step(np.array([2, 0]))
    obs, r, te, tr, info = venv.step(np.array([2, 0]))
    assert tr.all()
    assert info["_final_obs"].all()
    assert info["final_obs"][0].shape == obs[0].shape
    assert not np.array_equal(info["final_obs"][0], obs[0])  # obs[0] is already the new start
    assert info["final_info"][1]["position_base"] < 0.0  # the short held at the end
    assert (info["position_base"] == 0.0).all()


def test_make_vec_returns_the_native_batched_env() -> None:
    venv = gym.make_vec("coinrl/Trading-v0", num_envs=4, vectorization_mode="vector_entry_point",
                        data=random_market(300), window=8, episode_length_bars=20)
    assert isinstance(venv.unwrapped, TradingVectorEnv)
    obs, info = venv.reset(seed=0)
    assert obs.shape == (4, 8 * 5 + 4)
    assert obs.dtype == np.float32
    assert venv.observation_space.contains(obs)
    obs, r, te, tr, info = venv.step(venv.action_space.sample())
    for k in INFO_KEYS:
        assert info[k].shape == (4,)
        assert info["_" + k].all()


def test_reset_mask_resets_only_selected_envs_and_copy_semantics() -> None:
    venv = TradingVectorEnv(3, random_market(300), episode_length_bars=50)
    obs0, _ = venv.reset(seed=1)
    t0 = venv.t.copy()
    obs1, *_ = venv.step(np.array([2, 2, 2]))
    assert not np.shares_memory(obs0, obs1)  # copy=True by default: the caller keeps its arrays
    venv.reset(options={"reset_mask": np.array([False, True, False])})
    assert venv.t[0] == t0[0] + 1
    assert venv.t[2] == t0[2] + 1
    fast = TradingVectorEnv(3, random_market(300), episode_length_bars=50, copy=False)
    a, _ = fast.reset(seed=1)
    b, *_ = fast.step(np.array([1, 1, 1]))
    assert a is b  # copy=False: the env's own buffer


def test_bad_actions_are_rejected() -> None:
    venv = TradingVectorEnv(2, random_market(200), episode_length_bars=20)
    venv.reset(seed=0)
    with pytest.raises(ValueError, match=r"must be in \[0, 3\), got 3"):
        venv.step(np.array([0, 3]))
    with pytest.raises(ValueError, match=r"must be in \[0, 3\), got -1"):
        venv.step(np.array([-1, 0]))
    cont = TradingVectorEnv(2, random_market(200), episode_length_bars=20, action="continuous")
    cont.reset(seed=0)
    with pytest.raises(ValueError, match="NaN"):
        cont.step(np.array([[np.nan], [0.0]], dtype=np.float32))


def test_one_shared_feature_matrix_for_all_envs() -> None:
    md = random_market(500)
    venv = TradingVectorEnv(64, md, episode_length_bars=100)
    assert np.shares_memory(venv.features, md.features)  # no per-env copies
    assert venv.books.cash_quote.shape == (64,)


def test_whole_data_episodes_on_several_markets_end_at_each_market_end() -> None:
    markets = [random_market(60, seed=1), random_market(90, seed=2)]
    venv = TradingVectorEnv(4, markets, window=5, episode_length_bars=None)
    venv.reset(seed=3)
    ends = {int(m.ts_ms[-1]) for m in markets}
    seen: set[int] = set()
    for _ in range(90):
        _, _, te, tr, info = venv.step(np.ones(4, dtype=np.int64))
        seen |= {int(info["ts_ms"][i]) for i in np.flatnonzero(tr)}
    assert seen == ends  # both markets were drawn and each episode ran to its market's last bar


@pytest.mark.parametrize("obs_mode", ["box", "dict"])
def test_default_copy_observations_stay_intact_across_blocks(obs_mode: str) -> None:
    venv = TradingVectorEnv(64, random_market(400), episode_length_bars=100, obs_mode=obs_mode)
    obs, _ = venv.reset(seed=0)
    kept, snaps = [], []
    for k in range(3 * venv._slabs + 2):  # several blocks of slabs
        kept.append(obs)
        snaps.append(copy_obs(obs))
        obs, *_ = venv.step(np.full(64, k % 3))
    assert all(obs_equal(a, b) for a, b in zip(kept, snaps, strict=True))
