"""PortfolioEnv, its batched twin and the SB3 adapter: API conformance, single = batched,
A = 1 = TradingEnv, the constant-rebalanced portfolio, budget, no look-ahead across assets,
masked assets, copies, and bad inputs naming the asset."""

from __future__ import annotations

import copy
import pickle
import warnings
from dataclasses import replace
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from hypothesis import given, settings
from hypothesis import strategies as st
from market_helpers import random_market, random_portfolio
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from coinrl.envs import PortfolioEnv, PortfolioVectorEnv, TradingEnv, kernel
from coinrl.envs import portfolio_kernel as pk
from coinrl.envs.actions import ActionMap
from coinrl.envs.sb3 import PortfolioSB3VecEnv
from coinrl.pipeline.errors import ConfigError

VARIANTS = [
    {"action": "continuous"},
    {"action": "continuous", "allow_short": False, "max_leverage": 1.0},
    {"action": "discrete", "positions": (-0.5, 0.0, 0.5), "max_leverage": 2.0},
]


@pytest.mark.parametrize("kw", VARIANTS)
def test_gymnasium_and_sb3_env_checkers_pass(kw: dict[str, Any]) -> None:
    data = random_portfolio(300, 3, n_market_features=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", category=UserWarning)
        warnings.filterwarnings("ignore", message=".*symmetric.*")  # [0, L] long-only space
        gym_check_env(PortfolioEnv(data, episode_length_bars=50, window=4, **kw), skip_render_check=True)
        sb3_check_env(PortfolioEnv(data, episode_length_bars=50, window=4, **kw), warn=True)


def test_registered_single_and_vector_entry_points() -> None:
    env = gym.make("coinrl/Portfolio-v0", window=8)
    obs, info = env.reset(seed=0)
    assert obs.shape == env.observation_space.shape
    assert info["position_base"].shape == (4,)
    venv = gym.make_vec("coinrl/Portfolio-v0", num_envs=3, vectorization_mode="vector_entry_point", window=8)
    obs, _ = venv.reset(seed=0)
    assert obs.shape == (3, *env.observation_space.shape)


def _rollout_single(data: Any, seeds: list[int], actions: np.ndarray, **kw: Any) -> list[tuple]:
    envs = [PortfolioEnv(data, **kw) for _ in seeds]
    trace = []
    obs = [e.reset(seed=s) for e, s in zip(envs, seeds, strict=True)]
    trace.append(("reset", np.stack([o for o, _ in obs]), np.array([i["equity_quote"] for _, i in obs])))
    ended = [False] * len(envs)
    for act in actions:
        rows = []
        for i, e in enumerate(envs):
            if ended[i]:  # NEXT_STEP: the ended env restarts, action ignored
                o, info = e.reset()
                rows.append((o, 0.0, False, False, info))
                ended[i] = False
            else:
                o, r, te, tr, info = e.step(act[i])
                rows.append((o, r, te, tr, info))
                ended[i] = te or tr
        trace.append((np.stack([r[0] for r in rows]), np.array([r[1] for r in rows]),
                      np.array([r[2] for r in rows]), np.array([r[3] for r in rows]),
                      np.stack([r[4]["position_base"] for r in rows]),
                      np.stack([r[4]["weights"] for r in rows]),
                      np.array([r[4]["equity_quote"] for r in rows]),
                      np.array([r[4]["ts_ms"] for r in rows])))
    return trace


def test_single_and_batched_envs_give_identical_trajectories() -> None:
    data = random_portfolio(400, 3, funding=True, vol=0.03)
    kw = {"episode_length_bars": 20, "window": 6, "max_leverage": 5.0, "maintenance_margin_rate": 0.05}
    n = 4
    actions = np.random.default_rng(0).uniform(-4, 4, (70, n, 3)).astype(np.float32)
    single = _rollout_single(data, [7 + i for i in range(n)], actions, **kw)
    venv = PortfolioVectorEnv(n, data, **kw)
    obs, info = venv.reset(seed=7)
    assert np.array_equal(obs, single[0][1])
    assert np.array_equal(info["equity_quote"], single[0][2])
    for act, want in zip(actions, single[1:], strict=True):
        obs, r, te, tr, info = venv.step(act)
        got = (obs, r, te, tr, info["position_base"], info["weights"], info["equity_quote"],
               info["ts_ms"])
        for g, w in zip(got, want, strict=True):
            assert np.array_equal(g, w)


def test_one_asset_portfolio_env_equals_trading_env_bit_for_bit() -> None:
    md = random_market(500, vol=0.03, funding=True)
    kw = {"action": "continuous", "max_leverage": 3.0, "episode_length_bars": 300, "window": 5,
          "borrow_rate_per_bar": 1e-5, "impact_coef": 0.1, "reward": "differential_sharpe"}
    a, b = TradingEnv(md, **kw), PortfolioEnv(md, **kw)
    oa, ia = a.reset(seed=3)
    ob, ib = b.reset(seed=3)
    assert a.t == b.t
    nw = 5 * md.n_features
    assert np.array_equal(oa[:nw], ob[:nw])
    rng = np.random.default_rng(1)
    for _ in range(300):
        act = rng.uniform(-4, 4, 1).astype(np.float32)
        oa, ra, tea, tra, ia = a.step(act)
        ob, rb, teb, trb, ib = b.step(act)
        assert ra == rb
        assert (tea, tra) == (teb, trb)
        assert ia["equity_quote"] == ib["equity_quote"]
        assert ia["position_base"] == ib["position_base"][0]
        assert ia["fees_paid_quote"] == ib["fees_paid_quote"]
        assert np.array_equal(oa[:nw], ob[:nw])
        if tea or tra:
            break


def test_constant_equal_weights_without_costs_is_the_analytic_rebalanced_portfolio() -> None:
    data = random_portfolio(300, 4, vol=0.02)
    kw = {"taker_fee_rate": 0.0, "slippage_bps": 0.0, "rebalance_threshold": 0.0,
          "allow_short": False, "max_leverage": 1.0, "episode_length_bars": None, "window": 3}
    env = PortfolioEnv(data, **kw)
    _, info = env.reset()
    t0 = env.t
    w = np.full(4, 0.25, dtype=np.float32)
    eq_open = info["equity_quote"]
    o, c = data.open, data.close
    while True:
        _, _, te, tr, info = env.step(w)
        t = env.t
        # filled at the opens of bar t with equal weights, marked at its closes
        eq_close = eq_open * float(np.mean(c[t] / o[t]))
        assert info["equity_quote"] == pytest.approx(eq_close, rel=1e-9)
        if t + 1 < len(data):
            eq_open = eq_open * float(np.mean(o[t + 1] / o[t]))
        if te or tr:
            break
    assert env.t - t0 == len(data) - 3


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), scale=st.sampled_from([0.1, 1.0, 50.0]),
       gross=st.sampled_from([0.5, 1.0, 2.0]), short=st.booleans())
def test_weights_after_the_fill_stay_within_the_budget(seed: int, scale: float, gross: float, short: bool) -> None:
    """On flat bars (no move inside the bar) the weights at the close are those of the fill:
    ``sum |w| <= gross * equity_at_open / equity_after`` (the fill's costs are the only
    excess; rebalance threshold 0) and never above max_leverage."""
    data = random_portfolio(80, 3, flat_bars=True, seed=seed)
    env = PortfolioEnv(data, max_leverage=2.0, gross_leverage=gross, allow_short=short,
                       episode_length_bars=40, window=2, taker_fee_rate=0.002, slippage_bps=5.0,
                       rebalance_threshold=0.0)
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    for _ in range(40):
        s = env.state[:, 0]
        qty = np.array([s[pk.row(a, pk.A_QTY)] for a in range(3)])
        eq_open = s[kernel.CASH] + float(qty @ data.open[env.t + 1])
        _, _, te, tr, info = env.step((rng.normal(size=3) * scale).astype(np.float32))
        g = float(np.abs(info["weights"]).sum())
        assert g <= gross * eq_open / info["equity_quote"] * (1 + 1e-9) + 1e-12
        assert g <= 2.0 * (1 + 1e-9)
        if te or tr:
            break


def test_no_look_ahead_across_assets() -> None:
    """Perturbing ANY asset's bars and features after t changes nothing up to t."""
    data = random_portfolio(200, 3, vol=0.02, n_market_features=1)
    cut = 120
    rng = np.random.default_rng(9)
    bumped = {}
    for name in ("open", "high", "low", "close", "volume", "funding_rate"):
        arr = getattr(data, name).copy()
        arr[cut + 1 :, 1] *= 1.5
        bumped[name] = arr
    feats = data.features.copy()
    feats[cut + 1 :, 2] = rng.normal(size=feats[cut + 1 :, 2].shape)
    mkt = data.market_features.copy()
    mkt[cut + 1 :] += 3.0
    other = replace(data, features=feats, market_features=mkt, **bumped)
    kw = {"episode_length_bars": None, "window": 4, "max_leverage": 3.0}
    a, b = PortfolioEnv(data, **kw), PortfolioEnv(other, **kw)
    oa, _ = a.reset()
    ob, _ = b.reset()
    assert np.array_equal(oa, ob)
    acts = rng.uniform(-1, 1, (cut, 3)).astype(np.float32)
    for act in acts:
        if a.t >= cut:
            break
        ra = a.step(act)
        rb = b.step(act)
        assert np.array_equal(ra[0], rb[0])
        assert ra[1] == rb[1]
        assert ra[4]["equity_quote"] == rb[4]["equity_quote"]
    assert a.t == cut


def test_a_masked_asset_is_never_filled_and_is_marked_without_a_jump() -> None:
    data = random_portfolio(200, 3)
    tradable = data.tradable.copy()
    tradable[:100, 2] = False  # not listed yet
    tradable[150:160, 1] = False  # a gap
    masked = replace(data, tradable=tradable)
    env = PortfolioEnv(masked, episode_length_bars=None, window=2, max_leverage=2.0)
    env.reset()
    held_at_gap = None
    while True:
        _, _, te, tr, info = env.step(np.array([0.3, 0.3, 0.3], dtype=np.float32))
        t = env.t
        if t < 100:
            assert info["position_base"][2] == 0.0
        if t == 149:
            held_at_gap = info["position_base"][1]
        if 150 <= t < 160:
            assert info["position_base"][1] == held_at_gap  # kept, never traded
        if te or tr:
            break
    assert env.state[pk.row(2, pk.A_TURNOVER), 0] > 0.0  # traded once listed


@pytest.mark.parametrize("clone", [copy.deepcopy, lambda e: pickle.loads(pickle.dumps(e))],  # noqa: S301
                         ids=["deepcopy", "pickle"])
def test_copied_env_continues_identically_and_independently(clone: Any) -> None:
    env = PortfolioEnv(random_portfolio(300, 2), window=3, episode_length_bars=100)
    env.reset(seed=1)
    act = np.array([0.4, -0.3], dtype=np.float32)
    for _ in range(5):
        env.step(act)
    twin = clone(env)
    for _ in range(5):
        a, b = env.step(act), twin.step(act)
        assert np.array_equal(a[0], b[0])
        assert a[1] == b[1]
    twin.step(np.array([-1.0, 1.0], dtype=np.float32))
    assert env.state[pk.row(0, pk.A_QTY), 0] > 0.0  # the copy's trade did not touch the original


def test_sb3_adapter_follows_same_step_autoreset() -> None:
    venv = PortfolioSB3VecEnv(3, random_portfolio(300, 2), episode_length_bars=4, window=3)
    venv.seed(5)
    obs = venv.reset()
    for _ in range(3):
        obs, rew, dones, infos = venv.step(np.full((3, 2), 0.4, dtype=np.float32))
        assert not dones.any()
        assert rew.dtype == np.float32
    obs, rew, dones, infos = venv.step(np.full((3, 2), 0.4, dtype=np.float32))
    assert dones.all()
    for i in range(3):
        assert infos[i]["terminal_observation"].shape == obs[i].shape
        assert infos[i]["TimeLimit.truncated"] is True
        assert infos[i]["episode"]["l"] == 4
        assert infos[i]["position_base"].shape == (2,)
        assert np.array_equal(obs[i, -6:-4], [0.0, 0.0])  # the new episode is flat


def test_bad_inputs_raise_clear_errors_naming_the_asset() -> None:
    data = random_portfolio(200, 3)
    env = PortfolioEnv(data, window=3, episode_length_bars=50)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="A1/USD is nan"):
        env.step(np.array([0.1, np.nan, 0.1], dtype=np.float32))
    with pytest.raises(ValueError, match="A2/USD is inf"):
        env.step(np.array([0.1, 0.1, np.inf], dtype=np.float32))
    with pytest.raises(ConfigError, match="A9/USD"):
        PortfolioEnv(data, asset_costs={"A9/USD": {"taker_fee_rate": 0.0}})
    with pytest.raises(ConfigError, match="beyond the gross budget"):
        PortfolioEnv(data, action="discrete", positions=(-1.0, 0.0, 1.0), max_leverage=2.0,
                     gross_leverage=0.5)
    denv = PortfolioEnv(data, action="discrete", positions=(0.0, 0.5), window=3, episode_length_bars=50)
    denv.reset(seed=0)
    with pytest.raises(ValueError, match="A0/USD must be in"):
        denv.step(np.array([5, 0, 0]))


def test_actions_of_any_form_give_the_fast_paths_result_and_a_wrong_length_changes_nothing() -> None:
    # step() hands a float32 (A,) array straight to the kernel; any other form (float64, list,
    # strided view, (1, A)) goes through the ActionMap: the same weights, the same floats
    data = random_portfolio(200, 3)
    act = np.array([0.7, -0.4, 0.2], dtype=np.float32)
    forms = [act, act.astype(np.float64), act.tolist(), np.repeat(act, 2)[::2], act[None, :]]
    results = []
    for form in forms:
        env = PortfolioEnv(data, window=3, episode_length_bars=50)
        env.reset(seed=0)
        for _ in range(3):
            obs, r, *_, info = env.step(form)
        results.append((obs, r, info["equity_quote"], info["weights"]))
    for got in results[1:]:
        for g, w in zip(got, results[0], strict=True):
            assert np.array_equal(g, w)
    env = PortfolioEnv(data, window=3, episode_length_bars=50)
    env.reset(seed=0)
    before = env.state.copy()
    for wrong in (act[:2], np.append(act, np.float32(0.1))):
        with pytest.raises(ValueError, match="shape"):
            env.step(wrong)
    books = np.arange(len(before)) != pk.BAD_ACTION  # that row records the refusal
    assert np.array_equal(env.state[books], before[books])
    obs, r, *_ = env.step(act)  # the env goes on as if the bad calls never happened
    ref = PortfolioEnv(data, window=3, episode_length_bars=50)
    ref.reset(seed=0)
    assert np.array_equal(obs, ref.step(act)[0])


def test_per_asset_costs_are_charged_per_asset() -> None:
    data = random_portfolio(200, 2)
    env = PortfolioEnv(data, window=3, taker_fee_rate=0.002, episode_length_bars=50,
                       asset_costs={"A1/USD": {"taker_fee_rate": 0.0}})
    env.reset(seed=0)
    env.step(np.array([0.4, 0.4], dtype=np.float32))
    assert env.state[pk.row(0, pk.A_FEES), 0] > 0.0
    assert env.state[pk.row(1, pk.A_FEES), 0] == 0.0
    assert env.state[pk.row(1, pk.A_TURNOVER), 0] > 0.0


def test_action_map_projects_onto_gross_and_net_budgets() -> None:
    m = ActionMap("continuous", ("a", "b", "c"), gross=1.5, net=1.0, allow_short=True)
    w = m.weights([3.0, -1.0, 2.0])  # gross 6, net 4: scaled by 1/4
    assert w.tolist() == [0.75, -0.25, 0.5]
    assert m.weights([0.2, 0.1, -0.3]).tolist() == [0.2, 0.1, -0.3]  # inside: unchanged
    assert m.weights([0.0, 0.0, 0.0]).tolist() == [0.0, 0.0, 0.0]  # all cash is reachable
    long_only = ActionMap("continuous", ("a", "b"), gross=1.0, net=1.0, allow_short=False)
    assert long_only.weights([-1.0, 3.0]).tolist() == [0.0, 1.0]
    many = np.random.default_rng(0).normal(size=(1000, 3)) * 5
    ws = m.weights_batch(many)
    assert (np.abs(ws).sum(axis=1) <= 1.5 + 1e-12).all()
    assert (np.abs(ws.sum(axis=1)) <= 1.0 + 1e-12).all()


def test_reused_observation_buffer_gives_the_same_trajectory() -> None:
    data = random_portfolio(300, 3, vol=0.02)
    kw = {"episode_length_bars": 15, "window": 4}
    fresh, reused = PortfolioVectorEnv(3, data, **kw), PortfolioVectorEnv(3, data, copy=False, **kw)
    oa, _ = fresh.reset(seed=2)
    ob, _ = reused.reset(seed=2)
    assert np.array_equal(oa, ob)
    for act in np.random.default_rng(3).normal(size=(40, 3, 3)).astype(np.float32):
        ra, rb = fresh.step(act), reused.step(act)
        assert np.array_equal(ra[0], rb[0])
        assert np.array_equal(ra[1], rb[1])
        assert np.array_equal(ra[4]["equity_quote"], rb[4]["equity_quote"])


def test_the_planted_lead_lag_is_tradable_through_the_env() -> None:
    """Known answer for the data and the env's timing: long the follower after the leader
    rose, short after it fell (decided at the close, filled at the next open) beats the
    constant 1/N portfolio and cash after costs; a policy that peeks one bar ahead is not
    needed and not possible."""
    from coinrl.pipeline.portfolio import prepare_portfolio
    from coinrl.pipeline.synthetic_assets import correlated_assets

    frames = correlated_assets(2, 6_000, seed=4, lead_lag=(0, 1, 0.3))
    data = prepare_portfolio(frames, norm={"method": "none", "clip": None}).full
    kw = {"episode_length_bars": None, "window": 2, "taker_fee_rate": 0.0005, "slippage_bps": 0.0,
          "rebalance_threshold": 0.0, "max_leverage": 1.0}
    lead = PortfolioEnv(data, **kw)
    equal = PortfolioEnv(data, **kw)
    lead.reset()
    equal.reset()
    close = data.close
    while True:
        t = lead.t
        up = close[t, 0] > close[t - 1, 0]  # the leader's last return, known at t's close
        _, _, te, tr, info = lead.step(np.array([0.0, 0.9 if up else -0.9], dtype=np.float32))
        _, _, _, _, info_eq = equal.step(np.array([0.5, 0.5], dtype=np.float32))
        if te or tr:
            break
    start = PortfolioEnv(data, **kw).config.initial_cash_quote
    assert info["equity_quote"] > 1.5 * start  # cash stays at start
    assert info["equity_quote"] > 1.5 * info_eq["equity_quote"]


def test_lot_size_and_min_notional_apply_per_asset() -> None:
    data = random_portfolio(200, 2)
    env = PortfolioEnv(data, window=3, episode_length_bars=50, rebalance_threshold=0.0,
                       asset_costs={"A0/USD": {"lot_size_base": 0.5},
                                    "A1/USD": {"min_notional_quote": 5_000.0}})
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.array([0.33, 0.2], dtype=np.float32))
    q0 = info["position_base"][0]
    assert q0 > 0.0
    assert q0 / 0.5 == pytest.approx(round(q0 / 0.5), abs=1e-9)  # whole lots of A0
    assert info["position_base"][1] == 0.0  # ~2,000 quote of A1 is below its 5,000 minimum
    _, _, _, _, info = env.step(np.array([0.33, 0.6], dtype=np.float32))
    assert info["position_base"][1] > 0.0  # ~6,000 quote passes
