"""Play decisions over a whole split through the env's books: the one simulation path of agents.

Everything agents/ reports (evaluation, baselines, and the backtester built on them) runs here,
through :class:`~coinrl.envs.vector.TradingVectorEnv` and so through
:class:`~coinrl.envs.books.Books`: no second simulator. Two entry points:

* :func:`rollout_policy`: a policy (an SB3 model or any ``obs -> action`` callable) decides bar
  by bar, seeing only the observation the env gives it (features up to the decision bar and the
  account state).
* :func:`simulate_actions`: fixed action sequences, ``N`` of them stepped together (baselines,
  replays of recorded decisions).

Both cover the split from its first possible decision bar (``window - 1``) to its last bar
(``episode_length_bars`` is overridden to ``None``): ``T = len(data) - window`` steps and
``T + 1`` equity marks. Decision ``k`` is taken at the close of bar ``window - 1 + k`` and fills
at the open of the next bar (``delay_bars`` later), exactly as in training.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from coinrl.envs.config import EnvConfig, env_config_from
from coinrl.envs.vector import TradingVectorEnv
from coinrl.pipeline.dataset import MarketData
from coinrl.pipeline.errors import ConfigError, DataError
from coinrl.pipeline.timeframes import bars_per_year

from .metrics import trading_metrics

logger = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

PolicyFn = Callable[[Any], Any]
"""``obs -> action``: a batch of one observation in, a batch of one action out."""


@dataclass(frozen=True, eq=False)
class Rollout:
    """One account's run over a split.

    Attributes:
        ts_ms: ``T + 1`` open times of the bars whose close each mark is taken at (UTC ms).
        equity_quote: ``T + 1`` equity marks (quote currency), ``equity_quote[0]`` the
            initial cash.
        exposure: ``T + 1`` position notional / equity at each mark.
        position_base: ``T + 1`` positions (base currency).
        close_quote: ``T + 1`` closes the marks were taken at.
        actions: ``T`` env actions (indices for a discrete env, exposures for a continuous one).
        target_exposure: ``T`` target exposures the actions stand for.
        rewards: ``T`` env rewards.
        fees_paid_quote, slippage_paid_quote, turnover_quote: totals over the run.
        liquidated: whether the account was liquidated (the run is then flat afterwards).
        timeframe: bar size, for annualisation.
    """

    ts_ms: I64
    equity_quote: F64
    exposure: F64
    position_base: F64
    close_quote: F64
    actions: npt.NDArray[Any]
    target_exposure: F64
    rewards: F64
    fees_paid_quote: float
    slippage_paid_quote: float
    turnover_quote: float
    liquidated: bool
    timeframe: str

    @property
    def n_steps(self) -> int:
        """Number of decisions ``T``."""
        return len(self.actions)

    @property
    def periods_per_year(self) -> float:
        """Bars in a 365-day year for this rollout's timeframe."""
        return bars_per_year(self.timeframe)

    def metrics(self) -> dict[str, float]:
        """:func:`~coinrl.agents.metrics.trading_metrics` of this run."""
        return trading_metrics(
            self.equity_quote,
            self.exposure,
            self.periods_per_year,
            fees_paid_quote=self.fees_paid_quote,
            slippage_paid_quote=self.slippage_paid_quote,
            turnover_quote=self.turnover_quote,
        )


def evaluation_config(env_config: EnvConfig | dict[str, Any] | None) -> EnvConfig:
    """The env config for a whole-split run: the same costs and rules, one episode over all bars."""
    cfg = env_config_from(env_config)
    if cfg.episode_length_bars is None:
        return cfg
    return cfg.model_copy(update={"episode_length_bars": None})


def n_decisions(data: MarketData, env_config: EnvConfig) -> int:
    """Decisions ``T`` in a whole-split run (``len(data) - window``)."""
    t = len(data) - env_config.window
    if t < 1:
        raise DataError(
            f"{data.symbol} split has {len(data)} bars; window={env_config.window} needs at least "
            f"{env_config.window + 1} to take one decision"
        )
    return t


def targets_to_actions(targets: npt.ArrayLike, env_config: EnvConfig) -> npt.NDArray[Any]:
    """Env actions standing for target exposures.

    For a discrete env every target must be one of ``env_config.discrete_positions`` (its index is the
    action); for a continuous env the action is the exposure itself, shaped ``(..., 1)``.

    Raises:
        ConfigError: a target that a discrete env cannot express.
    """
    x = np.asarray(targets, dtype=np.float64)
    if env_config.action == "continuous":
        return x[..., None].astype(np.float32)
    pos = np.asarray(env_config.discrete_positions, dtype=np.float64)
    idx = np.abs(x[..., None] - pos).argmin(axis=-1)
    bad = ~np.isclose(pos[idx], x, rtol=0.0, atol=1e-12)
    if bad.any():
        first = float(x[bad].reshape(-1)[0])
        raise ConfigError(
            f"target exposure {first} is not one of the env's discrete positions "
            f"{list(env_config.discrete_positions)}; use those exposures or a continuous env"
        )
    return idx.astype(np.int64)


def actions_to_targets(actions: npt.ArrayLike, env_config: EnvConfig) -> F64:
    """Target exposures of env actions (inverse of :func:`targets_to_actions`, clipped)."""
    a = np.asarray(actions)
    if env_config.action == "discrete":
        return np.asarray(env_config.discrete_positions, dtype=np.float64)[a.astype(np.int64)]
    lo, hi = env_config.exposure_bounds
    x = a.astype(np.float64)
    if x.ndim >= 1 and x.shape[-1] == 1:
        x = x[..., 0]
    return np.clip(x, lo, hi)


class _Recorder:
    """Marks of N whole-split accounts; an account's marks freeze once its episode ends.

    Every run starts at decision bar ``window - 1``, so the mark times and closes are the
    split's own; after a liquidation the env would restart the account (autoreset), so its
    later marks repeat the last equity with no position instead.
    """

    def __init__(self, venv: TradingVectorEnv, data: MarketData, n_steps: int) -> None:
        n = venv.num_envs
        w = venv.config.window
        self.venv = venv
        self.t = 0
        self.ts = np.ascontiguousarray(data.ts_ms[w - 1 : w + n_steps], dtype=np.int64)
        self.close = np.ascontiguousarray(data.close[w - 1 : w + n_steps], dtype=np.float64)
        self.eq = np.zeros((n, n_steps + 1))
        self.pos = np.zeros((n, n_steps + 1))
        self.rew = np.zeros((n, n_steps))
        self.done = np.zeros(n, dtype=bool)
        self.liq = np.zeros(n, dtype=bool)
        b = venv.books
        self.eq[:, 0] = b.equity_quote
        self.pos[:, 0] = b.position_base
        self.fees = b.fees_paid_quote.copy()
        self.slip = b.slippage_paid_quote.copy()
        self.turn = b.turnover_quote.copy()

    def step(self, rewards: F64, terminated: npt.NDArray[np.bool_]) -> None:
        k = self.t + 1
        self.t = k
        live = ~self.done
        b = self.venv.books
        self.rew[live, k - 1] = rewards[live]
        self.eq[:, k] = np.where(live, b.equity_quote, self.eq[:, k - 1])
        self.pos[:, k] = np.where(live, b.position_base, 0.0)
        self.fees[live] = b.fees_paid_quote[live]
        self.slip[live] = b.slippage_paid_quote[live]
        self.turn[live] = b.turnover_quote[live]
        newly = terminated & live
        self.liq |= newly
        self.done |= newly

    def rollouts(
        self, actions: npt.NDArray[Any], targets: F64, timeframe: str
    ) -> list[Rollout]:
        notional = self.pos * self.close
        expo = np.divide(notional, self.eq, out=np.zeros_like(self.eq), where=self.eq > 0)
        return [
            Rollout(
                ts_ms=self.ts,
                equity_quote=self.eq[i],
                exposure=expo[i],
                position_base=self.pos[i],
                close_quote=self.close,
                actions=actions[i],
                target_exposure=targets[i],
                rewards=self.rew[i],
                fees_paid_quote=float(self.fees[i]),
                slippage_paid_quote=float(self.slip[i]),
                turnover_quote=float(self.turn[i]),
                liquidated=bool(self.liq[i]),
                timeframe=timeframe,
            )
            for i in range(len(self.eq))
        ]


def simulate_actions(
    data: MarketData, env_config: EnvConfig | dict[str, Any] | None, actions: npt.ArrayLike
) -> list[Rollout]:
    """Step ``N`` fixed action sequences over the whole split, together, through the env.

    Args:
        data: the split (normalised MarketData).
        env_config: the env config used in training (costs, window, action mode...); its
            ``episode_length_bars`` is replaced by a single whole-split episode.
        actions: ``(N, T)`` env actions (``(N, T, 1)`` for a continuous env), or one sequence
            ``(T,)``; ``T`` must equal :func:`n_decisions`.

    Returns:
        One :class:`Rollout` per sequence.
    """
    cfg = evaluation_config(env_config)
    t_steps = n_decisions(data, cfg)
    a = np.asarray(actions)
    cont = cfg.action == "continuous"
    base_ndim = 2 if cont else 1
    if a.ndim == base_ndim:
        a = a[None]
    if a.ndim != base_ndim + 1 or a.shape[1] != t_steps:
        raise DataError(
            f"actions must have shape (N, {t_steps}{', 1' if cont else ''}) for this split and "
            f"window, got {np.asarray(actions).shape}"
        )
    n = a.shape[0]
    venv = TradingVectorEnv(n, data, cfg)
    venv.reset(seed=0)
    rec = _Recorder(venv, data, t_steps)
    for k in range(t_steps):
        _, rew, term, _, _ = venv.step(a[:, k])
        rec.step(rew, term)
    venv.close()
    targets = actions_to_targets(a, cfg)
    return rec.rollouts(a, targets, data.timeframe)


def sb3_policy(model: Any, deterministic: bool = True) -> Callable[[Any, bool], Any]:
    """Wrap an SB3 model as a stateful ``(obs, episode_start) -> action`` callable.

    Recurrent policies (sb3-contrib RecurrentPPO) keep their LSTM state between calls.
    """
    state: list[Any] = [None]

    def act(obs: Any, episode_start: bool) -> Any:
        action, new_state = model.predict(
            obs,
            state=state[0],
            episode_start=np.array([episode_start]),
            deterministic=deterministic,
        )
        state[0] = new_state
        return action

    return act


def rollout_policy(
    policy: Any,
    data: MarketData,
    env_config: EnvConfig | dict[str, Any] | None,
    *,
    deterministic: bool = True,
) -> Rollout:
    """Let a policy trade the whole split bar by bar through the env.

    Args:
        policy: an SB3 model (anything with ``predict``) or a callable taking a batch of one
            observation and returning a batch of one action.
        data: the split (normalised MarketData, same features as in training).
        env_config: the env config used in training.
        deterministic: use the policy's mode (True for evaluation).

    Returns:
        The :class:`Rollout` (after a liquidation the account stays flat to the end).
    """
    cfg = evaluation_config(env_config)
    t_steps = n_decisions(data, cfg)
    venv = TradingVectorEnv(1, data, cfg)
    obs, _ = venv.reset(seed=0)
    if hasattr(policy, "predict"):
        act = sb3_policy(policy, deterministic)
    else:

        def act(o: Any, episode_start: bool) -> Any:
            return policy(o)

    rec = _Recorder(venv, data, t_steps)
    if cfg.action == "continuous":
        acts: npt.NDArray[Any] = np.zeros((t_steps, 1), dtype=np.float32)
    else:
        acts = np.zeros(t_steps, dtype=np.int64)
    shape = acts.shape[1:]
    for k in range(t_steps):
        acts[k] = np.asarray(act(obs, k == 0)).reshape(shape)
        obs, rew, term, _, _ = venv.step(acts[k : k + 1])
        rec.step(rew, term)
    venv.close()
    targets = actions_to_targets(acts[None], cfg)
    out = rec.rollouts(acts[None], targets, data.timeframe)[0]
    logger.debug(
        "rollout symbol=%s steps=%d final_equity=%.2f liquidated=%s",
        data.symbol, t_steps, out.equity_quote[-1], out.liquidated,
    )
    return out


__all__ = [
    "PolicyFn",
    "Rollout",
    "actions_to_targets",
    "evaluation_config",
    "n_decisions",
    "rollout_policy",
    "sb3_policy",
    "simulate_actions",
    "targets_to_actions",
]
