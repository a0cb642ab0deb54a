"""Automatic rollback of a promoted model that does worse than the champion it replaced, and
the shadow check of a challenger before its promotion (:func:`check_shadow`).

:func:`check_rollback` takes the bars closed since the last promotion of the live bundle folder
(the journal's ``promote_end`` row gives its time and where the old champion was archived), and
replays both models over exactly those bars through the backtester's books (the kernel the
:class:`~coinrl.live.brokers.PaperBroker` trades on, at the bundle's costs): the old champion's
run is its shadow on the same bars. When the promoted model's total return trails the shadow's
by more than ``retrain.rollback_bound`` after at least ``retrain.rollback_min_bars`` bars, the
old champion is put back (:func:`~coinrl.live.retrain_promote.rollback_champion`). Every check
is a ``model`` row (``rollback_check``).

The promoted model's result here is its policy replayed on the bars, not the exchange's fills
of the live session: the two agree to the kernel's precision when orders fill as modelled (the
paper/backtest parity tests), and a session whose fills drift from the model shows it in the
journal's reconciliation rows, not here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from .journal import Journal
from .retrain import _candles, _slice
from .retrain_config import RetrainConfig
from .retrain_promote import rollback_champion

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RollbackCheck:
    """One :func:`check_rollback`.

    Attributes:
        status: ``kept``, ``rolled_back``, ``too_early`` (fewer bars than the rule needs) or
            ``no_promotion`` (nothing promoted at this path, or already rolled back).
        bars: bars closed since the promotion.
        promoted_total_return, previous_total_return: total returns (fractions) over them.
        reason: the rule's sentence.
    """

    status: Literal["kept", "rolled_back", "too_early", "no_promotion"]
    bars: int = 0
    promoted_total_return: float | None = None
    previous_total_return: float | None = None
    reason: str = ""


@dataclass(frozen=True)
class ShadowCheck:
    """One :func:`check_shadow`: ``pending`` (fewer than ``shadow_bars`` bars yet),
    ``passed`` or ``failed``, with the bars and both total returns over them."""

    status: Literal["pending", "passed", "failed"]
    bars: int = 0
    challenger_total_return: float | None = None
    champion_total_return: float | None = None
    reason: str = ""


def _replay(agents: list[tuple[Any, str]], frame: pd.DataFrame, start: int, split: str) -> list[float]:
    """Total returns of each agent over ``frame[start:]`` through the books (features' context
    taken from the bars before ``start``)."""
    from coinrl.agents.backtest import simulate_trading_strategy

    context = max(a.feature_spec.warmup_bars + a.env_config.window for a, _ in agents)
    seg = _slice(frame, max(0, start - context), len(frame))
    return [float(simulate_trading_strategy(a, seg, name=n, split=split, baselines=False).metrics["total_return"])
            for a, n in agents]


def check_shadow(
    challenger: str | Path,
    champion: str | Path,
    candles: pd.DataFrame | str | Path | Any,
    config: RetrainConfig,
    journal: Journal,
    *,
    since_ts_ms: int,
) -> ShadowCheck:
    """Shadow a challenger that passed the gate beside the champion on the bars that closed
    after the gate's data (``since_ts_ms``: e.g. ``outcome.lineage["gate"]["end_ts_ms"] + 1``),
    both replayed through the books at their costs; ``passed`` once ``config.shadow_bars`` bars
    are in and the challenger made at least the champion's return minus
    ``config.shadow_tolerance``. Each decided check is a ``shadow_check`` row.
    """
    from coinrl.agents.bundle import load_model

    frame = _candles(candles)
    start = int((frame["ts_ms"] < int(since_ts_ms)).sum())
    bars = len(frame) - start
    if bars < max(1, config.shadow_bars):
        return ShadowCheck("pending", bars, reason=f"{bars} of {config.shadow_bars} shadow bars so far")
    new, old = _replay([(load_model(challenger), "challenger"), (load_model(champion), "champion")],
                       frame, start, "shadow")
    ok = new >= old - config.shadow_tolerance
    reason = (f"shadow over {bars} bars: challenger {new:+.2%} vs champion {old:+.2%} "
              f"(tolerance {config.shadow_tolerance:.2%}): {'holds up' if ok else 'does not hold up'}")
    journal.append("model", ts_ms=int(frame["ts_ms"].iloc[-1]), payload={
        "event": "shadow_check", "challenger": str(challenger), "champion": str(champion), "bars": bars,
        "challenger_total_return": new, "champion_total_return": old, "passed": ok, "reason": reason})
    return ShadowCheck("passed" if ok else "failed", bars, new, old, reason)


def _last_swap(journal: Journal, live: Path) -> Any:
    rows = [e for e in journal.events("model")
            if e.payload.get("event") in ("promote_end", "rollback_end") and e.payload.get("live") == str(live)]
    return rows[-1] if rows else None


def check_rollback(
    live_bundle: str | Path,
    candles: pd.DataFrame | str | Path | Any,
    config: RetrainConfig,
    journal: Journal,
) -> RollbackCheck:
    """Compare the promoted model with the champion it replaced since the promotion; roll back
    when it trails by more than ``config.rollback_bound``.

    Args:
        live_bundle: the live bundle folder (as passed to ``promote_challenger``).
        candles: the market's closed candles (frame, stored Parquet file or ``DataConfig``).
        config: ``rollback_bound`` and ``rollback_min_bars``.
        journal: the run's journal (the promotion's rows; the check's row is appended).

    Returns:
        The :class:`RollbackCheck`.
    """
    from coinrl.agents.bundle import load_model

    live = Path(live_bundle)
    last = _last_swap(journal, live)
    if last is None or last.payload["event"] != "promote_end":
        return RollbackCheck("no_promotion", reason=f"no promotion of {live} in force")
    frame = _candles(candles)
    since = int(last.ts_ms)
    start = int((frame["ts_ms"] < since).sum())
    bars = len(frame) - start
    if bars < config.rollback_min_bars:
        return RollbackCheck("too_early", bars, reason=f"{bars} bars since the promotion < {config.rollback_min_bars}")
    new, old = _replay([(load_model(live), "promoted"), (load_model(last.payload["archive"]), "previous")],
                       frame, start, "since_promotion")
    lag = old - new
    fire = lag > config.rollback_bound
    reason = (f"the promoted model made {new:+.2%} over {bars} bars since its promotion, the champion it "
              f"replaced {old:+.2%} on the same bars: {'beyond' if fire else 'within'} the bound "
              f"{config.rollback_bound:.2%}")
    ts = int(frame["ts_ms"].iloc[-1])
    journal.append("model", ts_ms=ts, payload={
        "event": "rollback_check", "live": str(live), "bars": bars, "promoted_total_return": new,
        "previous_total_return": old, "bound": config.rollback_bound, "rolled_back": fire, "reason": reason})
    if not fire:
        return RollbackCheck("kept", bars, new, old, reason)
    logger.warning("rolling back %s: %s", live, reason)
    rollback_champion(live, journal, reason=reason, ts_ms=ts)
    return RollbackCheck("rolled_back", bars, new, old, reason)


__all__ = ["RollbackCheck", "ShadowCheck", "check_rollback", "check_shadow"]
