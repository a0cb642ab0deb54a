"""The live runner: bar schedule, decision -> risk -> broker -> journal, hot reload, signals,
safe termination and restart recovery.

:class:`Runner` drives one :class:`~coinrl.live.live_env.LiveTradingEnv` with a policy:

* **schedule**: the env waits for each bar close on the exchange's clock
  (:class:`~coinrl.live.live_env.ExchangeBarClock`: polls the exchange's time, so a replaying
  emulator and a real exchange are driven the same way);
* **decision**: the policy's deterministic action on the observation of the newest closed
  bar; the env passes it through the risk layer to the broker and journals everything;
* **hot reload** (:func:`update_live_model`, in :mod:`coinrl.live.reload`): the bundle's
  manifest is polled (its sha256); a new bundle is loaded and validated (manifest hashes and library versions by
  :func:`~coinrl.agents.bundle.load_model`, the same feature spec, the same spaces, a dry
  prediction on the current candles) before it replaces the running one; on any failure the
  old model keeps trading and the reason is journalled;
* **signals**: SIGINT and SIGTERM stop the session between bars (a sleeping wait is woken);
* **termination** (:func:`terminate_trading` and :class:`ExitCode`, in
  :mod:`coinrl.live.termination`): on a signal, the kill-switch, a critical error
  or the end: no new orders, open orders canceled, optionally flattened
  (``flatten_on_exit`` / ``flatten_on_kill``), the journal flushed, and an
  :class:`ExitCode` that says why;
* **restart recovery**: a runner started on a journal that already holds its run reconciles
  from the journal and the exchange before its first decision
  (:meth:`~coinrl.live.brokers.Broker.recover`: unknown orders looked up, missing fills
  backfilled, the risk guard's state restored); a decision re-taken for the same bar derives
  the same client order id and finds its order instead of sending another.

Failures while running: temporary exchange errors are journalled and the bar is retried
(``max_consecutive_errors`` in a row stop the session, CRITICAL); bad or stale data halts
trading (no orders) and ``max_consecutive_halts`` in a row stop it (DATA_HALT); an
authentication failure stops it at once (CRITICAL); an order the exchange refuses (funds,
filters) is journalled and the session goes on.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, Literal, Protocol

import numpy as np
from pydantic import Field

from coinrl.envs.config import EnvConfig
from coinrl.pipeline.config import FrozenModel
from coinrl.pipeline.errors import (
    AuthenticationError,
    CoinrlError,
    ConfigError,
    DataError,
    ExchangeError,
    TemporaryExchangeError,
)
from coinrl.pipeline.features import FeatureSpec
from coinrl.pipeline.splits import Normaliser

from .brokers import Broker, PaperBroker
from .data import LiveDataFeed
from .exchange import ExchangeClient, RetryAfterBeyondDeadline
from .exchange_broker import ExchangeBroker
from .journal import Journal
from .live_env import BarClock, ExchangeBarClock, LiveTradingEnv
from .reload import ReloadResult, _batch, _unbatch, bundle_fingerprint, update_live_model
from .risk import RiskConfig, RiskGuard
from .termination import ExitCode, terminate_trading

logger = logging.getLogger(__name__)


class RunnerConfig(FrozenModel):
    """How a session runs and stops.

    Attributes:
        max_bars: stop (OK) after this many decisions (None: run until stopped).
        flatten_on_exit: close the position when stopped by a signal or at the end.
        flatten_on_kill: close the position when the kill-switch fires.
        flatten_on_error: close the position on a critical error or a data halt.
        max_consecutive_errors: temporary failures in a row before stopping (CRITICAL).
        max_consecutive_halts: halted decisions (stale/bad data) in a row before stopping.
        reload_every_bars: poll the bundle for a new version every this many bars (0: never).
        flatten_timeout_s: how long to wait for a flattening order to fill, seconds.
    """

    max_bars: int | None = Field(default=None, gt=0)
    flatten_on_exit: bool = False
    flatten_on_kill: bool = True
    flatten_on_error: bool = False
    max_consecutive_errors: int = Field(default=5, gt=0)
    max_consecutive_halts: int = Field(default=10, gt=0)
    reload_every_bars: int = Field(default=1, ge=0)
    flatten_timeout_s: float = Field(default=10.0, ge=0.0)


class Policy(Protocol):
    """Anything that maps a batch of observations to a batch of actions (a TrainedAgent)."""

    def predict(self, observation: Any, deterministic: bool = True) -> Any:
        """Actions for a batch of observations."""
        ...


# --------------------------------------------------------------------------- runner


class Runner:
    """One trading session: a policy over a :class:`LiveTradingEnv` (see the module doc).

    Args:
        env: the env (feed, broker, risk guard, journal, clock).
        policy: the decision maker (a TrainedAgent, or anything with ``predict``).
        journal: the run's journal (also the env's).
        config: schedule and termination settings.
        bundle_path: the bundle to watch for hot reloads (None: no reloads).
        loader: bundle loader for reloads (default ``load_model``).
        tracker: optional metrics sink with ``log(dict, step)`` (``live/...`` keys; W&B).
    """

    def __init__(
        self,
        env: LiveTradingEnv,
        policy: Policy,
        journal: Journal,
        config: RunnerConfig | None = None,
        *,
        bundle_path: str | Path | None = None,
        loader: Callable[[Path], Any] | None = None,
        tracker: Any = None,
    ) -> None:
        self.env = env
        self.policy = policy
        self.journal = journal
        self.config = config or RunnerConfig()
        self.bundle_path = Path(bundle_path) if bundle_path is not None else None
        self.loader = loader
        self.tracker = tracker
        self.model_fingerprint = bundle_fingerprint(self.bundle_path) if self.bundle_path else ""
        self._stop_code: ExitCode | None = None
        self._stop_reason = ""
        self.bars = 0
        self.halted_bars = 0
        """Decisions blocked by bad or stale data (no order allowed)."""
        self.skipped_bars = 0
        """Decisions skipped explicitly (a Retry-After beyond the next decision's deadline)."""
        self.reloads: list[ReloadResult] = []
        self.on_decision: Callable[[dict[str, Any]], None] | None = None
        """Called after every decision with :meth:`decision_summary` (the CLI prints it)."""

    # -- control ----------------------------------------------------------------------------
    def request_stop(self, code: ExitCode = ExitCode.INTERRUPTED, reason: str = "stop requested") -> None:
        """Stop after the current step (wakes a waiting clock). Safe from a signal handler."""
        if self._stop_code is None:
            self._stop_code = code
            self._stop_reason = reason
        self.env.clock.stop()

    def install_signal_handlers(self) -> Callable[[], None]:
        """Route SIGINT/SIGTERM to :meth:`request_stop`; returns a function restoring the old
        handlers (only possible in the main thread; elsewhere a no-op)."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def handler(signum: int, frame: FrameType | None) -> None:
            code = ExitCode.TERMINATED if signum == signal.SIGTERM else ExitCode.INTERRUPTED
            self.request_stop(code, f"signal {signal.Signals(signum).name}")

        old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}

        def restore() -> None:
            for s, h in old.items():
                signal.signal(s, h)

        return restore

    # -- steps ------------------------------------------------------------------------------
    def _start(self) -> bool:
        j = self.journal
        restarted = j.count("start") > 0
        now = self.env.clock.now_ms()
        j.append("start", ts_ms=now, payload={
            "restarted": restarted, "broker": self.env.broker.kind, "symbol": self.env.broker.symbol,
            "model_fingerprint": self.model_fingerprint, "config": self.config.model_dump(),
            "risk": None if self.env.risk is None else self.env.risk.config.model_dump(),
        })
        if restarted:
            notes = self.env.broker.recover(j)
            last = j.last("decision")
            if last is not None and self.env.risk is not None and last.payload.get("risk_state"):
                self.env.risk.restore(last.payload["risk_state"])
            logger.info("restarted run_id=%s: %s", j.run_id, "; ".join(notes) or "nothing to reconcile")
        self.env.meta = {"model_fingerprint": self.model_fingerprint}
        return restarted

    def _maybe_reload(self) -> None:
        if self.bundle_path is None or self.config.reload_every_bars == 0:
            return
        if self.bars % self.config.reload_every_bars:
            return
        res = update_live_model(self.bundle_path, self.policy, self.env,
                                known_fingerprint=self.model_fingerprint, loader=self.loader)
        if res.status == "unchanged":
            return
        self.model_fingerprint = res.fingerprint
        self.reloads.append(res)
        now = self.env.data.server_time_ms if self.env.data is not None else 0
        if res.status == "loaded":
            self.policy = res.agent
            self.env.feed.set_model(res.agent.feature_spec, res.agent.normaliser)
            self.env.meta = {"model_fingerprint": res.fingerprint}
            self.env.refeature()
            logger.info("model reloaded bundle=%s fingerprint=%s", self.bundle_path, res.fingerprint[:12])
        else:
            logger.warning("model reload rejected bundle=%s: %s (the running model keeps trading)",
                           self.bundle_path, res.reason)
        self.journal.append("model", ts_ms=now, payload={
            "status": res.status, "bundle": str(self.bundle_path), "fingerprint": res.fingerprint,
            "reason": res.reason,
        })

    def _act(self, obs: Any) -> Any:
        action = np.asarray(self.policy.predict(_batch(obs), deterministic=True))
        return _unbatch(action, self.env)

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> ExitCode:
        """Run until ``max_bars``, a signal, the kill-switch or a critical error.

        Returns:
            The :class:`ExitCode` (also journalled with the reason in the ``stop`` event).
        """
        cfg = self.config
        code, reason, flatten = ExitCode.OK, "finished", cfg.flatten_on_exit
        errors = halts = 0
        try:
            self._start()
            obs, _ = self.env.reset()
            while True:
                if self._stop_code is not None:
                    code, reason, flatten = self._stop_code, self._stop_reason, cfg.flatten_on_exit
                    break
                self._maybe_reload()
                if self.env.observation is not None:
                    obs = self.env.observation
                try:
                    obs, reward, term, trunc, info = self.env.step(self._act(obs))
                    errors = 0
                except RetryAfterBeyondDeadline as e:
                    self._skip_rate_limited(e)
                    continue
                except TemporaryExchangeError as e:
                    errors += 1
                    self._error("temporary", e)
                    if errors >= cfg.max_consecutive_errors:
                        code, reason, flatten = ExitCode.CRITICAL, f"{errors} exchange failures in a row: {e}", cfg.flatten_on_error
                        break
                    self._resync()
                    continue
                except DataError as e:
                    halts += 1
                    self._error("data", e)
                    if halts >= cfg.max_consecutive_halts:
                        code, reason, flatten = ExitCode.DATA_HALT, f"{halts} bars without usable data: {e}", cfg.flatten_on_error
                        break
                    self._resync()
                    continue
                decision = self.env.last_decision
                self._report(info)
                if decision is not None and decision.halted:
                    halts += 1
                    self.halted_bars += 1
                    self.journal.append("halt", ts_ms=info["server_time_ms"], bar_ts_ms=info["ts_ms"],
                                        payload={"consecutive": halts, **decision.to_dict()})
                    if halts >= cfg.max_consecutive_halts:
                        code, reason, flatten = ExitCode.DATA_HALT, f"{halts} halted decisions in a row", cfg.flatten_on_error
                        break
                else:
                    halts = 0
                self.bars += 1
                self._track(info, reward)
                if term:
                    code, reason, flatten = ExitCode.KILL_SWITCH, "; ".join(
                        f"{e['rule']}: {e['detail']}" for e in info["risk"]["events"]), cfg.flatten_on_kill
                    break
                if trunc:
                    if self._stop_code is not None:
                        code, reason, flatten = self._stop_code, self._stop_reason, cfg.flatten_on_exit
                    break
                if cfg.max_bars is not None and self.bars >= cfg.max_bars:
                    if self.bars and self.halted_bars == self.bars:
                        code, reason = ExitCode.DATA_HALT, (
                            f"all {self.bars} decisions were blocked by stale or bad data: "
                            "nothing was traded")
                        flatten = cfg.flatten_on_error
                    break
        except AuthenticationError as e:
            code, reason, flatten = ExitCode.CRITICAL, f"authentication failed: {e}", False
            self._error("authentication", e)
        except ConfigError as e:
            code, reason, flatten = ExitCode.CONFIG, str(e), False
            self._error("config", e)
        except (ExchangeError, DataError) as e:
            code, reason, flatten = ExitCode.CRITICAL, str(e), cfg.flatten_on_error
            self._error("critical", e)
        except KeyboardInterrupt:
            code, reason, flatten = ExitCode.INTERRUPTED, "KeyboardInterrupt", cfg.flatten_on_exit
        try:
            return terminate_trading(self.env, code=code, reason=reason, flatten=flatten,
                                     journal=self.journal, timeout_s=cfg.flatten_timeout_s)
        finally:
            self.journal.close()

    @staticmethod
    def decision_summary(info: dict[str, Any]) -> dict[str, Any]:
        """One decision in a few fields: bar time (UTC ISO), target, orders, fills, equity,
        risk events (what ``coinrl paper/live`` print, one line per decision)."""
        import pandas as pd

        risk = info.get("risk") or {}
        orders = info.get("orders") or []
        return {
            "bar": pd.Timestamp(int(info.get("decision_ts_ms", info["ts_ms"])), unit="ms",
                                tz="UTC").isoformat(),
            "verdict": risk.get("verdict"),
            "target_exposure": risk.get("target_exposure"),
            "orders": [_order_word(o) for o in orders],
            "fills": int(info.get("new_fills") or 0),
            "equity_quote": info.get("equity_quote"),
            "risk_events": [str(e.get("rule")) for e in risk.get("events") or []],
        }

    def _report(self, info: dict[str, Any]) -> None:
        if self.on_decision is None:
            return
        try:
            self.on_decision(self.decision_summary(info))
        except Exception:  # a printing problem must never stop trading
            logger.exception("decision report failed")

    def _error(self, kind: str, e: BaseException) -> None:
        logger.warning("runner %s error: %s", kind, e)
        now = self.env.data.server_time_ms if self.env.data is not None else 0
        try:
            self.journal.append("error", ts_ms=now, payload={"kind": kind, "error": type(e).__name__,
                                                             "message": str(e)[:2000]})
        except CoinrlError:  # the journal itself failing must not mask the error
            logger.exception("journal append failed")

    def _skip_rate_limited(self, e: RetryAfterBeyondDeadline) -> None:
        """The exchange asked to wait past the decision's deadline: skip that decision
        explicitly (journalled), wait out the Retry-After on the exchange's clock, resync."""
        self.skipped_bars += 1
        data = self.env.data
        now = e.until_ms - int((e.retry_after_s or 0.0) * 1000.0)  # no request during the ban
        bar = None if data is None else data.last_bar_ts_ms + data.bar_ms
        logger.warning("decision skipped: rate limited until ts_ms=%d (Retry-After %.0f s, "
                       "deadline ts_ms=%s)", e.until_ms, e.retry_after_s or 0.0, e.deadline_ms)
        self.journal.append("halt", ts_ms=now, bar_ts_ms=bar, payload={
            "verdict": "skipped", "rule": "rate_limited", "skipped": True,
            "retry_after_s": e.retry_after_s, "until_ms": e.until_ms,
            "deadline_ms": e.deadline_ms, "reason": str(e)[:2000],
        })
        for _ in range(3):
            try:
                self.env.clock.sleep_until(e.until_ms)
                self.env.resync()
                return
            except RetryAfterBeyondDeadline as again:  # a clock that asks the exchange its time
                client = getattr(self.env.feed, "client", None)  # is banned too: wait in wall time
                getattr(client, "sleep", time.sleep)(float(again.retry_after_s or 0.0))
            except (TemporaryExchangeError, DataError) as err:
                logger.warning("resync after a rate limit failed: %s", err)
                return

    def _resync(self) -> None:
        """After a failure: wait a moment on the exchange's clock, then refresh data and books."""
        clock = self.env.clock
        bar_ms = self.env.data.bar_ms if self.env.data is not None else 60_000
        try:
            clock.sleep_until(clock.now_ms() + max(1, bar_ms // 100))
            self.env.resync()
        except (TemporaryExchangeError, DataError) as e:
            logger.warning("resync failed: %s", e)

    def _track(self, info: dict[str, Any], reward: float) -> None:
        if self.tracker is None:
            return
        metrics = {
            "live/equity_quote": info["equity_quote"], "live/position_base": info["position_base"],
            "live/fees_paid_quote": info["fees_paid_quote"],
            "live/reward": reward if math.isfinite(reward) else None,
        }
        self.tracker.log({k: v for k, v in metrics.items() if v is not None}, step=self.bars)


def _order_word(o: dict[str, Any]) -> str:
    side = o.get("side")
    side_s = getattr(side, "value", side) or ""
    qty = float(o.get("qty_base") or 0.0)
    return f"{o.get('status')}" + (f" {side_s} {qty:.10g}" if side_s and qty else "")


def build_runner(
    policy: Policy,
    *,
    env_config: EnvConfig,
    spec: FeatureSpec,
    normaliser: Normaliser,
    client: ExchangeClient,
    symbol: str,
    timeframe: str,
    mode: Literal["paper", "live"],
    journal: Journal,
    risk_config: RiskConfig | None = None,
    config: RunnerConfig | None = None,
    clock: BarClock | None = None,
    bundle_path: str | Path | None = None,
    history_bars: int | None = None,
    max_buffer_bars: int = 5000,
    check_clock_skew: bool = True,
    tracker: Any = None,
) -> Runner:
    """Assemble a session: feed, broker (paper or exchange), risk guard, env and runner.

    Args:
        policy: the decision maker (a TrainedAgent or a rule with ``predict``).
        env_config, spec, normaliser: the bundle's env config, feature spec and normaliser.
        client: the exchange client (signed for ``live``; public is enough for ``paper``).
        symbol, timeframe: the market.
        mode: ``paper`` (PaperBroker) or ``live`` (ExchangeBroker: real orders).
        journal: the run's journal (its run id prefixes the client order ids).
        risk_config: the risk limits (default :class:`RiskConfig`'s).
        config: the runner's settings.
        clock: the bar clock (default: the exchange's, polled).
        bundle_path: a bundle to watch for hot reloads.
        history_bars, max_buffer_bars: the feed's initial and largest candle buffer.
        check_clock_skew: hand the measured clock skew to the risk layer.
        tracker: metrics sink (``log(dict, step)``).

    Returns:
        The :class:`Runner` (call :meth:`Runner.run`).
    """
    feed = LiveDataFeed(client, symbol, timeframe, spec=spec, normaliser=normaliser,
                        window=env_config.window, history_bars=history_bars,
                        max_bars=max_buffer_bars)
    broker: Broker
    if mode == "paper":
        broker = PaperBroker(env_config, symbol, run_id=journal.run_id, journal=journal)
    elif mode == "live":
        broker = ExchangeBroker(client, symbol, env_config, run_id=journal.run_id, journal=journal)
    else:
        raise ConfigError(f"mode must be 'paper' or 'live', got {mode!r}")
    guard = RiskGuard(risk_config or RiskConfig(), feed.bar_ms)
    env = LiveTradingEnv(
        feed, broker, env_config, clock=clock or ExchangeBarClock(client), risk=guard,
        journal=journal,
        clock_skew_ms=(lambda: client.clock_skew_ms) if check_clock_skew else None,
    )
    return Runner(env, policy, journal, config, bundle_path=bundle_path, tracker=tracker)


__all__ = [
    "ExitCode",
    "Policy",
    "ReloadResult",
    "Runner",
    "RunnerConfig",
    "build_runner",
    "bundle_fingerprint",
    "terminate_trading",
    "update_live_model",
]
