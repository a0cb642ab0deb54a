"""Helpers of the live-trading tests: a market, a tiny trained bundle, a rule policy, an
emulator with an account, and sessions (paper or live) over it.

The market is a seeded GBM of a coin around 40 USDT with a lot step of 0.25: the emulator
books balances in float64, and with a decimal lot step (1e-5 BTC) a sum of fills can land one
ulp below a step multiple, so selling the whole balance leaves one step of dust that the
backtest does not have. Quarter units are exact in binary, so every balance stays exact and a
paper session, a live session and the backtest can be compared to 1e-9.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from coinrl.envs.config import EnvConfig
from coinrl.live.emulator import EmulatorServer, FixedClock, MarketSpec
from coinrl.pipeline.synthetic import gbm

SYMBOL = "SOL/USDT"
STEP = 0.25
KEY = "LiveKeyAbCdEf0123456789XYZ"
SECRET = "LiveSecret-7f3e9a1c2b4d6e8f-do-not-leak"  # noqa: S105 - an emulator test account
HOUR = 3_600_000
MARKET = MarketSpec(
    symbol=SYMBOL, kind="spot", base="SOL", quote="USDT", tick_size=0.001, step_size=STEP,
    min_qty=STEP, max_qty=9_000_000.0, min_notional=5.0, min_price=0.001, max_price=100_000.0,
)
SPEC: dict[str, Any] = {"features": [
    {"kind": "returns", "horizons": [1, 4]},
    {"kind": "rsi", "window": 14},
    {"kind": "sma_ratio", "windows": [12]},
]}
ENV = EnvConfig(
    window=8, action="discrete", positions=(0.0, 0.5, 1.0), allow_short=False, max_leverage=1.0,
    taker_fee_rate=0.001, slippage_bps=2.0, lot_size_base=STEP, min_notional_quote=5.0,
    rebalance_threshold=0.01, episode_length_bars=256,
)
TRAIN_STEPS = 3072


def candles(n: int = 400, seed: int = 5) -> pd.DataFrame:
    """Seeded hourly GBM candles of ``SYMBOL`` around 40 USDT (open = previous close)."""
    frame = gbm(n, s0=40.0, sigma=0.8, seed=seed)
    frame.attrs.update(symbol=SYMBOL, exchange="binance")
    return frame


def ohlcv(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame[["ts_ms", "open", "high", "low", "close", "volume"]].copy()
    out.attrs["timeframe"] = "1h"
    return out


class RulePolicy:
    """A deterministic rule with the TrainedAgent interface: position by the sign of the newest
    one-bar return (0 -> flat, > 0 -> full, < 0 -> half)."""

    def __init__(self, window: int = ENV.window, n_features: int = 4) -> None:
        self.col = (window - 1) * n_features

    def predict(self, observation: Any, deterministic: bool = True) -> np.ndarray:
        x = np.asarray(observation)[:, self.col]
        return np.where(x > 0, 2, np.where(x < 0, 1, 0)).astype(np.int64)


def tiny_bundle(dest: Path, seed: int = 0, train_seed: int = 11) -> Path:
    """Train a PPO agent for a few thousand steps on seeded candles and save its bundle.

    A bundle cached at ``dest`` is reused when it still loads (the training is seeded and
    deterministic, so it is the same bundle).
    """
    from coinrl.agents.bundle import load_model, save_model
    from coinrl.agents.config import TrainConfig
    from coinrl.agents.train import train_model
    from coinrl.pipeline.errors import CoinrlError
    from coinrl.pipeline.splits import prepare_data_for_model

    if (dest / "manifest.json").is_file():
        try:
            load_model(dest)
            return dest
        except CoinrlError:
            shutil.rmtree(dest, ignore_errors=True)
    prepared = prepare_data_for_model(candles(2000, seed=train_seed), spec=SPEC)
    cfg = TrainConfig.model_validate({
        "total_timesteps": TRAIN_STEPS, "n_envs": 4, "seed": seed,
        "ppo": {"n_steps": 128, "batch_size": 256, "n_epochs": 2},
        "eval_every_steps": 0, "checkpoint_every_steps": 0, "early_stopping_patience": None,
    })
    agent = train_model(prepared, cfg, ENV)
    return save_model(agent, dest)


@contextmanager
def emulator(
    frame: pd.DataFrame, start_index: int, *, cash: float = 10_000.0, clock: Any = None,
    grace_ms: int = 0, balances: dict[str, float] | None = None, market: MarketSpec = MARKET,
    env: EnvConfig = ENV,
) -> Iterator[tuple[EmulatorServer, Any]]:
    """An emulator over ``frame`` with a funded account; its clock at bar ``start_index``'s open
    (bars before it closed) unless ``clock`` is given."""
    clk = clock if clock is not None else FixedClock(int(frame.ts_ms.iloc[start_index]))
    server = EmulatorServer(
        {SYMBOL: ohlcv(frame)}, clock=clk, markets={SYMBOL: market}, execution=env,
        accounts={KEY: (SECRET, balances or {"USDT": cash})}, market_fill_grace_ms=grace_ms,
    )
    server.start()
    try:
        yield server, clk
    finally:
        server.stop()


def connect(server: EmulatorServer, **kw: Any) -> Any:
    from coinrl.live.exchange import connect_to_exchange

    kw.setdefault("max_clock_skew_ms", None)
    kw.setdefault("config", {"enableRateLimit": False})
    return connect_to_exchange(KEY, SECRET, exchange_url=server.base_url, symbols=[SYMBOL], **kw)


def public(server: EmulatorServer) -> Any:
    from coinrl.live.data import public_client

    return public_client(exchange_url=server.base_url, config={"enableRateLimit": False})


DIALECTS = ("binance", "bybit")
"""The exchange dialects the emulator speaks (ccxt ids); the live tests run over each."""
ORDER_PATHS = {"binance": "/api/v3/order", "bybit": "/v5/order/create"}
"""Where each dialect places orders (the path of a fault that hits order placement)."""
