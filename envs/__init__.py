"""coinrl.envs: the books kernel, the trading env, its batched twin and the SB3 adapter.

Importing this package registers ``coinrl/Trading-v0``::

    import gymnasium as gym
    import coinrl.envs  # noqa: F401

    env = gym.make("coinrl/Trading-v0", window=24, action="continuous")
    vec = gym.make_vec("coinrl/Trading-v0", num_envs=256, vectorization_mode="vector_entry_point")

Modules: ``domain`` (Order, Fill, Position), ``execution`` (fill rules), ``books`` (the books:
Books for N accounts, Account for one), ``kernel`` (the compiled step every env and the books run:
numba, imported and compiled or loaded from its cache on the first construction, not here),
``rewards``, ``trading_env`` (TradingEnv and the exact timing), ``vector`` (TradingVectorEnv),
``sb3`` (SB3 VecEnv adapters), ``config`` (EnvConfig, PortfolioEnvConfig), ``data`` (MarketData
from frames, files or the packaged sample). Portfolios (one account, A assets, registered as
``coinrl/Portfolio-v0``): ``portfolio_kernel`` (the asset-axis kernel; A = 1 equals ``kernel``
bit for bit), ``actions`` (ActionMap), ``portfolio_env`` (PortfolioEnv), ``portfolio_vector``
(PortfolioVectorEnv).
"""

from __future__ import annotations

from gymnasium.envs.registration import register, registry

from .actions import ActionMap
from .books import Account, Books
from .config import AssetCosts, EnvConfig, PortfolioEnvConfig, env_config_from
from .data import default_market_data, market_data_from, market_list
from .domain import Charge, ChargeKind, Fill, Order, OrderType, Position, Side, trade
from .execution import ExecutionModel
from .portfolio_env import PortfolioEnv
from .portfolio_vector import PortfolioVectorEnv
from .rewards import REWARDS, Reward, make_reward
from .trading_env import TradingEnv
from .vector import TradingVectorEnv

# The SB3 adapter (coinrl.envs.sb3.TradingSB3VecEnv) is imported on demand: it pulls in torch.

ENV_ID = "coinrl/Trading-v0"
PORTFOLIO_ENV_ID = "coinrl/Portfolio-v0"

if ENV_ID not in registry:
    register(
        id=ENV_ID,
        entry_point="coinrl.envs.trading_env:TradingEnv",
        vector_entry_point="coinrl.envs.vector:TradingVectorEnv",
        disable_env_checker=False,
    )
if PORTFOLIO_ENV_ID not in registry:
    register(
        id=PORTFOLIO_ENV_ID,
        entry_point="coinrl.envs.portfolio_env:PortfolioEnv",
        vector_entry_point="coinrl.envs.portfolio_vector:PortfolioVectorEnv",
        disable_env_checker=False,
    )

__all__ = [
    "ENV_ID",
    "PORTFOLIO_ENV_ID",
    "REWARDS",
    "Account",
    "ActionMap",
    "AssetCosts",
    "Books",
    "Charge",
    "ChargeKind",
    "EnvConfig",
    "ExecutionModel",
    "Fill",
    "Order",
    "OrderType",
    "PortfolioEnv",
    "PortfolioEnvConfig",
    "PortfolioVectorEnv",
    "Position",
    "Reward",
    "Side",
    "TradingEnv",
    "TradingVectorEnv",
    "default_market_data",
    "env_config_from",
    "make_reward",
    "market_data_from",
    "market_list",
    "trade",
]
