"""LiveTradingEnv: TradingEnv's spaces and, over the paper broker, TradingEnv's observations,
rewards and books bit for bit on the same candles (long, short and leveraged accounts, box and
dict observations); the action mapping; kill -> terminated, stop -> truncated; reset never
resets an account."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
from live_helpers import ENV, SPEC, SYMBOL, candles, emulator, public

from coinrl.envs.config import EnvConfig
from coinrl.envs.trading_env import TradingEnv
from coinrl.live.brokers import PaperBroker
from coinrl.live.data import LiveDataFeed
from coinrl.live.live_env import LiveTradingEnv, SteppedClock, account_features
from coinrl.live.risk import RiskConfig, RiskGuard
from coinrl.pipeline.splits import market_data_from_spec, prepare_data_for_model

K0 = 150
FRAME = candles(K0 + 60, seed=21)
PREP = prepare_data_for_model(candles(600, seed=3), spec=SPEC)


@contextmanager
def paper_env(cfg: EnvConfig, risk: RiskGuard | None = None) -> Iterator[LiveTradingEnv]:
    with emulator(FRAME, K0) as (server, clock):
        feed = LiveDataFeed(public(server), SYMBOL, "1h", spec=PREP.spec, normaliser=PREP.normaliser,
                            window=cfg.window, history_bars=K0)
        yield LiveTradingEnv(feed, PaperBroker(cfg, SYMBOL, run_id="le"), cfg,
                             clock=SteppedClock(clock), risk=risk)


def twin(cfg: EnvConfig) -> TradingEnv:
    """TradingEnv over the same candles, its first decision at bar K0-1 (the live env's)."""
    md = market_data_from_spec(FRAME, PREP.spec, PREP.normaliser)
    i0 = int(np.searchsorted(md.ts_ms, FRAME.ts_ms.iloc[K0 - 1]))
    return TradingEnv(md.slice(i0 - (cfg.window - 1), len(md)),
                      cfg.model_copy(update={"episode_length_bars": None}))


def same(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    return np.array_equal(a, b)


CONFIGS = {
    "spot_discrete_box": ENV,
    "spot_discrete_dict": ENV.model_copy(update={"obs_mode": "dict"}),
    "short_leveraged_continuous": EnvConfig(
        window=8, action="continuous", allow_short=True, max_leverage=2.0, lot_size_base=0.25,
        maintenance_margin_rate=0.05, borrow_rate_per_bar=1e-5, rebalance_threshold=0.0,
    ),
}


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.slow
def test_spaces_observations_rewards_and_books_equal_trading_env(name):
    cfg = CONFIGS[name]
    rng = np.random.default_rng(7)
    te = twin(cfg)
    with paper_env(cfg) as env:
        assert env.observation_space == te.observation_space
        assert env.action_space == te.action_space
        obs, info = env.reset()
        o2, i2 = te.reset()
        assert same(obs, o2)
        assert info["ts_ms"] == i2["ts_ms"]
        n_trades = 0
        for _ in range(40):
            if cfg.action == "discrete":
                a = int(rng.integers(len(cfg.discrete_positions)))
            else:
                a = rng.uniform(-2.0, 2.0, size=1).astype(np.float32)
            obs, r, term, trunc, info = env.step(a)
            o2, r2, term2, _, i2 = te.step(a)
            assert same(obs, o2)
            assert env.observation_space.contains(obs)
            assert info["equity_quote"] == i2["equity_quote"]
            assert info["position_base"] == i2["position_base"]
            assert info["fees_paid_quote"] == i2["fees_paid_quote"]
            assert r == pytest.approx(r2, rel=1e-12, abs=1e-15)  # the env's default log return
            assert term is term2 is False
            n_trades += info["new_fills"]
        assert n_trades >= 10
        if cfg.allow_short:
            assert min(f.side.sign for f in env.broker.fills()) < 0


def test_action_mapping_matches_the_env_and_rejects_bad_actions():
    with paper_env(ENV) as env:
        assert [env.action_to_target(a) for a in (0, 1, 2, np.array([2]))] == [0.0, 0.5, 1.0, 1.0]
        with pytest.raises(ValueError, match="in \\[0, 3\\)"):
            env.action_to_target(3)
        with pytest.raises(ValueError, match="integer"):
            env.action_to_target(0.5)
    cont = CONFIGS["short_leveraged_continuous"]
    with paper_env(cont) as env:
        assert env.action_to_target(np.array([5.0], dtype=np.float32)) == 2.0
        assert env.action_to_target([-9.0]) == -2.0
        with pytest.raises(ValueError, match="NaN"):
            env.action_to_target([float("nan")])


def test_kill_switch_terminates_and_a_stopped_clock_truncates():
    guard = RiskGuard(RiskConfig(max_drawdown_frac=0.0, max_daily_loss_frac=None,
                                 max_clock_skew_ms=None), 3_600_000)
    with paper_env(ENV, guard) as env:
        env.reset()
        terms = []
        for _ in range(30):
            _, _, term, _, info = env.step(2)
            terms.append(term)
            if term:
                break
        assert terms[-1] is True  # the first loss from the peak trips a 0 % drawdown limit
        assert info["risk"]["verdict"] == "kill"
    with paper_env(ENV) as env:
        env.reset()
        env.clock.stop()
        obs, r, term, trunc, info = env.step(1)
        assert (term, trunc, info.get("stopped")) == (False, True, True)


def test_reset_syncs_but_never_resets_the_account():
    with paper_env(ENV) as env:
        env.reset()
        env.step(2)
        env.step(2)
        pos = env.broker_state.position_base
        assert pos > 0
        _, info = env.reset()
        assert info["position_base"] == pos


def test_account_features_by_hand():
    from coinrl.live.brokers import BrokerState

    cfg = EnvConfig(window=8, allow_short=True, max_leverage=2.0, maintenance_margin_rate=0.1)

    def state(cash, qty, price, avg, bars):
        return BrokerState(ts_ms=0, mark_bar_ts_ms=0, cash_quote=cash, position_base=qty,
                           avg_entry_quote=avg, mark_price_quote=price,
                           equity_quote=cash + qty * price, fees_paid_quote=0.0, bars_held=bars)

    # long 40 at 100 (entry 90), equity 10,000: far from liquidation
    assert account_features(cfg, state(6000.0, 40.0, 100.0, 90.0, 4)) == pytest.approx(
        (0.4, 0.04, 4 / 12, 1.0))
    # short 100 at 100 (entry 95: losing 500), equity 2,500; liquidation distance
    # (2500 - 0.1 * 100 * 100) / (110 * 100)
    assert account_features(cfg, state(12_500.0, -100.0, 100.0, 95.0, 2)) == pytest.approx(
        (-4.0, -0.2, 0.2, 1500.0 / 11_000.0))
    # flat: no exposure, fully away from liquidation
    assert account_features(cfg, state(10_000.0, 0.0, 100.0, 0.0, 0)) == (0.0, 0.0, 0.0, 1.0)
