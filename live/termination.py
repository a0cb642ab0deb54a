"""Safe termination of a live session: :func:`terminate_trading` and the :class:`ExitCode`
that says why it ended.

On a signal, the kill-switch, a critical error or the end: no new orders, open orders
canceled, optionally flattened (``flatten_on_exit`` / ``flatten_on_kill``), a final sync with
the exchange, the journal flushed.
"""

from __future__ import annotations

import logging
import time
from enum import IntEnum
from typing import Any

from coinrl.pipeline.errors import CoinrlError

from .brokers import OrderContext, PaperBroker
from .journal import Journal
from .live_env import LiveTradingEnv

logger = logging.getLogger("coinrl.live.runner")  # the session's log, as before the split


class ExitCode(IntEnum):
    """Why a session ended (the process exit status of ``coinrl paper/live``)."""

    OK = 0
    """Ran the bars it was asked to (``max_bars``)."""
    CONFIG = 2
    """Bad configuration, keys, symbol or bundle: fix it and rerun (never retried)."""
    KILL_SWITCH = 3
    """The risk kill-switch fired (daily loss, drawdown, bankruptcy)."""
    CRITICAL = 4
    """Repeated exchange failures, rejected keys or an unexpected error."""
    DATA_HALT = 5
    """Market data stayed stale or gapped for too long, or every decision was blocked by it."""
    UNREACHABLE = 6
    """The exchange could not be reached (network, timeouts, 5xx, rate limits) at start."""
    INTERRUPTED = 130
    """SIGINT (Ctrl-C)."""
    TERMINATED = 143
    """SIGTERM."""



def terminate_trading(
    env: LiveTradingEnv,
    *,
    code: ExitCode,
    reason: str,
    flatten: bool,
    journal: Journal | None = None,
    timeout_s: float = 10.0,
) -> ExitCode:
    """Stop trading safely (the seed's name) and return ``code``.

    No new decision is taken after this is called. In order: the broker's open orders are
    canceled; with ``flatten`` the position is closed (a market order with its own client
    order id; paper books close at the last close); the exchange broker syncs once more (fills
    since the last decision, final balances); the final books and the reason are journalled
    (``stop``) and the journal is flushed. Failures of these steps are journalled
    and do not hide the original reason.
    """
    broker = env.broker
    steps: dict[str, Any] = {"canceled": [], "flatten": None, "errors": []}
    try:
        steps["canceled"] = broker.cancel_all()
    except CoinrlError as e:
        steps["errors"].append(f"cancel_all: {e}")
    if flatten:
        try:
            steps["flatten"] = _flatten(env, timeout_s)
        except CoinrlError as e:
            steps["errors"].append(f"flatten: {e}")
    if env.data is not None and broker.state is not None and not isinstance(broker, PaperBroker):
        try:  # the final word of the exchange: fills since the last decision, balances
            broker.sync(env.data)
        except CoinrlError as e:
            steps["errors"].append(f"final sync: {e}")
    st = broker.state
    now = env.data.server_time_ms if env.data is not None else 0
    payload = {"exit_code": int(code), "exit_name": code.name, "reason": reason, **steps,
               "final": None if st is None else st.to_dict()}
    if journal is not None:
        journal.append("stop", ts_ms=now, payload=payload)
        journal.flush()
    log = logger.info if code in (ExitCode.OK, ExitCode.INTERRUPTED, ExitCode.TERMINATED) else logger.error
    log("trading stopped exit_code=%d (%s) reason=%s canceled=%d flatten=%s", int(code), code.name,
        reason, len(steps["canceled"]), steps["flatten"])
    return code


def _flatten(env: LiveTradingEnv, timeout_s: float) -> dict[str, Any]:
    broker, data, st = env.broker, env.data, env.broker_state
    if data is None or st is None or st.position_base == 0.0:
        return {"status": "flat"}
    if isinstance(broker, PaperBroker):
        a = broker.account
        c = float(data.market.close[-1])
        a.step_bar(0.0, c, c, c, c, float(data.market.volume[-1]))
        return {"status": "closed at the last close (paper)", "position_base": a.position_base}
    ctx = OrderContext(bar_ts_ms=data.last_bar_ts_ms + 1, now_ms=data.server_time_ms,
                       price_quote=float(data.market.close[-1]),
                       volume_base=float(data.market.volume[-1]))
    reports = broker.submit_target(0.0, ctx)
    out: dict[str, Any] = {"orders": [r.__dict__ for r in reports]}
    # wait for the order itself (a sync would cancel it as a leftover of an earlier decision):
    # a real exchange fills a market order at once, an emulator at the next bar's open
    waiting = [r.client_order_id for r in reports if r.status in ("sent", "found", "unknown")]
    client = getattr(broker, "client", None)
    deadline = time.monotonic() + timeout_s
    while waiting and client is not None and time.monotonic() < deadline:
        found = [client.find_order(cid, broker.symbol) for cid in waiting]
        waiting = [cid for cid, o in zip(waiting, found, strict=True) if o is not None and o.status == "open"]
        if waiting:
            time.sleep(min(0.25, max(0.01, timeout_s / 40)))
    out["unfilled"] = waiting
    state = broker.sync(env.feed.update())
    out["position_base"] = state.position_base
    return out


__all__ = ["ExitCode", "terminate_trading"]
