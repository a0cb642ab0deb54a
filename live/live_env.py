"""``LiveTradingEnv``: the trading env's interface over live candles and a broker.

It has the observation and action spaces of :class:`~coinrl.envs.trading_env.TradingEnv` for
the same :class:`~coinrl.envs.config.EnvConfig` and feature count, and builds the same
observation: the window of normalised feature rows ending at the newest CLOSED bar (oldest
first), then the account features ``[exposure, unrealised_pnl / equity, time_in_position,
distance_to_liquidation]`` computed from the broker's books with the env kernel's formulas
(same float64 operations in the same order, then float32). So a policy trained on the env runs
unchanged, and a paper session (whose books ARE the env's books) observes exactly what the
backtest of the same candles observes.

One step = one bar:

1. the action becomes a target exposure by the :class:`~coinrl.envs.actions.ActionMap` of
   TradingEnv (discrete: ``config.discrete_positions[a]``; continuous: the number, clipped to
   ``config.exposure_bounds``);
2. the risk layer (:class:`~coinrl.live.risk.RiskGuard`) allows, trims, blocks or kills it;
   the decision and any risk event are journalled;
3. the broker trades toward the allowed target (nothing when blocked);
4. the env waits for the next bar to close on the exchange's clock (:class:`BarClock`),
   fetches the new closed candle, and re-syncs the broker (fills, balances, reconciliation);
5. it returns the observation of the new decision bar, the log return of equity as reward,
   ``terminated=True`` on the kill-switch and ``truncated=True`` when asked to stop (a signal,
   ``max_steps``).

``reset()`` does not reset an account (money cannot be un-traded): it syncs with the broker
and returns the observation of the newest closed bar.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np
import numpy.typing as npt

from coinrl.envs import kernel
from coinrl.envs.actions import ActionMap
from coinrl.envs.config import EnvConfig
from coinrl.envs.trading_env import EQUITY_FLOOR_FRAC, N_ACCOUNT_FEATURES, build_spaces
from coinrl.pipeline.errors import DataError

from .brokers import Broker, BrokerState, OrderContext, OrderReport
from .data import LiveData, LiveDataFeed
from .exchange import ExchangeClient
from .journal import Journal
from .risk import RiskDecision, RiskGuard

logger = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]


# --------------------------------------------------------------------------- clocks


@runtime_checkable
class BarClock(Protocol):
    """The clock a live session waits on: the exchange's time, UTC epoch ms."""

    def now_ms(self) -> int:
        """The exchange's time now."""
        ...

    def sleep_until(self, ts_ms: int) -> bool:
        """Block until the exchange's time reaches ``ts_ms``; False when stopped first."""
        ...

    def stop(self) -> None:
        """Wake any sleeper and make later sleeps return False at once."""
        ...


class ExchangeBarClock:
    """Waits on the exchange's own clock by polling its time.

    The exchange's clock may run at another rate than this machine's (an emulator replaying
    history runs thousands of times faster): the rate is estimated from consecutive polls and
    each sleep aims a little short of the target, so a real exchange is polled a few times per
    bar and a fast replay often enough not to miss a bar.

    Args:
        client: the exchange client.
        max_sleep_s: longest sleep between polls, seconds.
        first_probe_s: the first sleep, before the rate is known, seconds.
        settle_ms: extra exchange ms to wait after the target (a real exchange may publish a
            bar's final candle a moment after it closed).
    """

    def __init__(
        self, client: ExchangeClient, *, max_sleep_s: float = 30.0, first_probe_s: float = 0.05,
        settle_ms: int = 0,
    ) -> None:
        self.client = client
        self.max_sleep_s = max_sleep_s
        self.first_probe_s = first_probe_s
        self.settle_ms = int(settle_ms)
        self._stop = threading.Event()
        self._rate: float | None = None  # exchange ms per wall ms
        self._last: tuple[int, float] | None = None

    def now_ms(self) -> int:
        server = self.client.server_time_ms()
        wall = time.monotonic() * 1000.0
        if self._last is not None and wall > self._last[1]:
            rate = (server - self._last[0]) / (wall - self._last[1])
            if rate > 0.0:
                self._rate = rate if self._rate is None else 0.5 * (self._rate + rate)
        self._last = (server, wall)
        return server

    def sleep_until(self, ts_ms: int) -> bool:
        target = int(ts_ms) + self.settle_ms
        while not self._stop.is_set():
            now = self.now_ms()
            if now >= target:
                return True
            if self._rate is None:
                wait_s = self.first_probe_s
            else:
                wait_s = min(self.max_sleep_s, max(0.0005, 0.8 * (target - now) / self._rate / 1000.0))
            self._stop.wait(wait_s)
        return False

    def stop(self) -> None:
        self._stop.set()


class SteppedClock:
    """Drives an emulator's :class:`~coinrl.live.emulator.FixedClock`: each wait jumps it to
    the target (deterministic tests and fast replays in one process).

    Args:
        fixed_clock: anything with ``now_ms()`` and ``set(ts_ms)``.
        offset_ms: exchange ms added after the target (where a decision lands in the bar).
    """

    def __init__(self, fixed_clock: Any, *, offset_ms: int = 0) -> None:
        self.clock = fixed_clock
        self.offset_ms = int(offset_ms)
        self._stop = threading.Event()

    def now_ms(self) -> int:
        return int(self.clock.now_ms())

    def sleep_until(self, ts_ms: int) -> bool:
        if self._stop.is_set():
            return False
        target = int(ts_ms) + self.offset_ms
        if self.clock.now_ms() < target:
            self.clock.set(target)
        return True

    def stop(self) -> None:
        self._stop.set()


# --------------------------------------------------------------------------- env


def account_features(
    config: EnvConfig, state: BrokerState,
) -> tuple[float, float, float, float]:
    """The env's account features of ``state`` (kernel formulas, float64).

    ``[exposure, unrealised_pnl / equity, time_in_position, distance_to_liquidation]`` with
    equity floored at ``initial_cash_quote * EQUITY_FLOOR_FRAC`` in the denominators.
    """
    return kernel.account_features(
        state.position_base, state.mark_price_quote, state.equity_quote, state.avg_entry_quote,
        float(state.bars_held), float(config.window), float(config.maintenance_margin_rate),
        config.initial_cash_quote * EQUITY_FLOOR_FRAC,
    )


class LiveTradingEnv(gym.Env[Any, Any]):
    """A Gymnasium env stepping on each new closed candle, over a broker (see the module doc).

    Args:
        feed: the live candles, featured with the bundle's spec and normaliser.
        broker: :class:`~coinrl.live.brokers.PaperBroker` or
            :class:`~coinrl.live.brokers.ExchangeBroker`.
        env_config: the bundle's env config (spaces, action mapping, account features).
        clock: what to wait on for the next bar close.
        risk: the risk layer (None: targets pass unchanged).
        journal: where decisions and risk events are journalled.
        max_steps: ``truncated=True`` after this many steps (None: never).
        clock_skew_ms: returns the exchange-minus-local clock skew for the risk layer (None:
            not checked).
        max_wait_polls: polls for a bar the exchange has not published yet after its close.

    Raises:
        DataError: the live data has too few rows for the window.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        feed: LiveDataFeed,
        broker: Broker,
        env_config: EnvConfig,
        *,
        clock: BarClock,
        risk: RiskGuard | None = None,
        journal: Journal | None = None,
        max_steps: int | None = None,
        clock_skew_ms: Callable[[], float | None] | None = None,
        max_wait_polls: int = 20,
    ) -> None:
        super().__init__()
        self.feed = feed
        self.broker = broker
        self.config = env_config
        self.clock = clock
        self.risk = risk
        self.journal = journal
        self.max_steps = max_steps
        self.clock_skew_ms = clock_skew_ms
        self.max_wait_polls = max_wait_polls
        self.n_features = len(feed.normaliser.names)
        self.observation_space, self.action_space = build_spaces(env_config, self.n_features)
        self.action_map = ActionMap.from_env_config(env_config, getattr(feed, "symbol", "asset"))
        self._data: LiveData | None = None
        self._state: BrokerState | None = None
        self._obs: Any = None
        self._steps = 0
        self.meta: dict[str, Any] = {}
        self.last_decision: RiskDecision | None = None
        self.last_reports: list[OrderReport] = []
        self.timings: dict[str, float] = {}

    # -- helpers ----------------------------------------------------------------------------
    @property
    def data(self) -> LiveData | None:
        """The newest snapshot of the market."""
        return self._data

    @property
    def broker_state(self) -> BrokerState | None:
        """The books after the newest sync."""
        return self._state

    def action_to_target(self, action: Any) -> float:
        """The target exposure an action stands for: the env's
        :class:`~coinrl.envs.actions.ActionMap` (TradingEnv's, the backtester's).

        Raises:
            ValueError: a discrete action that is not an integer in range, NaN/inf, or more
                than one number.
        """
        return self.action_map.exposure(action)

    def observe(self, data: LiveData, state: BrokerState) -> Any:
        """The observation of the newest closed bar with the broker's books (see module doc)."""
        w = self.config.window
        md = data.market
        if len(md) < w:
            raise DataError(
                f"live data has {len(md)} feature rows after the warm-up; the window needs {w}: "
                "load more history (history_bars)"
            )
        feats = np.ascontiguousarray(md.features[-w:], dtype=np.float32)
        acct = np.asarray(account_features(self.config, state), dtype=np.float32)
        if self.config.obs_mode == "box":
            out: F32 = np.empty(w * self.n_features + N_ACCOUNT_FEATURES, dtype=np.float32)
            out[: w * self.n_features] = feats.reshape(-1)
            out[w * self.n_features:] = acct
            return out
        return {"market": feats.copy(), "account": acct}

    def _ready(self) -> tuple[LiveData, BrokerState]:
        if self._data is None or self._state is None:
            raise RuntimeError("the env has no data yet; call reset() first")
        return self._data, self._state

    def _info(self) -> dict[str, Any]:
        data, st = self._ready()
        return {
            "ts_ms": data.last_bar_ts_ms,
            "server_time_ms": data.server_time_ms,
            "equity_quote": st.equity_quote,
            "position_base": st.position_base,
            "fees_paid_quote": st.fees_paid_quote,
            "cash_quote": st.cash_quote,
            "new_fills": len(st.new_fills),
        }

    @property
    def observation(self) -> Any:
        """The observation of the newest decision bar (None before :meth:`reset`)."""
        return self._obs

    def resync(self) -> None:
        """Refresh candles and books now (after a failure) and rebuild the observation."""
        self._refresh(None)
        self._obs = self.observe(*self._ready())

    def refeature(self) -> None:
        """Rebuild the observation from the current candles with the feed's (new) spec and
        normaliser, without fetching (after a hot reload)."""
        if self._state is None:
            return
        self._data = self.feed.refeature()
        self._obs = self.observe(self._data, self._state)

    def _journal_revisions(self, now_ms: int) -> None:
        pop = getattr(self.feed, "pop_revisions", None)
        for rev in pop() if pop is not None else []:
            if self.journal is not None:
                self.journal.append("reconciliation", ts_ms=now_ms, bar_ts_ms=rev["bar_ts_ms"],
                                    payload=rev)

    def _set_deadline(self, deadline_ms: int | None) -> None:
        """Tell the exchange client(s) by when the coming decision must be taken (exchange ms):
        a long Retry-After is honoured up to it, else the decision is skipped explicitly."""
        for client in {id(c): c for c in (getattr(self.feed, "client", None),
                                          getattr(self.broker, "client", None))
                       if c is not None}.values():
            if hasattr(client, "decision_deadline_ms"):
                client.decision_deadline_ms = deadline_ms

    def _refresh(self, wait_for_bar: int | None) -> None:
        bar_ms = int(getattr(self.feed, "bar_ms", 0) or 0)
        if wait_for_bar is not None:  # the decision on that bar is due until the next bar closes
            self._set_deadline(wait_for_bar + 2 * bar_ms)
        else:
            self._set_deadline(self.clock.now_ms() + bar_ms if bar_ms else None)
        data = self.feed.update()
        polls = 0
        while wait_for_bar is not None and data.last_bar_ts_ms < wait_for_bar and polls < self.max_wait_polls:
            polls += 1  # the exchange has not published the closed bar yet: ask again shortly
            if not self.clock.sleep_until(self.clock.now_ms() + max(1, data.bar_ms // 1000)):
                break
            data = self.feed.update()
        self._data = data
        self._journal_revisions(data.server_time_ms)
        self._state = self.broker.sync(data)
        if self.risk is not None:
            self.risk.mark(data.server_time_ms, self._state.equity_quote)

    # -- gym API ----------------------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: Mapping[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Sync with the market and the broker; the observation of the newest closed bar."""
        super().reset(seed=seed)
        self._refresh(None)
        self._obs = self.observe(*self._ready())
        self._steps = 0
        return self._obs, self._info()

    def decide(self, action: Any) -> tuple[RiskDecision, list[OrderReport]]:
        """Steps 1-3 of :meth:`step`: action -> risk -> broker, journalled.

        Returns:
            The risk decision and the broker's order reports.
        """
        data, st = self._data, self._state
        if data is None or st is None:
            raise RuntimeError("step() called before reset(); call reset() first")
        t0 = time.perf_counter()
        proposed = self.action_to_target(action)
        now = data.server_time_ms
        if self.risk is not None:
            rs = self.risk.state(
                now_ms=now, last_bar_close_ms=data.last_close_ms, equity_quote=st.equity_quote,
                price_quote=st.mark_price_quote, position_base=st.position_base,
                avg_entry_quote=st.avg_entry_quote,
                clock_skew_ms=None if self.clock_skew_ms is None else self.clock_skew_ms(),
            )
            decision = self.risk.review(proposed, rs)
        else:
            decision = RiskDecision("allowed", proposed, st.exposure, proposed)
        bar = data.last_bar_ts_ms
        if self.journal is not None:
            self.journal.append("decision", ts_ms=now, bar_ts_ms=bar, payload={
                "action": np.asarray(action).reshape(-1).tolist(), **decision.to_dict(),
                "equity_quote": st.equity_quote, "position_base": st.position_base,
                "cash_quote": st.cash_quote, "bars_held": st.bars_held,
                "risk_state": None if self.risk is None else self.risk.to_dict(), **self.meta,
            })
            if decision.events:
                self.journal.append("risk", ts_ms=now, bar_ts_ms=bar, payload=decision.to_dict())
        t1 = time.perf_counter()
        reports: list[OrderReport] = []
        if not decision.kill:
            ctx = OrderContext(bar_ts_ms=bar, now_ms=now, price_quote=float(data.market.close[-1]),
                               volume_base=float(data.market.volume[-1]))
            reports = self.broker.submit_target(None if decision.hold else decision.target_exposure, ctx)
            if self.risk is not None and any(r.status in ("sent", "found") for r in reports):
                self.risk.record_order(now)
        t2 = time.perf_counter()
        self.timings = {"decide_s": t1 - t0, "submit_s": t2 - t1}
        self.last_decision = decision
        self.last_reports = reports
        return decision, reports

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """Decide, trade, wait for the next closed bar, observe (see the module docstring)."""
        decision, reports = self.decide(action)
        info = self._info()
        info["risk"] = decision.to_dict()
        info["orders"] = [r.__dict__ for r in reports]
        if decision.kill:
            return self._obs, 0.0, True, False, info
        data, st = self._ready()
        eq_prev = st.equity_quote
        if not self.clock.sleep_until(data.last_close_ms + data.bar_ms):
            info["stopped"] = True
            return self._obs, 0.0, False, True, info
        self._refresh(data.last_bar_ts_ms + data.bar_ms)
        new_data, new_st = self._ready()
        self._obs = self.observe(new_data, new_st)
        self._steps += 1
        eq = new_st.equity_quote
        reward = math.log(eq / eq_prev) if eq > 0.0 and eq_prev > 0.0 else -math.inf
        if self.risk is not None and new_st.new_fills and self.broker.kind == "paper":
            for f in new_st.new_fills:
                self.risk.record_order(f.ts_ms)
        out = self._info()
        out["risk"] = info["risk"]
        out["orders"] = info["orders"]
        out["decision_ts_ms"] = info["ts_ms"]
        truncated = self.max_steps is not None and self._steps >= self.max_steps
        return self._obs, reward, False, truncated, out


__all__ = [
    "BarClock",
    "ExchangeBarClock",
    "LiveTradingEnv",
    "SteppedClock",
    "account_features",
]
