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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from coinrl.envs.actions import ActionMap
from coinrl.envs.books import Books
from coinrl.envs.config import EnvConfig, env_config_from
from coinrl.envs.vector import TradingVectorEnv
from coinrl.pipeline.dataset import MarketData
from coinrl.pipeline.errors import DataError
from coinrl.pipeline.timeframes import bars_per_year

from .metrics import trading_metrics
from .policies import sb3_policy, stacked_torch_policy, torch_policy

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
        open_quote: ``T + 1`` opens of the bars the marks close (``open_quote[k]``, ``k >= 1``,
            is the reference price the decision filled against in step ``k``).
        fees_cum_quote, slippage_cum_quote, turnover_cum_quote: ``T + 1`` running totals of
            the books at each mark (their differences are the costs of each step's fills).
        liquidation_mark: mark index of the liquidation, None when there was none.
        symbol: the market traded.
        volume_base: ``T + 1`` volumes of the bars the marks close (the impact term of fills).
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
    open_quote: F64 | None = None
    fees_cum_quote: F64 | None = None
    slippage_cum_quote: F64 | None = None
    turnover_cum_quote: F64 | None = None
    liquidation_mark: int | None = None
    symbol: str = ""
    volume_base: F64 | None = None

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
    """Env actions standing for target exposures (:meth:`coinrl.envs.actions.ActionMap.actions_for`).

    For a discrete env every target must be one of ``env_config.discrete_positions`` (its index is the
    action); for a continuous env the action is the exposure itself, shaped ``(..., 1)``.

    Raises:
        ConfigError: a target that a discrete env cannot express.
    """
    return ActionMap.from_env_config(env_config).actions_for(targets)


def actions_to_targets(actions: npt.ArrayLike, env_config: EnvConfig) -> F64:
    """Target exposures of env actions (:meth:`coinrl.envs.actions.ActionMap.exposures`: the
    env's own map; the inverse of :func:`targets_to_actions`, clipped)."""
    return ActionMap.from_env_config(env_config).exposures(actions)


class _Recorder:
    """Marks of N whole-split accounts; an account's marks freeze once its episode ends.

    Account ``i`` trades ``datas[i]`` for ``steps[i]`` decisions from its decision bar
    ``window - 1``, so its mark times and closes are its split's own; after a liquidation, or
    past its last decision, the env would restart the account (autoreset), so its later marks
    repeat the last equity with no position instead.
    """

    def __init__(self, venv: TradingVectorEnv, datas: Sequence[MarketData], steps: I64) -> None:
        n = venv.num_envs
        t_max = int(steps.max())
        self.venv = venv
        self.datas = datas
        self.steps = steps
        self.t = 0
        self.eq = np.zeros((n, t_max + 1))
        self.pos = np.zeros((n, t_max + 1))
        self.rew = np.zeros((n, t_max))
        self.done = np.zeros(n, dtype=bool)
        self.liq = np.zeros(n, dtype=bool)
        b = venv.books
        self.eq[:, 0] = b.equity_quote
        self.pos[:, 0] = b.position_base
        self.fees = b.fees_paid_quote.copy()
        self.slip = b.slippage_paid_quote.copy()
        self.turn = b.turnover_quote.copy()
        self.fees_c = np.zeros((n, t_max + 1))
        self.slip_c = np.zeros((n, t_max + 1))
        self.turn_c = np.zeros((n, t_max + 1))
        self.fees_c[:, 0] = self.fees
        self.slip_c[:, 0] = self.slip
        self.turn_c[:, 0] = self.turn
        self.liq_mark = np.full(n, -1, dtype=np.int64)

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
        self.fees_c[:, k] = self.fees
        self.slip_c[:, k] = self.slip
        self.turn_c[:, k] = self.turn
        newly = terminated & live
        self.liq_mark[newly] = k
        self.liq |= newly
        self.done |= newly | (self.steps <= k)

    def stop(self) -> None:
        """End the run early, every account's episode over: the later marks freeze as
        :meth:`step` would record them."""
        if not self.done.all():
            raise RuntimeError("_Recorder.stop with an account still trading")
        k = self.t
        self.eq[:, k + 1 :] = self.eq[:, k : k + 1]
        self.fees_c[:, k + 1 :] = self.fees[:, None]
        self.slip_c[:, k + 1 :] = self.slip[:, None]
        self.turn_c[:, k + 1 :] = self.turn[:, None]

    def rollouts(self, actions: npt.NDArray[Any], targets: F64 | None, env_config: EnvConfig) -> list[Rollout]:
        """One :class:`Rollout` per account; ``actions`` ``(N, T_max, ...)``, ``targets``
        ``(N, T_max)`` (None: the exposures of the actions)."""
        w = env_config.window
        bars: dict[tuple[int, int], tuple[I64, F64, F64, F64]] = {}
        out = []
        for i, d in enumerate(self.datas):
            t = int(self.steps[i])
            key = (id(d), t)
            if key not in bars:
                bars[key] = (
                    np.ascontiguousarray(d.ts_ms[w - 1 : w + t], dtype=np.int64),
                    np.ascontiguousarray(d.close[w - 1 : w + t], dtype=np.float64),
                    np.ascontiguousarray(d.open[w - 1 : w + t], dtype=np.float64),
                    np.ascontiguousarray(d.volume[w - 1 : w + t], dtype=np.float64),
                )
            ts, close, open_, volume = bars[key]
            e = self.eq[i, : t + 1]
            q = self.pos[i, : t + 1]
            expo = np.divide(q * close, e, out=np.zeros_like(e), where=e > 0)
            a_i = actions[i, :t]
            out.append(
                Rollout(
                    ts_ms=ts,
                    equity_quote=e,
                    exposure=expo,
                    position_base=q,
                    close_quote=close,
                    actions=a_i,
                    target_exposure=actions_to_targets(a_i, env_config) if targets is None else targets[i, :t],
                    rewards=self.rew[i, :t],
                    fees_paid_quote=float(self.fees_c[i, t]),
                    slippage_paid_quote=float(self.slip_c[i, t]),
                    turnover_quote=float(self.turn_c[i, t]),
                    liquidated=bool(self.liq[i]),
                    timeframe=d.timeframe,
                    open_quote=open_,
                    fees_cum_quote=self.fees_c[i, : t + 1],
                    slippage_cum_quote=self.slip_c[i, : t + 1],
                    turnover_cum_quote=self.turn_c[i, : t + 1],
                    liquidation_mark=int(self.liq_mark[i]) if self.liq_mark[i] >= 0 else None,
                    symbol=d.symbol,
                    volume_base=volume,
                )
            )
        return out


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
    rec = _Recorder(venv, [data] * n, np.full(n, t_steps, dtype=np.int64))
    for k in range(t_steps):
        _, rew, term, _, _ = venv.step(a[:, k])
        rec.step(rew, term)
    venv.close()
    return rec.rollouts(a, actions_to_targets(a, cfg), cfg)


class StepHook(Protocol):
    """What a rollout calls around each step of a batch of one (e.g. the risk layer,
    :class:`coinrl.agents.backtest_risk.RiskStepHook`): the books step the hook's targets, in
    the env :meth:`step_config` gives, instead of the policy's actions."""

    def step_config(self, env_config: EnvConfig) -> EnvConfig:
        """The config of the env the hook's targets step (same costs and observation)."""
        ...

    def review(self, k: int, books: Books, proposed_exposure: F64) -> F64:
        """Decision ``k``'s ``(1,)`` target exposures for the books, given the policy's proposal
        (books marked at the decision bar's close)."""
        ...

    def after_step(self, k: int, books: Books) -> None:
        """See the books after decision ``k`` filled."""
        ...


def rollout_policy(
    policy: Any,
    data: MarketData,
    env_config: EnvConfig | dict[str, Any] | None,
    *,
    deterministic: bool = True,
    step_hook: StepHook | None = None,
) -> Rollout:
    """Let a policy trade the whole split bar by bar through the env.

    Args:
        policy: an SB3 model (anything with ``predict``) or a callable taking a batch of one
            observation and returning a batch of one action.
        data: the split (normalised MarketData, same features as in training).
        env_config: the env config used in training.
        deterministic: use the policy's mode (True for evaluation).
        step_hook: reviews each decision's target exposure before the books step it (see
            :class:`StepHook`); the run then ends at a liquidation.

    Returns:
        The :class:`Rollout` (after a liquidation the account stays flat to the end; with a
        hook its later actions and targets are 0, and ``target_exposure`` is what the books got).
    """
    if hasattr(policy, "predict"):
        act = sb3_policy(policy, deterministic)
        return play(lambda o, k: act(o, k == 0), data, env_config, step_hook)
    return play(lambda o, k: policy(o), data, env_config, step_hook)


def play(
    act: Callable[[Any, int], Any],
    data: MarketData,
    env_config: EnvConfig | dict[str, Any] | None,
    step_hook: StepHook | None = None,
) -> Rollout:
    """The loop of :func:`rollout_policy`: ``act(obs, k)`` gives decision ``k``'s env action
    (a policy on its observation, or a fixed sequence indexed by ``k``)."""
    cfg = evaluation_config(env_config)
    t_steps = n_decisions(data, cfg)
    venv = TradingVectorEnv(1, data, cfg if step_hook is None else step_hook.step_config(cfg))
    obs, _ = venv.reset(seed=0)
    rec = _Recorder(venv, [data], np.full(1, t_steps, dtype=np.int64))
    if cfg.action == "continuous":
        acts: npt.NDArray[Any] = np.zeros((t_steps, 1), dtype=np.float32)
    else:
        acts = np.zeros(t_steps, dtype=np.int64)
    shape = acts.shape[1:]
    targets = np.zeros((1, t_steps))
    for k in range(t_steps):
        acts[k] = np.asarray(act(obs, k)).reshape(shape)
        if step_hook is None:
            obs, rew, term, _, _ = venv.step(acts[k : k + 1])
            rec.step(rew, term)
            continue
        proposed = actions_to_targets(acts[k : k + 1], cfg)
        targets[0, k] = float(np.asarray(step_hook.review(k, venv.books, proposed))[0])
        obs, rew, term, _, _ = venv.step(targets[0, k : k + 1])
        rec.step(rew, term)
        step_hook.after_step(k, venv.books)
        if rec.done[0]:
            rec.stop()
            break
    venv.close()
    if step_hook is None:
        targets = actions_to_targets(acts[None], cfg)
    out = rec.rollouts(acts[None], targets, cfg)[0]
    logger.debug(
        "rollout symbol=%s steps=%d final_equity=%.2f liquidated=%s",
        data.symbol, t_steps, out.equity_quote[-1], out.liquidated,
    )
    return out


def rollout_batch(
    policy: Callable[[Any], Any],
    datas: Sequence[MarketData],
    env_config: EnvConfig | dict[str, Any] | None,
) -> list[Rollout]:
    """Let a batched policy trade ``N`` accounts at once, account ``i`` over ``datas[i]``.

    One :class:`~coinrl.envs.vector.TradingVectorEnv` steps all accounts together (the same
    books, costs and timing as :func:`rollout_policy`); each account covers its split from its
    first decision bar to its last bar, so splits of different lengths finish at different
    steps (the env restarts a finished account, whose later steps are not recorded).

    Args:
        policy: observations of all ``N`` accounts ``(N, ...)`` -> their actions ``(N, ...)``
            (e.g. several models, each acting on its own rows).
        datas: one split per account (the same MarketData may repeat); all with the same
            feature columns.
        env_config: the env config used in training.

    Returns:
        One :class:`Rollout` per account, as :func:`rollout_policy` would give it.
    """
    cfg = evaluation_config(env_config)
    n = len(datas)
    if n == 0:
        raise DataError("rollout_batch got no data; pass one MarketData per account")
    steps = np.asarray([n_decisions(d, cfg) for d in datas], dtype=np.int64)
    uniq: list[MarketData] = []
    market = np.zeros(n, dtype=np.int64)
    for i, d in enumerate(datas):
        for k, u in enumerate(uniq):
            if u is d:
                market[i] = k
                break
        else:
            market[i] = len(uniq)
            uniq.append(d)
    venv = TradingVectorEnv(n, uniq if len(uniq) > 1 else uniq[0], cfg, copy=False)
    obs, _ = venv.reset(seed=0)
    if len(uniq) > 1:
        for k in range(len(uniq)):
            obs, _ = venv.reset(options={"reset_mask": market == k, "market_index": k})
    t_max = int(steps.max())
    rec = _Recorder(venv, datas, steps)
    acts: npt.NDArray[Any] | None = None
    for k in range(1, t_max + 1):
        a = np.asarray(policy(obs))
        if acts is None:
            acts = np.zeros((n, t_max, *a.shape[1:]), dtype=a.dtype)
        acts[:, k - 1] = a
        obs, r, term, _, _ = venv.step(a)
        rec.step(r, term)
    venv.close()
    if acts is None:  # t_max >= 1 always steps once
        raise DataError("rollout_batch took no step")
    out = rec.rollouts(acts, None, cfg)
    logger.debug("rollout_batch accounts=%d markets=%d steps=%d", n, len(uniq), t_max)
    return out


def simulate_targets(
    data: MarketData, env_config: EnvConfig | dict[str, Any] | None, targets: npt.ArrayLike
) -> Rollout:
    """One fixed target-exposure sequence over the whole split, in one compiled loop.

    The loop is the kernel's own (:func:`coinrl.envs.single_kernel.run_targets`: the bar
    :class:`~coinrl.envs.books.Account` and the envs step) with the env's timing (decision
    ``k`` at bar ``window - 1 + k``, filled ``delay_bars`` later, a flat target while the
    first fill is pending) and the env's action mapping, so its books equal
    :func:`simulate_actions`' for the same targets (tested bit for bit) at a fraction of the
    cost: no Python per bar, no observations. Without numba it is :func:`simulate_actions`.
    Env rewards are not computed (``rewards`` is NaN).

    Args:
        data: the split (only prices, volume and funding are read).
        env_config: costs, window, delay and action mode (discrete targets must be positions).
        targets: ``(T,)`` target exposures, ``T`` = :func:`n_decisions`.

    Returns:
        The :class:`Rollout`.
    """
    from coinrl.envs import single_kernel as sk

    cfg = evaluation_config(env_config)
    t_steps = n_decisions(data, cfg)
    x = np.asarray(targets, dtype=np.float64)
    if x.shape != (t_steps,):
        raise DataError(f"targets must have shape ({t_steps},) for this split and window, got {x.shape}")
    actions = targets_to_actions(x, cfg)
    tgt = np.ascontiguousarray(actions_to_targets(actions, cfg), dtype=np.float64)
    run = sk.compiled().run_targets
    if not hasattr(run, "py_func"):  # the kernel runs interpreted (no numba): the env path
        return simulate_actions(data, cfg, actions)[0]
    s = sk.new_state(1, cfg.initial_cash_quote)
    p, pa = sk.make_params(cfg)
    w = cfg.window
    s[sk.MARK, 0] = float(data.close[w - 1])

    def col(a: npt.ArrayLike) -> F64:
        return np.ascontiguousarray(a, dtype=np.float64)

    fund = col(data.funding_rate) if data.funding_rate is not None else np.zeros(len(data))
    bars = sk.bar_table(col(data.open), col(data.high), col(data.low), col(data.close),
                        col(data.volume), fund)
    eq = np.empty(t_steps + 1)
    pos = np.empty(t_steps + 1)
    fees = np.empty(t_steps + 1)
    slip = np.empty(t_steps + 1)
    turn = np.empty(t_steps + 1)
    liq = int(run(s, p, pa, bars, tgt, cfg.delay_bars, w - 1, eq, pos, fees, slip, turn))
    close = col(data.close[w - 1 : w + t_steps])
    expo = np.divide(pos * close, eq, out=np.zeros_like(eq), where=eq > 0)
    return Rollout(
        ts_ms=np.ascontiguousarray(data.ts_ms[w - 1 : w + t_steps], dtype=np.int64),
        equity_quote=eq,
        exposure=expo,
        position_base=pos,
        close_quote=close,
        actions=actions,
        target_exposure=tgt,
        rewards=np.full(t_steps, np.nan),
        fees_paid_quote=float(fees[-1]),
        slippage_paid_quote=float(slip[-1]),
        turnover_quote=float(turn[-1]),
        liquidated=liq >= 0,
        timeframe=data.timeframe,
        open_quote=col(data.open[w - 1 : w + t_steps]),
        fees_cum_quote=fees,
        slippage_cum_quote=slip,
        turnover_cum_quote=turn,
        liquidation_mark=liq if liq >= 0 else None,
        symbol=data.symbol,
        volume_base=col(data.volume[w - 1 : w + t_steps]),
    )


__all__ = [
    "PolicyFn",
    "Rollout",
    "StepHook",
    "actions_to_targets",
    "evaluation_config",
    "n_decisions",
    "play",
    "rollout_batch",
    "rollout_policy",
    "sb3_policy",
    "simulate_actions",
    "simulate_targets",
    "stacked_torch_policy",
    "targets_to_actions",
    "torch_policy",
]
