"""The compiled kernel (the single-asset entry points: A = 1 of the portfolio kernel) against
independent references, bit for bit.

- the numpy books of the first release (``numpy_books.NumpyBooks``: whole-array operations on
  its ``trade_vec`` and ``size_orders``), on random bar paths and configs;
- the pre-switch scalar kernel (``scalar_kernel.py``) in ``test_portfolio_kernel.py``;
- the same kernel functions run interpreted (numba off): no compiler flag changed a float;
- the reward functions of :mod:`coinrl.envs.rewards` applied to the env's equity path;
- ``import coinrl.envs`` does not import numba (the kernel compiles on first construction).
"""

from __future__ import annotations

import copy
import hashlib
import math
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from market_helpers import random_market
from numpy_books import FIELDS, NumpyBooks

from coinrl.envs import TradingEnv, TradingVectorEnv, kernel
from coinrl.envs import single_kernel as sk
from coinrl.envs.books import Account, Books
from coinrl.envs.config import EnvConfig
from coinrl.envs.rewards import REWARDS, make_reward, scalar_log
from coinrl.envs.trading_env import EQUITY_FLOOR_FRAC, MarketArrays


@st.composite
def bar_paths(draw: st.DrawFn) -> tuple[list[tuple[float, ...]], list[tuple[float, float]]]:
    n = draw(st.integers(2, 30))
    bars = []
    p = 100.0
    for _ in range(n):
        o = p
        c = p * math.exp(draw(st.floats(-0.2, 0.2)))
        wick = draw(st.floats(0.0, 0.15))
        bars.append((o, max(o, c) * (1 + wick), min(o, c) * (1 - wick), c,
                     draw(st.floats(0.0, 1e4)), draw(st.sampled_from([0.0, 0.0, 0.001, -0.002]))))
        p = c * math.exp(draw(st.floats(-0.1, 0.1)))  # gaps between close and next open
    # two accounts with their own targets: the kernel must not mix columns
    targets = draw(st.lists(st.tuples(st.floats(-30.0, 30.0), st.floats(-30.0, 30.0)), min_size=n, max_size=n))
    return bars, targets


configs = st.builds(
    dict,
    taker_fee_rate=st.sampled_from([0.0, 0.001, 0.004]),
    slippage_bps=st.sampled_from([0.0, 5.0]),
    impact_coef=st.sampled_from([0.0, 0.3]),
    lot_size_base=st.sampled_from([0.0, 0.01]),
    min_notional_quote=st.sampled_from([0.0, 10.0]),
    rebalance_threshold=st.sampled_from([0.0, 0.01]),
    max_leverage=st.sampled_from([1.0, 3.0, 25.0]),
    allow_short=st.booleans(),
    maintenance_margin_rate=st.sampled_from([0.005, 0.03]),
    borrow_rate_per_bar=st.sampled_from([0.0, 1e-4]),
    use_funding=st.booleans(),
)


@settings(max_examples=300, deadline=None)
@given(path=bar_paths(), cfg_kw=configs)
@pytest.mark.slow
def test_compiled_books_equal_the_numpy_books_bit_for_bit(
    path: tuple[list[tuple[float, ...]], list[tuple[float, float]]], cfg_kw: dict[str, object]
) -> None:
    bars, targets = path
    cfg = EnvConfig(positions=(0.0, 1.0), **cfg_kw)  # type: ignore[arg-type]
    lo, hi = cfg.exposure_bounds
    books = Books(2, cfg)
    ref = NumpyBooks(2, cfg)
    alive = np.ones(2, dtype=bool)
    for (o, h, low, c, v, f), tgt in zip(bars, targets, strict=True):
        x = np.clip(np.array(tgt), lo, hi)
        cols = [np.full(2, z) for z in (o, h, low, c, v, f)]
        liq = books.step_bar(x, *cols).copy()
        liq_ref = ref.step_bar(x, *cols).copy()
        for name in FIELDS:
            got, want = getattr(books, name), getattr(ref, name)
            assert np.array_equal(got[alive], want[alive]), name
        assert np.array_equal(liq[alive], liq_ref[alive])
        alive &= ~liq  # a liquidated account is restarted by its env; stop comparing it
        if not alive.any():
            break


@settings(max_examples=100, deadline=None)
@given(path=bar_paths(), cfg_kw=configs, reward=st.sampled_from(sorted(REWARDS)))
@pytest.mark.slow
def test_compiled_kernel_equals_the_interpreted_kernel(
    path: tuple[list[tuple[float, ...]], list[tuple[float, float]]], cfg_kw: dict[str, object], reward: str
) -> None:
    """The same functions, compiled and run by the Python interpreter: no compiler flag (fast
    math, FMA contraction) may change a float of the books, the rewards or the observations."""
    bars_list, targets = path
    cfg = EnvConfig(positions=(0.0, 1.0), window=3, reward=reward, **cfg_kw)  # type: ignore[arg-type]
    lo, hi = cfg.exposure_bounds
    n, nf, w = 2, 2, 3
    b6 = np.array([bars_list[0]] * (w - 1) + bars_list, dtype=np.float64)
    bars = sk.bar_table(*b6.T)
    feats = np.random.default_rng(0).normal(size=len(bars) * nf).astype(np.float32)
    ts = np.arange(len(bars), dtype=np.int64)
    p, pa = sk.make_params(cfg, n_features=nf, acct_col=w * nf, eq_floor_quote=1e-5)
    runs = []
    for impl in (sk, sk.compiled()):
        s = sk.new_state(n, cfg.initial_cash_quote)
        kernel.reset_reward_state(s, slice(None), p)
        t = np.full(n, w - 1, dtype=np.int64)
        last = np.full(n, len(bars) - 1, dtype=np.int64)
        no = np.zeros(n, dtype=bool)
        trace = []
        for tgt in targets:
            obs = np.zeros((n, w * nf + 4), dtype=np.float32)
            out = [np.zeros(n), np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, np.int64),
                   np.zeros(n), np.zeros(n), np.zeros(n)]
            done = np.zeros(n, dtype=bool)
            with np.errstate(all="ignore"):  # numpy scalars warn on overflow where compiled code does not
                impl.vec_step(s, p, pa, bars, feats, ts, t, last, np.clip(np.array(tgt), lo, hi), no,
                              done, np.zeros(n, bool), obs, obs, *out)
            trace.append((s.copy(), obs, *out))
            if done.any():
                break
        runs.append(trace)
    compiled, interpreted = runs[1], runs[0]
    assert len(compiled) == len(interpreted)
    for a, b in zip(compiled, interpreted, strict=True):
        for x, y in zip(a, b, strict=True):
            assert np.array_equal(x, y)


@pytest.mark.parametrize("reward", sorted(REWARDS))
def test_env_rewards_equal_the_reward_functions_on_its_equity_path(reward: str) -> None:
    env = TradingEnv(random_market(600, vol=0.02), episode_length_bars=400, reward=reward,
                     action="continuous", max_leverage=3.0, drawdown_penalty=3.0, dsr_eta=0.05)
    _, info = env.reset(seed=3)
    fn = make_reward(env.config, 1)
    fn.reset_scalar(info["equity_quote"])
    eq_prev = info["equity_quote"]
    rng = np.random.default_rng(0)
    for _ in range(300):
        _, r, te, tr, info = env.step(rng.uniform(-3.0, 3.0, 1).astype(np.float32))
        want = fn.scalar(eq_prev, info["equity_quote"])
        if scalar_log is math.log:  # the kernel's log is libm's, as math.log
            assert r == want
        else:  # numpy's SIMD log on this CPU may differ from libm in the last bit
            assert r == pytest.approx(want, rel=1e-15, abs=1e-300)
        eq_prev = info["equity_quote"]
        if te or tr:
            break


def test_env_account_features_equal_the_numpy_formulas_bit_for_bit() -> None:
    md = random_market(500, vol=0.03)
    cfg = {"action": "continuous", "max_leverage": 5.0, "maintenance_margin_rate": 0.02, "window": 4}
    env = TradingEnv(md, episode_length_bars=300, **cfg)  # type: ignore[arg-type]
    env.reset(seed=1)
    close = MarketArrays(md).close
    mmr, w = env.config.maintenance_margin_rate, env.config.window
    floor = env.config.initial_cash_quote * EQUITY_FLOOR_FRAC
    rng = np.random.default_rng(1)
    for _ in range(250):
        obs, _, te, tr, _ = env.step(rng.uniform(-5.0, 5.0, 1).astype(np.float32))
        a = env.account
        c = np.array([close[env.t]])
        eq, q = np.array([a.equity_quote]), np.array([a.position_base])
        eqs = np.maximum(eq, floor)
        aq = np.abs(q)
        den = np.abs(q - mmr * aq) * c
        dist = np.divide(eq - mmr * aq * c, den, out=np.ones(1), where=den != 0.0)
        want = np.concatenate([q * c / eqs, (c - a.avg_entry_quote) * q / eqs,
                               np.array([a.bars_held]) / (a.bars_held + w),
                               np.minimum(np.maximum(dist, 0.0), 1.0)]).astype(np.float32)
        assert np.array_equal(obs[-4:], want)
        assert np.array_equal(obs[:-4], md.features[env.t - w + 1 : env.t + 1].reshape(-1))
        if te or tr:
            break


@pytest.mark.slow
def test_importing_the_envs_does_not_import_numba() -> None:
    code = "import sys, coinrl.envs; assert 'numba' not in sys.modules, 'numba imported eagerly'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    "clone", [copy.deepcopy, lambda x: pickle.loads(pickle.dumps(x))],  # noqa: S301 - our own bytes
    ids=["deepcopy", "pickle"],
)
def test_copied_books_and_accounts_step_their_own_state(clone: object) -> None:
    """Fields are views of (or cells in) the state matrix: a copy must view its own matrix."""
    cfg = EnvConfig(max_leverage=3.0)
    books, acct = Books(2, cfg), Account(cfg)
    bar = [np.full(2, 100.0)] * 5
    books.step_bar(np.ones(2), *bar)
    acct.step_bar(1.0, 100.0, 100.0, 100.0, 100.0, 100.0)
    b2, a2 = clone(books), clone(acct)  # type: ignore[operator]
    b2.step_bar(np.full(2, -2.0), *bar[:3], np.full(2, 90.0), bar[4])
    a2.step_bar(-2.0, 100.0, 100.0, 100.0, 90.0, 100.0)
    assert np.array_equal(b2.equity_quote, b2.state[kernel.EQUITY])
    assert b2.equity_quote[0] == a2.equity_quote != acct.equity_quote
    assert np.array_equal(books.equity_quote, np.full(2, acct.equity_quote))  # originals untouched
    assert a2.position_base == b2.position_base[0] < 0.0


def rollout_digest() -> str:
    """A hash of every observation, reward and equity of a short single and batched rollout."""
    h = hashlib.sha256()
    env = TradingEnv(random_market(300, vol=0.03), episode_length_bars=60, action="continuous",
                     max_leverage=10.0, reward="drawdown_penalised")
    obs, _ = env.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(60):
        obs, r, te, tr, _ = env.step(rng.uniform(-10, 10, 1).astype(np.float32))
        h.update(obs.tobytes() + np.float64(r).tobytes())
        if te or tr:
            obs, _ = env.reset()
    venv = TradingVectorEnv(3, random_market(300, vol=0.03), episode_length_bars=20, obs_mode="dict",
                            delay_bars=2, lot_size_base=0.01, reward="differential_sharpe")
    venv.reset(seed=1)
    for k in range(40):
        o, r, _, _, info = venv.step(np.array([k % 3, (k + 1) % 3, 2]))
        h.update(o["market"].tobytes() + o["account"].tobytes() + r.tobytes() + info["equity_quote"].tobytes())
    return h.hexdigest()


@pytest.mark.slow
def test_without_numba_the_envs_run_interpreted_with_the_same_floats() -> None:
    here = Path(__file__).parent
    code = ("import sys; sys.modules['numba'] = None; sys.path.insert(0, sys.argv[1]); "
            "from test_kernel import rollout_digest; print(rollout_digest())")
    out = subprocess.run([sys.executable, "-c", code, str(here)], check=True, capture_output=True, text=True)
    assert "numba is not installed" in out.stderr  # it says so
    assert out.stdout.split()[-1] == rollout_digest()
