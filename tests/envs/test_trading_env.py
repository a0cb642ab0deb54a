"""TradingEnv: hand-computed books, Gymnasium/SB3 API checks, timing, no look-ahead, invariants."""

from __future__ import annotations

import copy
import math
import pickle
import warnings
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from market_helpers import copy_obs, market_from_prices, obs_equal, random_market
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import coinrl.envs  # noqa: F401  (registers coinrl/Trading-v0)
from coinrl.envs import TradingEnv, env_config_from
from coinrl.pipeline.errors import ConfigError, DataError

VARIANTS = [
    pytest.param({}, id="discrete-box"),
    pytest.param({"action": "continuous", "max_leverage": 3.0}, id="continuous-box"),
    pytest.param({"obs_mode": "dict"}, id="discrete-dict"),
    pytest.param({"obs_mode": "dict", "action": "continuous"}, id="continuous-dict"),
    pytest.param({"allow_short": False, "action": "continuous"}, id="spot-continuous"),
]


# ---------------------------------------------------------------------- hand-computed books
def test_five_bar_buy_flip_close_matches_hand_computed_books() -> None:
    md = market_from_prices(
        open_=[100.0, 100.0, 125.0, 120.0, 118.0],
        high=[100.0, 106.0, 126.0, 121.0, 120.0],
        low=[100.0, 99.0, 119.0, 117.0, 117.0],
        close=[100.0, 105.0, 120.0, 118.0, 119.0],
    )
    env = TradingEnv(md, window=1, episode_length_bars=None, taker_fee_rate=0.001, slippage_bps=10.0,
                     rebalance_threshold=0.0, max_leverage=2.0, maintenance_margin_rate=0.005)
    obs, info = env.reset(seed=0)
    assert info["ts_ms"] == md.ts_ms[0]
    assert info["equity_quote"] == 10_000.0
    LONG, SHORT, FLAT = 2, 0, 1  # indices into positions (-1, 0, 1)

    # decision at bar 0: long 1x -> fills at open[1] = 100: qty = 10,000 / 100 = 100,
    # notional 10,000, fee 0.1 % = 10, slippage 10 bps = 10: cash = 10,000 - 10,000 - 10 - 10 = -20.
    # marked at close[1] = 105: equity = -20 + 100 * 105 = 10,480.
    obs, r, term, trunc, info = env.step(LONG)
    acct = env.account
    assert (acct.position_base, acct.cash_quote) == pytest.approx((100.0, -20.0))
    assert info["equity_quote"] == pytest.approx(10_480.0)
    assert info["ts_ms"] == md.ts_ms[1]
    assert r == pytest.approx(math.log(10_480.0 / 10_000.0))
    # observation: features of bar 1 (= 1.0), then exposure 10,500 / 10,480, unrealised
    # (105 - 100) * 100 / 10,480, time 1 / (1 + window 1), distance to liquidation
    # (10,480 - 0.005 * 100 * 105) / ((100 - 0.5) * 105) = 10,427.5 / 10,447.5
    assert obs == pytest.approx([1.0, 1.0, 10_500 / 10_480, 500 / 10_480, 0.5, 10_427.5 / 10_447.5], rel=1e-6)

    # decision at bar 1: short 1x -> fills at open[2] = 125 (a gap up). Equity there
    # -20 + 100 * 125 = 12,480; target qty -12,480 / 125 = -99.84; order -199.84, notional
    # 199.84 * 125 = 24,980, fee 24.98, slippage 24.98: cash = -20 + 24,980 - 49.96 = 24,910.04.
    # Closing the long realises (125 - 100) * 100 = 2,500. Mark at 120: 24,910.04 - 99.84 * 120.
    obs, r, term, trunc, info = env.step(SHORT)
    assert (acct.position_base, acct.cash_quote) == pytest.approx((-99.84, 24_910.04))
    assert acct.realised_pnl_quote == pytest.approx(2_500.0)
    assert acct.avg_entry_quote == pytest.approx(125.0)
    assert info["equity_quote"] == pytest.approx(12_929.24)
    assert r == pytest.approx(math.log(12_929.24 / 10_480.0))

    # decision at bar 2: flat -> buy back 99.84 at open[3] = 120: notional 11,980.8, fee and
    # slippage 11.9808 each: cash = 24,910.04 - 11,980.8 - 23.9616 = 12,905.2784.
    # The short realises (125 - 120) * 99.84 = 499.2.
    obs, r, term, trunc, info = env.step(FLAT)
    assert acct.position_base == 0.0
    assert info["equity_quote"] == pytest.approx(12_905.2784)
    assert acct.realised_pnl_quote == pytest.approx(2_999.2)
    assert info["fees_paid_quote"] == pytest.approx(10.0 + 24.98 + 11.9808)
    assert acct.slippage_paid_quote == pytest.approx(10.0 + 24.98 + 11.9808)
    assert not term
    assert not trunc

    # decision at bar 3: stay flat: nothing moves; the last bar truncates the episode.
    obs, r, term, trunc, info = env.step(FLAT)
    assert r == 0.0
    assert info["equity_quote"] == pytest.approx(12_905.2784)
    assert trunc
    assert not term
    # books add up: 10,000 + 2,999.2 realised - 46.9608 fees - 46.9608 slippage = 12,905.2784
    assert acct.conservation_error_quote() == pytest.approx(0.0, abs=1e-8)


def test_delay_fills_at_open_of_t_plus_delay() -> None:
    opens = [100.0, 100.0, 200.0, 400.0, 400.0, 400.0]
    md = market_from_prices(opens, opens, opens, opens)
    env = TradingEnv(md, window=1, episode_length_bars=None, delay_bars=2, taker_fee_rate=0.0,
                     slippage_bps=0.0, rebalance_threshold=0.0)
    env.reset(seed=0)
    env.step(2)  # decision at bar 0: long, fills at open[2] = 200 (not open[1])
    assert env.account.position_base == 0.0
    env.step(1)  # decision at bar 1 (flat) is queued for open[3]
    assert env.account.position_base == pytest.approx(10_000.0 / 200.0)
    assert env.account.avg_entry_quote == 200.0
    env.step(1)
    assert env.account.position_base == 0.0
    assert env.account.equity_quote == pytest.approx(20_000.0)  # 50 bought at 200, sold at 400


# ---------------------------------------------------------------------- API conformance
@pytest.mark.parametrize("kw", VARIANTS)
def test_gymnasium_and_sb3_env_checkers_pass(kw: dict[str, Any]) -> None:
    md = random_market(400)
    with warnings.catch_warnings():
        warnings.simplefilter("error", category=UserWarning)  # a checker warning fails the test
        warnings.filterwarnings("ignore", message=".*symmetric.*")  # [0, L] spot action space
        # SB3's advice for 2-D non-image observations: the Dict "market" window is 2-D by design
        warnings.filterwarnings("ignore", message=".*unconventional shape.*")
        gym_check_env(TradingEnv(md, episode_length_bars=50, **kw), skip_render_check=True)
        sb3_check_env(TradingEnv(md, episode_length_bars=50, **kw), warn=True)


def test_registered_and_made_through_gymnasium() -> None:
    env = gym.make("coinrl/Trading-v0", data=random_market(300), window=8, episode_length_bars=20)
    obs, info = env.reset(seed=1)
    assert obs.shape == (8 * 5 + 4,)
    assert set(info) >= {"ts_ms", "equity_quote", "position_base", "fees_paid_quote"}
    assert isinstance(env.unwrapped, TradingEnv)


def test_default_make_trades_the_packaged_sample() -> None:
    """NEEDS the pipeline's packaged sample (coinrl.pipeline.sample) and prepare_data_for_model:
    skipped with a clear reason until both have landed."""
    try:
        from coinrl.pipeline.sample import sample_path
    except ImportError as e:  # pragma: no cover - depends on the other stages' progress
        pytest.skip(f"pipeline sample not available yet: {e}")
    if not sample_path().is_file():
        pytest.skip(f"packaged sample {sample_path()} not built yet")
    env = gym.make("coinrl/Trading-v0")
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    obs, r, term, trunc, info = env.step(env.action_space.sample())
    assert np.isfinite(r)


def test_bad_config_and_bad_data_raise_taxonomy_errors() -> None:
    with pytest.raises(ConfigError, match="window"):
        TradingEnv(random_market(100), window=0)
    with pytest.raises(ConfigError, match="unknown key"):
        TradingEnv(random_market(100), windw=8)
    with pytest.raises(ConfigError, match="allow_short"):
        env_config_from(None, allow_short=False, positions=(-1.0, 1.0))
    with pytest.raises(DataError, match="bars"):
        TradingEnv(random_market(30), window=24, episode_length_bars=10)
    md = random_market(100)
    md.features[5, 1] = np.nan
    with pytest.raises(DataError, match="row 5"):
        TradingEnv(md)
    env = TradingEnv(random_market(100), episode_length_bars=10)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="integer"):
        env.step(7)


def test_render_rgb_array_draws_price_position_equity() -> None:
    env = TradingEnv(random_market(200), episode_length_bars=30, render_mode="rgb_array")
    env.reset(seed=0)
    for a in [2, 2, 0, 1, 2]:
        env.step(a)
    img = env.render()
    assert img is not None
    assert img.dtype == np.uint8
    assert img.ndim == 3
    assert img.shape[2] == 3
    assert img.std() > 0  # something was drawn
    env.close()


# ---------------------------------------------------------------------- episodes and seeds
def _rollout(env: TradingEnv, seed: int, actions: list[Any]) -> list[tuple[Any, ...]]:
    obs, info = env.reset(seed=seed)
    out: list[tuple[Any, ...]] = [(copy_obs(obs), dict(info))]
    for a in actions:
        obs, r, term, trunc, info = env.step(a)
        out.append((copy_obs(obs), r, term, trunc, dict(info)))
        if term or trunc:
            break
    return out


def _same(a: list[tuple[Any, ...]], b: list[tuple[Any, ...]]) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if not obs_equal(x[0], y[0]) or x[1:] != y[1:]:
            return False
    return True


@pytest.mark.parametrize("kw", VARIANTS)
def test_same_seed_same_rollout_different_seed_different_start(kw: dict[str, Any]) -> None:
    md = random_market(2_000)
    env = TradingEnv(md, episode_length_bars=100, **kw)
    env.action_space.seed(3)
    actions = [env.action_space.sample() for _ in range(100)]
    assert _same(_rollout(env, 42, actions), _rollout(env, 42, actions))
    starts = set()
    for seed in range(8):
        env.reset(seed=seed)
        starts.add(env.t)
    assert len(starts) >= 7  # 1,877 possible starts: 8 seeds do not collide by chance
    env.reset(seed=5)
    t_first = env.t
    env.reset()  # unseeded reset continues the generator: a new start, not the same one
    assert env.t != t_first


def test_whole_data_episode_runs_from_first_decision_to_last_bar() -> None:
    md = random_market(120)
    env = TradingEnv(md, window=10, episode_length_bars=None)
    _, info = env.reset(seed=0)
    assert info["ts_ms"] == md.ts_ms[9]
    n, trunc = 0, False
    while not trunc:
        _, _, term, trunc, info = env.step(1)
        n += 1
    assert n == 110
    assert info["ts_ms"] == md.ts_ms[-1]


# ---------------------------------------------------------------------- invariants
actions_st = st.lists(st.integers(0, 2), min_size=5, max_size=60)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), n_steps=st.integers(1, 80), delay=st.integers(1, 3),
       lev=st.sampled_from([1.0, 5.0]), data=st.data())
def test_no_look_ahead_perturbing_the_future_changes_nothing_up_to_t(
    seed: int, n_steps: int, delay: int, lev: float, data: st.DataObject
) -> None:
    base = random_market(120, seed=seed, funding=True, vol=0.02)
    cut = data.draw(st.integers(12, 118), label="cut")  # bars > cut are changed
    rng = np.random.default_rng(seed + 1)
    fut = slice(cut + 1, None)
    changed = {}
    for name in ("open", "high", "low", "close", "volume"):
        arr = getattr(base, name).copy()
        arr[fut] *= rng.uniform(0.5, 1.5, arr[fut].shape)
        changed[name] = arr
    feats = base.features.copy()
    feats[fut] += rng.normal(size=feats[fut].shape).astype(np.float32)
    fr = base.funding_rate.copy()  # type: ignore[union-attr]
    fr[fut] = rng.normal(0.0, 0.01, fr[fut].shape)
    from coinrl.pipeline.dataset import MarketData

    other = MarketData(ts_ms=base.ts_ms, features=feats, feature_names=base.feature_names,
                       funding_rate=fr, **changed)
    kw = {"window": 8, "episode_length_bars": None, "delay_bars": delay, "max_leverage": lev,
          "action": "continuous", "reward": "differential_sharpe"}
    acts = [np.array([a], dtype=np.float32) for a in rng.uniform(-lev, lev, n_steps)]
    a = _rollout(TradingEnv(base, **kw), 0, acts)
    b = _rollout(TradingEnv(other, **kw), 0, acts)
    cut_ts = base.ts_ms[cut]
    compared = 0
    for x, y in zip(a, b, strict=False):
        if x[-1]["ts_ms"] > cut_ts:
            break
        assert obs_equal(x[0], y[0])
        assert x[1:] == y[1:]
        compared += 1
    assert compared >= 1


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), acts=actions_st, vol=st.sampled_from([0.005, 0.05]))
def test_spot_account_never_goes_below_zero(seed: int, acts: list[int], vol: float) -> None:
    env = TradingEnv(random_market(200, seed=seed, vol=vol), allow_short=False,
                     positions=(0.0, 0.5, 1.0), episode_length_bars=60, taker_fee_rate=0.004,
                     slippage_bps=20.0, impact_coef=0.2, lot_size_base=0.0001)
    env.reset(seed=seed)
    for a in acts:
        _, _, term, trunc, info = env.step(a)
        acct = env.account
        assert acct.cash_quote >= 0.0
        assert acct.position_base >= 0.0
        assert info["equity_quote"] >= 0.0
        assert not term
        if trunc:
            break


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), acts=actions_st)
def test_fees_are_charged_on_every_fill_and_equity_is_cash_plus_position(seed: int, acts: list[int]) -> None:
    md = random_market(200, seed=seed)
    env = TradingEnv(md, episode_length_bars=60, taker_fee_rate=0.001, rebalance_threshold=0.0)
    env.reset(seed=seed)
    acct = env.account
    for a in acts:
        fees0, qty0 = acct.fees_paid_quote, acct.position_base
        _, _, term, trunc, info = env.step(a)
        # the fill happened at this bar's open: its fee is 0.1 % of |dq| * open, never negative
        notional = abs(acct.position_base - qty0) * md.open[env.t]
        fee = acct.fees_paid_quote - fees0
        assert fee >= 0.0
        assert fee == pytest.approx(0.001 * notional, rel=1e-6, abs=1e-9)
        if notional > 1e-3:
            assert fee > 0.0  # every fill pays
        close = md.close[env.t]
        assert info["equity_quote"] == acct.cash_quote + acct.position_base * close
        assert abs(acct.conservation_error_quote()) < 1e-6
        if term or trunc:
            break


@pytest.mark.parametrize("kw", [{}, {"borrow_rate_per_bar": 1e-4}, {"action": "continuous"}])
def test_holding_flat_leaves_equity_unchanged(kw: dict[str, Any]) -> None:
    env = TradingEnv(random_market(300, funding=True), episode_length_bars=200, **kw)
    flat = 1 if env.config.action == "discrete" else np.zeros(1, dtype=np.float32)
    env.reset(seed=0)
    for _ in range(200):
        _, r, _, trunc, info = env.step(flat)
        assert r == 0.0
        assert info["equity_quote"] == 10_000.0
        assert info["fees_paid_quote"] == 0.0
        if trunc:
            break


@pytest.mark.parametrize(("fee", "slip_bps"), [(0.001, 0.0), (0.0, 5.0), (0.002, 3.0)])
def test_round_trip_at_unchanged_prices_loses_exactly_fees_and_slippage(fee: float, slip_bps: float) -> None:
    p = [100.0] * 6
    env = TradingEnv(market_from_prices(p, p, p, p), window=1, episode_length_bars=None,
                     taker_fee_rate=fee, slippage_bps=slip_bps, rebalance_threshold=0.0)
    env.reset(seed=0)
    env.step(2)  # long
    env.step(0)  # flip short
    _, _, _, _, info = env.step(1)  # flat
    acct = env.account
    lost = 10_000.0 - info["equity_quote"]
    assert lost > 0.0
    assert lost == pytest.approx(acct.fees_paid_quote + acct.slippage_paid_quote, rel=1e-12)
    assert acct.fees_paid_quote == pytest.approx(fee * acct.turnover_quote)
    assert acct.slippage_paid_quote == pytest.approx(slip_bps * 1e-4 * acct.turnover_quote)


def test_reset_options_force_start_and_human_render_runs_headless() -> None:
    md = random_market(200)
    env = TradingEnv(md, episode_length_bars=20, render_mode="human")
    _, info = env.reset(seed=0, options={"start_index": 30})
    assert info["ts_ms"] == md.ts_ms[30]
    with pytest.raises(ValueError, match="start_index"):
        env.reset(options={"start_index": 5})  # before the first full window
    env.step(2)
    assert env.render() is None  # draws on matplotlib's current backend (Agg here)
    env.close()


@pytest.mark.parametrize("kw", [{}, {"obs_mode": "dict"}])
def test_returned_observations_are_never_overwritten_or_shared(kw: dict[str, Any]) -> None:
    env = TradingEnv(random_market(800), episode_length_bars=700, **kw)
    kept, snapshots = [], []
    obs, _ = env.reset(seed=0)
    for k in range(600):  # crosses two observation blocks
        kept.append(obs)
        snapshots.append(copy_obs(obs))
        obs, *_ = env.step(k % 3)
    assert all(obs_equal(a, b) for a, b in zip(kept, snapshots, strict=True))
    first = kept[0]["account"] if isinstance(kept[0], dict) else kept[0]
    second = kept[1]["account"] if isinstance(kept[1], dict) else kept[1]
    assert not np.shares_memory(first, second)


@pytest.mark.parametrize(
    "clone", [copy.deepcopy, lambda e: pickle.loads(pickle.dumps(e))],  # noqa: S301 - our own bytes
    ids=["deepcopy", "pickle"],
)
@pytest.mark.parametrize("obs_mode", ["box", "dict"])
def test_a_copied_env_continues_like_the_original_on_its_own_books(clone: Any, obs_mode: str) -> None:
    env = TradingEnv(random_market(400, vol=0.02), action="continuous", max_leverage=2.0,
                     episode_length_bars=300, obs_mode=obs_mode, render_mode="rgb_array")
    env.reset(seed=0)
    acts = np.random.default_rng(0).uniform(-2.0, 2.0, (280, 1)).astype(np.float32)
    for a in acts[:20]:
        env.step(a)
    twin = clone(env)
    for a in acts[20:]:  # across an observation block boundary (256 rows)
        o1, r1, te1, tr1, i1 = env.step(a)
        o2, r2, te2, tr2, i2 = twin.step(a)
        assert obs_equal(o1, o2)
        assert (r1, te1, tr1, i1) == (r2, te2, tr2, i2)
    assert not np.shares_memory(env.account.state, twin.account.state)
    eq = env.account.equity_quote
    twin.step(np.array([-2.0], dtype=np.float32))  # the copy's steps never touch the original
    assert env.account.equity_quote == eq
    assert twin.render().shape == env.render().shape
