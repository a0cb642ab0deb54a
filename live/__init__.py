"""coinrl.live: paper and live trading of a trained bundle.

Modules (one job each):

- :mod:`.exchange`: the exchange boundary over ccxt (the only module that trades through it);
  :mod:`.keys`: API credentials from the environment or a private key file.
- :mod:`.data`: :func:`get_live_data` / :class:`LiveDataFeed`: closed candles, gap-checked,
  featured with the bundle's own spec and normaliser.
- :mod:`.risk`: :class:`RiskConfig` and :func:`risk_management` (pure rules, the same in
  backtest, paper and live: they live in ``coinrl.envs.risk``), :class:`RiskGuard`; the
  portfolio form :func:`check_portfolio_risk` (``coinrl.envs.risk_portfolio``).
- :mod:`.brokers`: one :class:`Broker` interface; :class:`PaperBroker` (the env's books) and
  :class:`ExchangeBroker` (real orders); :func:`execute_trade`, :func:`monitor_open_positions`.
- :mod:`.journal`: the append-only SQLite :class:`Journal`; :func:`log_trades`.
- :mod:`.live_env`: :class:`LiveTradingEnv` (TradingEnv's spaces, stepping on closed candles).
- :mod:`.runner`: :class:`Runner` (schedule, hot reload, signals, recovery),
  :func:`update_live_model`, :func:`terminate_trading`, :class:`ExitCode`.
- :mod:`.retrain`: :func:`retrain_once` (rolling-window retrain, the challenger gate,
  :class:`RetrainConfig`), :func:`make_retrain_scheduler`, :func:`promote_challenger`,
  :func:`rollback_champion`, :func:`check_rollback`, :func:`check_shadow`.
- :mod:`.emulator`: a local Binance-like exchange for tests and demos.

The names below are imported lazily (``from coinrl.live import PaperBroker``), so importing
the package (or ``coinrl.live.emulator``) does not import ccxt, pandas or torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "get_live_data": "data",
    "LiveData": "data",
    "LiveDataFeed": "data",
    "public_client": "data",
    "RiskConfig": "risk",
    "RiskDecision": "risk",
    "RiskGuard": "risk",
    "RiskState": "risk",
    "risk_management": "risk",
    "check_risk": "risk",
    "PortfolioRiskConfig": "risk",
    "PortfolioRiskGuard": "risk",
    "check_portfolio_risk": "risk",
    "Broker": "brokers",
    "BrokerState": "brokers",
    "ExchangeBroker": "brokers",
    "PaperBroker": "brokers",
    "OrderContext": "brokers",
    "OrderReport": "brokers",
    "client_order_id": "brokers",
    "new_run_id": "brokers",
    "execute_trade": "brokers",
    "monitor_open_positions": "brokers",
    "Journal": "journal",
    "log_trades": "journal",
    "LiveTradingEnv": "live_env",
    "ExchangeBarClock": "live_env",
    "SteppedClock": "live_env",
    "ExitCode": "runner",
    "Runner": "runner",
    "RunnerConfig": "runner",
    "build_runner": "runner",
    "terminate_trading": "runner",
    "update_live_model": "runner",
    "ExchangeClient": "exchange",
    "connect_to_exchange": "exchange",
    "Credentials": "keys",
    "RetrainConfig": "retrain_config",
    "RetrainOutcome": "retrain_config",
    "retrain_once": "retrain",
    "gate_challenger": "retrain_gate",
    "retrain_job": "retrain_schedule",
    "make_retrain_scheduler": "retrain_schedule",
    "promote_challenger": "retrain_promote",
    "rollback_champion": "retrain_promote",
    "recover_promotion": "retrain_promote",
    "check_rollback": "retrain_rollback",
    "check_shadow": "retrain_rollback",
    "load_credentials": "keys",
}

__all__ = sorted(_EXPORTS)

SEED_FUNCTIONS = (
    "connect_to_exchange",
    "get_live_data",
    "execute_trade",
    "monitor_open_positions",
    "risk_management",
    "update_live_model",
    "log_trades",
    "terminate_trading",
)
"""The seed's public functions of the live stage (each importable from this package)."""


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'coinrl.live' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
