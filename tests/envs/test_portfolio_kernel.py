"""The portfolio kernel: A = 1 equals the scalar kernel bit for bit; properties with A > 1.

The hand-computed 2-asset books are in ``test_portfolio_books.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scalar_kernel as sko  # the pre-switch scalar kernel, an interpreted oracle
from hypothesis import given, settings
from hypothesis import strategies as st
from test_kernel import bar_paths, configs

from coinrl.envs import kernel
from coinrl.envs import portfolio_kernel as pk
from coinrl.envs import single_kernel as sk
from coinrl.envs.config import EnvConfig

ACCOUNT_ROWS = ("CASH", "REALISED", "EQUITY", "FEES", "SLIPPAGE", "FUNDING", "BORROW", "TURNOVER",
                "SHORTFALL", "LIQUIDATED", "REWARD_A", "REWARD_B")
ASSET_ROWS = ((sko.QTY, pk.A_QTY), (sko.AVG_ENTRY, pk.A_AVG), (sko.MARK, pk.A_MARK),
              (sko.BARS_HELD, pk.A_BARS_HELD))


def _params(cfg: EnvConfig, n_assets: int, nf: int = 2) -> tuple[np.ndarray, np.ndarray]:
    p = kernel.make_params(cfg, n_features=nf, acct_col=cfg.window * nf, eq_floor_quote=1e-5)
    return p, np.ascontiguousarray(np.repeat(p[None, :], n_assets, axis=0))


@settings(max_examples=300, deadline=None)
@given(path=bar_paths(), cfg_kw=configs, reward=st.sampled_from(sorted(kernel.REWARD_CODES)))
@pytest.mark.slow
def test_one_asset_portfolio_equals_the_scalar_kernel_to_the_last_bit(
    path: tuple[list[tuple[float, ...]], list[tuple[float, float]]], cfg_kw: dict[str, object],
    reward: str,
) -> None:
    """Books, fills, liquidations, rewards and observations of A = 1 are the pre-switch scalar
    kernel's floats exactly (``scalar_kernel.py``, the oracle), on random bars (gaps, wicks,
    funding) and out-of-range targets: the portfolio env step, and the single-asset entry point
    every single-asset env steps (observation layout included)."""
    bars_list, targets = path
    cfg = EnvConfig(positions=(0.0, 1.0), window=2, reward=reward, **cfg_kw)  # type: ignore[arg-type]
    lo, hi = cfg.exposure_bounds
    w, nf = 2, 2
    bars6 = np.array([bars_list[0]] * (w - 1) + bars_list, dtype=np.float64)
    bars7 = sk.bar_table(*bars6.T)
    feats = np.random.default_rng(0).normal(size=len(bars6) * nf).astype(np.float32)
    p, pa = _params(cfg, 1, nf)
    pks, sks = pk.compiled(), sk.compiled()
    s1 = sko.new_state(1, cfg.initial_cash_quote)
    s2 = pk.new_state(1, 1, cfg.initial_cash_quote)
    s3 = sk.new_state(1, cfg.initial_cash_quote)
    kernel.reset_reward_state(s2, slice(None), p)
    kernel.reset_reward_state(s3, slice(None), p)
    s1[sko.REWARD_A] = s2[kernel.REWARD_A]  # the oracle's reset: the same rule, its own rows
    out1 = np.zeros((1, w * nf + 4), dtype=np.float32)
    out2 = np.zeros((1, w * nf + 1 + pk.N_PF_ACCOUNT_FEATURES), dtype=np.float32)
    out3 = np.zeros((1, w * nf + 4), dtype=np.float32)
    scratch = np.empty((4, 1))
    amap = np.array([cfg.max_leverage, cfg.max_leverage, 1.0 if cfg.allow_short else 0.0])
    for i, (tgt, _) in enumerate(targets):
        t = i + w - 1
        x = float(np.clip(tgt, lo, hi))
        with np.errstate(all="ignore"):  # numpy scalars warn on overflow where compiled code does not
            r1 = sko.env_step(s1, p, bars6, feats, out1, t, x, 0)
        r2 = pks.pf_env_step(s2, p, pa, bars7, feats, out2, t, np.array([x]), False, 0.0, 0.0, False, 0,
                             np.empty((1, 2)))
        r3 = sks.env_step(s3, p, pa, bars7, feats, out3, t, float(tgt), 0, scratch, amap)  # mapped inside
        for r in (r2, r3):
            assert r1 == r or (math.isnan(r1) and math.isnan(r))
        for name in ACCOUNT_ROWS:
            want = s1[getattr(sko, name), 0]
            for s in (s2, s3):
                got = s[getattr(kernel, name), 0]
                assert want == got or (math.isnan(want) and math.isnan(got)), name
        for scalar_row, offset in ASSET_ROWS:
            assert s1[scalar_row, 0] == s2[pk.row(0, offset), 0] == s3[pk.row(0, offset), 0], scalar_row
        assert np.array_equal(out1[0, : w * nf], out2[0, : w * nf])
        assert np.array_equal(out1, out3)
        if s1[sko.LIQUIDATED, 0]:
            break


def test_compiled_portfolio_kernel_equals_the_interpreted_one() -> None:
    """No compiler flag changes a float: the same functions run by the interpreter."""
    rng = np.random.default_rng(5)
    cfg = EnvConfig(action="continuous", max_leverage=3.0, taker_fee_rate=0.001, slippage_bps=2.0,
                    impact_coef=0.2, borrow_rate_per_bar=1e-4, lot_size_base=0.001)
    n_assets, n_bars = 3, 60
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.03, (n_bars, n_assets)), axis=0))
    bars = np.empty((n_bars, n_assets, 7))
    bars[:, :, 0] = close * np.exp(rng.normal(0, 0.01, close.shape))
    bars[:, :, 3] = close
    bars[:, :, 1] = np.maximum(bars[:, :, 0], close) * 1.02
    bars[:, :, 2] = np.minimum(bars[:, :, 0], close) * 0.98
    bars[:, :, 4] = 1e3
    bars[:, :, 5] = np.where(np.arange(n_bars)[:, None] % 8 == 0, 1e-4, 0.0)
    bars[:, :, 6] = 1.0
    bars[:10, 2, 6] = 0.0  # asset 2 lists at bar 10
    p, pa = _params(cfg, n_assets)
    targets = rng.uniform(-1.5, 1.5, (n_bars, 2, n_assets))
    states = []
    for impl in (pk, pk.compiled()):
        s = pk.new_state(2, n_assets, cfg.initial_cash_quote)
        liq = np.zeros(2, dtype=bool)
        for t in range(n_bars):
            impl.pf_books_step(s, p, pa, np.ascontiguousarray(targets[t]), bars,
                               np.full(2, t, dtype=np.int64), liq)
        states.append(s)
    assert np.array_equal(states[0], states[1])
    assert states[0][pk.row(2, pk.A_TURNOVER)].tolist() != [0.0, 0.0]


@pytest.mark.parametrize("n_assets", [2, 5])
def test_money_is_conserved_and_equity_is_cash_plus_positions(n_assets: int) -> None:
    rng = np.random.default_rng(n_assets)
    cfg = EnvConfig(action="continuous", max_leverage=4.0, taker_fee_rate=0.001, slippage_bps=3.0,
                    borrow_rate_per_bar=2e-5, maintenance_margin_rate=0.02)
    n_bars = 300
    close = 50.0 * np.exp(np.cumsum(rng.normal(0, 0.02, (n_bars, n_assets)), axis=0))
    bars = np.empty((n_bars, n_assets, 7))
    bars[:, :, 0] = np.r_[close[:1], close[:-1]]
    bars[:, :, 3] = close
    bars[:, :, 1] = np.maximum(bars[:, :, 0], close) * 1.01
    bars[:, :, 2] = np.minimum(bars[:, :, 0], close) * 0.99
    bars[:, :, 4] = 1e3
    bars[:, :, 5] = np.where(np.arange(n_bars)[:, None] % 8 == 0, 2e-4, 0.0)
    bars[:, :, 6] = 1.0
    p, pa = _params(cfg, n_assets)
    s = pk.new_state(4, n_assets, cfg.initial_cash_quote)
    liq = np.zeros(4, dtype=bool)
    ks = pk.compiled()
    for t in range(n_bars):
        w = rng.uniform(-1.0, 1.0, (4, n_assets)) * 4.0 / n_assets
        ks.pf_books_step(s, p, pa, w, bars, np.full(4, t, dtype=np.int64), liq)
        qty = np.stack([s[pk.row(a, pk.A_QTY)] for a in range(n_assets)])
        avg = np.stack([s[pk.row(a, pk.A_AVG)] for a in range(n_assets)])
        c = bars[t, :, 3][:, None]
        eq = s[kernel.CASH] + (qty * c).sum(axis=0)
        np.testing.assert_allclose(s[kernel.EQUITY], eq, rtol=1e-12, atol=1e-9)
        expected = (cfg.initial_cash_quote + s[kernel.REALISED] + ((c - avg) * qty).sum(axis=0)
                    - s[kernel.FEES] - s[kernel.SLIPPAGE] - s[kernel.FUNDING] - s[kernel.BORROW]
                    + s[kernel.SHORTFALL])
        np.testing.assert_allclose(s[kernel.EQUITY], expected, rtol=1e-9, atol=1e-6)
        # the per-asset cost totals add up to the account's
        for acct_row, a_row in ((kernel.FEES, pk.A_FEES), (kernel.FUNDING, pk.A_FUNDING),
                                (kernel.TURNOVER, pk.A_TURNOVER), (kernel.SLIPPAGE, pk.A_SLIPPAGE)):
            per_asset = sum(s[pk.row(a, a_row)] for a in range(n_assets))
            np.testing.assert_allclose(s[acct_row], per_asset, rtol=1e-12)


@st.composite
def portfolio_paths(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    a_n = draw(st.integers(1, 4))
    n = draw(st.integers(2, 25))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    vol = draw(st.sampled_from([0.01, 0.1, 0.3]))
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, vol, (n, a_n)), axis=0))
    bars = np.empty((n, a_n, 7))
    bars[:, :, 0] = close * np.exp(rng.normal(0, vol / 2, close.shape))
    bars[:, :, 3] = close
    wick = np.abs(rng.normal(0, vol, (2, n, a_n)))
    bars[:, :, 1] = np.maximum(bars[:, :, 0], close) * (1 + wick[0])
    bars[:, :, 2] = np.minimum(bars[:, :, 0], close) * (1 - wick[1])
    bars[:, :, 4] = rng.lognormal(3, 1, (n, a_n))
    bars[:, :, 5] = rng.choice([0.0, 0.0, 1e-3, -2e-3], (n, a_n))
    bars[:, :, 6] = rng.random((n, a_n)) > draw(st.sampled_from([0.0, 0.3, 0.7]))
    targets = rng.normal(0, draw(st.sampled_from([0.3, 2.0, 20.0])), (n, a_n))
    return bars, targets


@settings(max_examples=150, deadline=None)
@given(path=portfolio_paths(), cfg_kw=configs)
@pytest.mark.slow
def test_books_conserve_money_and_never_fill_a_masked_asset(
    path: tuple[np.ndarray, np.ndarray], cfg_kw: dict[str, object]
) -> None:
    """On random bars, masks, targets and configs: equity = cash + sum qty * close; equity =
    initial + realised + unrealised - costs + shortfall; a masked asset's position changes only
    when the account is liquidated (which closes every position, a masked one at its bar's
    price, the last tradable close), and it pays no funding."""
    bars, targets = path
    n_bars, a_n = targets.shape
    cfg = EnvConfig(positions=(0.0, 1.0), **cfg_kw)  # type: ignore[arg-type]
    p, pa = _params(cfg, a_n)
    s = pk.new_state(1, a_n, cfg.initial_cash_quote)
    liq = np.zeros(1, dtype=bool)
    ks = pk.compiled()
    for t in range(n_bars):
        before = np.array([s[pk.row(a, pk.A_QTY), 0] for a in range(a_n)])
        turnover = np.array([s[pk.row(a, pk.A_TURNOVER), 0] for a in range(a_n)])
        funding = np.array([s[pk.row(a, pk.A_FUNDING), 0] for a in range(a_n)])
        ks.pf_books_step(s, p, pa, np.ascontiguousarray(targets[t : t + 1]), bars,
                         np.array([t], dtype=np.int64), liq)
        qty = np.array([s[pk.row(a, pk.A_QTY), 0] for a in range(a_n)])
        avg = np.array([s[pk.row(a, pk.A_AVG), 0] for a in range(a_n)])
        c = bars[t, :, 3]
        eq = s[kernel.EQUITY, 0]
        scale = max(1.0, abs(eq), float(np.abs(qty * c).sum()))
        assert abs(eq - (s[kernel.CASH, 0] + float(qty @ c))) <= 1e-9 * scale
        expected = (cfg.initial_cash_quote + s[kernel.REALISED, 0] + float(((c - avg) * qty).sum())
                    - s[kernel.FEES, 0] - s[kernel.SLIPPAGE, 0] - s[kernel.FUNDING, 0]
                    - s[kernel.BORROW, 0] + s[kernel.SHORTFALL, 0])
        assert abs(eq - expected) <= 1e-7 * max(scale, cfg.initial_cash_quote)
        if not liq[0]:
            masked = bars[t, :, 6] == 0.0
            assert np.array_equal(qty[masked], before[masked])
            now = np.array([s[pk.row(a, pk.A_TURNOVER), 0] for a in range(a_n)])
            assert np.array_equal(now[masked], turnover[masked])
        masked = bars[t, :, 6] == 0.0
        paid = np.array([s[pk.row(a, pk.A_FUNDING), 0] for a in range(a_n)])
        assert np.array_equal(paid[masked], funding[masked])  # no funding on an untradable bar
        assert s[kernel.CASH, 0] >= 0.0 or not liq[0]
