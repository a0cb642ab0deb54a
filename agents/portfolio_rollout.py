"""Play a portfolio over a whole split through the portfolio env's books: no second simulator.

Every portfolio figure agents/ reports (validation during training, baselines, backtests) runs
here, through :class:`~coinrl.envs.portfolio_vector.PortfolioVectorEnv` and so through the
portfolio kernel (:mod:`coinrl.envs.portfolio_kernel`): the books, costs, margin and funding
are the env's. Two ways in:

* :func:`rollout_portfolio` with ``policy=``: a policy (an SB3 model, or any callable taking a
  batch of observations ``(N, obs_dim)`` and returning a batch of actions ``(N, A)``) decides
  bar by bar, seeing only what the env shows it; its actions go through the env's
  :class:`~coinrl.envs.actions.ActionMap`.
* :func:`rollout_portfolio` with ``weights=`` (or :func:`simulate_weights` for ``N`` signals
  stepped together): target weights per decision, ``(T, A)`` (or one row per bar of the split,
  ``(len(data), A)``). A weight is the asset's wanted position notional / equity (negative =
  short, cash the residual). They must be finite and inside the env's budget (``sum |w| <=
  gross``, ``|sum w| <= net``, no negative weight without shorting): a signal outside it is an
  error, never silently rescaled. Weights are played through the continuous action map even
  when the config is discrete (same books, costs and rules; the discrete grid only limits what
  a policy can ask for).

Timing (as :mod:`coinrl.agents.rollout`): the run covers the split from its first decision
bar ``window - 1`` to its last bar, ``T = len(data) - window`` decisions and ``T + 1`` marks.
Decision ``k`` is taken at the close of bar ``window - 1 + k`` and fills at the open of the
next bar, exactly as in training. After a liquidation the account is recorded flat (its equity
frozen) to the end.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from coinrl.envs.config import EnvConfig, PortfolioEnvConfig, portfolio_config_from
from coinrl.envs.portfolio_vector import PortfolioVectorEnv
from coinrl.pipeline.dataset import PortfolioData
from coinrl.pipeline.errors import ConfigError, DataError

from .portfolio_record import PortfolioRollout, Recorder

logger = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]
BUDGET_TOL = 1e-9
"""Slack allowed on the budget checks of a weights signal (float rounding of sums)."""

PortfolioConfigLike = PortfolioEnvConfig | EnvConfig | Mapping[str, Any] | None


def evaluation_portfolio_config(env_config: PortfolioConfigLike) -> PortfolioEnvConfig:
    """The env config of a whole-split run: the same costs and rules, one episode over all bars."""
    cfg = portfolio_config_from(env_config)
    if cfg.episode_length_bars is None:
        return cfg
    return cfg.model_copy(update={"episode_length_bars": None})


def portfolio_decisions(data: PortfolioData, env_config: PortfolioEnvConfig) -> int:
    """Decisions ``T`` of a whole-split run (``len(data) - window``).

    Raises:
        DataError: too few bars for one decision.
    """
    t = len(data) - env_config.window
    if t < 1:
        raise DataError(
            f"the portfolio {','.join(data.symbols)} has {len(data)} bars; window="
            f"{env_config.window} needs at least {env_config.window + 1} to take one decision"
        )
    return t


def weights_signal(weights: npt.ArrayLike, data: PortfolioData, env_config: PortfolioEnvConfig) -> F64:
    """``(N, T, A)`` decision weights from a signal given per decision ``(T, A)``, per bar
    ``(len(data), A)`` (``weights[t]`` is wanted after bar t's close; the first ``window - 1``
    rows and the last one are not used) or ``N`` of either stacked.

    Raises:
        DataError: a shape that is neither, or NaN/inf (naming the asset and decision).
        ConfigError: weights outside the env's budget (gross, net, shorting), naming the bar.
    """
    x = np.asarray(weights, dtype=np.float64)
    t_steps = portfolio_decisions(data, env_config)
    a = data.n_assets
    if x.ndim == 2:
        x = x[None]
    w0 = env_config.window - 1
    if x.ndim != 3 or x.shape[2] != a or x.shape[1] not in (t_steps, len(data)):
        raise DataError(
            f"weights must be (T={t_steps}, A={a}) per decision or ({len(data)}, {a}) per bar "
            f"(optionally N of them stacked first), got {np.asarray(weights).shape}"
        )
    if x.shape[1] == len(data) and len(data) != t_steps:
        x = x[:, w0 : w0 + t_steps]
    x = np.ascontiguousarray(x)
    bad = ~np.isfinite(x)
    if bad.any():
        n, k, col = (int(v[0]) for v in np.nonzero(bad))
        raise DataError(f"weights for {data.symbols[col]} are NaN/inf at decision {k} (signal {n}); "
                        "use 0 for no position")
    gross = np.abs(x).sum(axis=2)
    net = np.abs(x.sum(axis=2))
    checks = (
        (gross > env_config.gross_budget + BUDGET_TOL, f"sum |w| exceeds the gross budget {env_config.gross_budget}"),
        (net > env_config.net_budget + BUDGET_TOL, f"|sum w| exceeds the net budget {env_config.net_budget}"),
    )
    for over, what in checks:
        if over.any():
            n, k = (int(v[0]) for v in np.nonzero(over))
            raise ConfigError(f"weights at decision {k} (signal {n}): {what}; scale the signal down "
                              "or raise gross_leverage/net_exposure_max")
    if not env_config.allow_short and (x < 0).any():
        n, k, col = (int(v[0]) for v in np.nonzero(x < 0))
        raise ConfigError(f"weight {x[n, k, col]} for {data.symbols[col]} at decision {k} is short "
                          "but allow_short is False; clip the signal at 0 or allow shorting")
    return x


def simulate_weights(
    data: PortfolioData, env_config: PortfolioConfigLike, weights: npt.ArrayLike
) -> list[PortfolioRollout]:
    """Step ``N`` target-weight signals over the whole split together, one account each.

    Args:
        data: the split (PortfolioData).
        env_config: the portfolio env config (costs, budget, window); its
            ``episode_length_bars`` is replaced by one whole-split episode and its action mode
            by ``continuous`` (the weights are targets already).
        weights: ``(N, T, A)``, ``(T, A)`` or per bar ``(len(data), A)`` (see
            :func:`weights_signal`).

    Returns:
        One :class:`PortfolioRollout` per signal.
    """
    cfg = weights_config(env_config)
    return simulate_plans(data, cfg, weights_signal(weights, data, cfg))


def weights_config(env_config: PortfolioConfigLike) -> PortfolioEnvConfig:
    """The whole-split config of a weights run: the same costs and rules, continuous actions."""
    cfg = evaluation_portfolio_config(env_config)
    if cfg.action != "continuous":
        cfg = cfg.model_copy(update={"action": "continuous"})
    return cfg


def simulate_plans(data: PortfolioData, env_config: PortfolioEnvConfig, plans: F64) -> list[PortfolioRollout]:
    """Step ``N`` weight plans ``(N, T, A)`` whose NaN rows mean "hold": the target of such a
    decision is the account's drifted weights at the decision's close (``info["weights"]``),
    so it trades only the drift from that close to the next open (which the env's
    ``rebalance_threshold`` suppresses; with a threshold of 0 a tiny trade). The baselines'
    buy-and-hold and periodic rebalancing are plans. ``env_config`` must be continuous and
    whole-split (:func:`weights_config`); the non-NaN rows are trusted to be in the budget
    (:func:`weights_signal` checks user signals).
    """
    if env_config.action != "continuous" or env_config.episode_length_bars is not None:
        raise ConfigError("simulate_plans needs weights_config(env_config)")
    n, t_steps = plans.shape[0], plans.shape[1]
    if t_steps != portfolio_decisions(data, env_config):
        raise DataError(f"plans cover {t_steps} decisions, the split has "
                        f"{portfolio_decisions(data, env_config)}")
    venv = PortfolioVectorEnv(n, data, env_config, copy=False)
    _, info = venv.reset(seed=0)
    rec = Recorder(venv, info, t_steps)
    hold = np.asarray(np.isnan(plans).any(axis=2))
    any_hold = np.asarray(hold.any(axis=0))
    targets = np.array(plans, dtype=np.float64)
    for k in range(t_steps):
        if any_hold[k]:
            h = hold[:, k]
            targets[h, k] = info["weights"][h]
        _, rew, term, _, info = venv.step(targets[:, k])
        rec.step(rew, term, info)
    venv.close()
    return rec.rollouts(targets, targets)


def batched_policy(policy: Any, deterministic: bool) -> Callable[[Any], Any]:
    """``obs (N, D) -> actions (N, A)`` of an SB3 model or a callable."""
    if hasattr(policy, "predict"):
        from .rollout import torch_policy

        fast = torch_policy(policy, deterministic)
        if fast is not None:
            return fast

        def act(obs: Any) -> Any:
            return policy.predict(obs, deterministic=deterministic)[0]

        return act
    if not callable(policy):
        raise ConfigError(f"policy must be an SB3 model or a callable obs -> action, got {type(policy).__name__}")
    return policy


def rollout_portfolio(
    data: PortfolioData,
    env_config: PortfolioConfigLike,
    *,
    policy: Any = None,
    weights: npt.ArrayLike | None = None,
    n_accounts: int = 1,
    deterministic: bool = True,
) -> PortfolioRollout:
    """Play a policy or a target-weights signal over the whole split through the portfolio env.

    Args:
        data: the split (normalised PortfolioData with the features the policy was trained on).
        env_config: the portfolio env config used in training (costs, budget, window, action).
        policy: an SB3 model (anything with ``predict``) or a callable taking a batch of
            observations ``(N, obs_dim)`` and returning a batch of actions ``(N, A)``.
        weights: instead of a policy, target weights ``(T, A)`` per decision or
            ``(len(data), A)`` per bar (see :func:`weights_signal`).
        n_accounts: policy runs only: accounts stepped together (the policy sees a batch of
            that many; a stochastic policy then gives independent runs); the first is returned.
        deterministic: the policy's mode for an SB3 model (True for evaluation).

    Returns:
        The :class:`PortfolioRollout` (after a liquidation the account stays flat to the end).

    Raises:
        ConfigError: neither or both of ``policy`` and ``weights``; weights beyond the budget.
        DataError: a split too short for the window, weights of the wrong shape or NaN.

    Example:
        >>> ro = rollout_portfolio(data, cfg, weights=np.full((T, A), 1 / A))  # doctest: +SKIP
        >>> ro.metrics()["sharpe"]  # doctest: +SKIP
    """
    if (policy is None) == (weights is None):
        raise ConfigError("rollout_portfolio needs exactly one of policy= and weights=")
    if weights is not None:
        x = np.asarray(weights)
        if x.ndim == 3:
            raise DataError("rollout_portfolio plays one signal (T, A); use simulate_weights for N")
        return simulate_weights(data, env_config, x)[0]
    return rollout_portfolio_policy(policy, data, env_config, n_accounts=n_accounts,
                                    deterministic=deterministic)[0]


class PortfolioStepHook(Protocol):
    """What a one-account portfolio rollout calls around each step (e.g. the risk layer,
    :class:`coinrl.agents.portfolio_risk_rollout.PortfolioRiskStepHook`): the books step the
    weights the hook gives, in the env :meth:`step_config` gives, instead of the actions."""

    def step_config(self, env_config: PortfolioEnvConfig) -> PortfolioEnvConfig:
        """The config of the env the hook's weights step (same costs and observation)."""
        ...

    def review(self, k: int, venv: PortfolioVectorEnv, action: npt.NDArray[Any]) -> tuple[F64, F64]:
        """Decision ``k``'s ``(A,)`` input to step and ``(A,)`` target weights it stands for,
        given the strategy's action (books marked at the decision bar's close)."""
        ...

    def after_step(self, k: int, venv: PortfolioVectorEnv) -> None:
        """See the books after decision ``k`` filled."""
        ...


def rollout_portfolio_policy(
    policy: Any,
    data: PortfolioData,
    env_config: PortfolioConfigLike,
    *,
    n_accounts: int = 1,
    deterministic: bool = True,
    step_hook: PortfolioStepHook | None = None,
) -> list[PortfolioRollout]:
    """Let a policy trade ``n_accounts`` whole-split accounts together (see
    :func:`rollout_portfolio`); one :class:`PortfolioRollout` per account. A ``step_hook``
    (one account only) reviews each decision before the books step it."""
    act = batched_policy(policy, deterministic)
    return play_portfolio(lambda obs, k: act(obs), data, env_config, n_accounts=n_accounts,
                          step_hook=step_hook)


def play_portfolio(
    act: Callable[[Any, int], Any],
    data: PortfolioData,
    env_config: PortfolioConfigLike,
    *,
    n_accounts: int = 1,
    step_hook: PortfolioStepHook | None = None,
    actions: F64 | None = None,
) -> list[PortfolioRollout]:
    """The loop of :func:`rollout_portfolio_policy`: ``act(obs, k)`` gives decision ``k``'s
    actions (a policy on its observations, or a fixed sequence; ``actions``: that ``(T, A)``
    sequence, recorded as the actions). With a ``step_hook`` the account is recorded flat
    after a liquidation and the hook sees no further decision."""
    cfg = evaluation_portfolio_config(env_config)
    t_steps = portfolio_decisions(data, cfg)
    n = int(n_accounts)
    if n < 1:
        raise ConfigError(f"n_accounts must be >= 1, got {n_accounts}")
    if step_hook is not None and n != 1:
        raise ConfigError(f"a step_hook reviews one account's decisions, got n_accounts={n_accounts}")
    venv = PortfolioVectorEnv(n, data, cfg if step_hook is None else step_hook.step_config(cfg), copy=True)
    obs, info = venv.reset(seed=0)
    rec = Recorder(venv, info, t_steps)
    shape = tuple(venv.single_action_space.shape or ())
    dtype = np.int64 if cfg.action == "discrete" else np.float32
    acts: npt.NDArray[Any] = np.zeros((n, t_steps, *shape), dtype=dtype) if actions is None else actions[None]
    targets = np.zeros((n, t_steps, venv.n_assets))
    amap = venv.action_map
    done = False
    for k in range(t_steps):
        if step_hook is None:
            a = np.asarray(act(obs, k)).reshape((n, *shape))
            acts[:, k] = a
            targets[:, k] = amap.weights_batch(a)
            obs, rew, term, _, info = venv.step(a)
            rec.step(rew, term, info)
            continue
        if done:  # liquidated: the recorder keeps the account flat; nothing more to review
            obs, rew, term, _, info = venv.step(targets[:, k])
            rec.step(rew, term, info)
            continue
        a = np.asarray(act(obs, k)).reshape(shape)
        acts[0, k] = a
        step_w, targets[0, k] = step_hook.review(k, venv, a)
        obs, rew, term, _, info = venv.step(step_w[None])
        rec.step(rew, term, info)
        step_hook.after_step(k, venv)
        done = bool(term[0])
    venv.close()
    out = rec.rollouts(acts, targets)
    logger.debug("portfolio rollout symbols=%s steps=%d final_equity=%.2f liquidated=%s",
                 ",".join(data.symbols), t_steps, out[0].equity_quote[-1], out[0].liquidated)
    return out


__all__ = [
    "PortfolioRollout",
    "PortfolioStepHook",
    "evaluation_portfolio_config",
    "play_portfolio",
    "portfolio_decisions",
    "rollout_portfolio",
    "rollout_portfolio_policy",
    "simulate_plans",
    "simulate_weights",
    "weights_config",
    "weights_signal",
]
