"""The gate a challenger must pass before any money moves: :func:`gate_challenger`.

The challenger and the champion each trade the gate slice (newest candles, never trained on by
the challenger) through the backtester's books with their own feature spec and normaliser, at
the bundle's costs; buy-and-hold and cash run beside them. The verdicts use the backtests'
machinery (:mod:`coinrl.agents.stats`): the paired circular block bootstrap over bars gives
P(challenger's total return > champion's) and P(> cash); the deflated Sharpe ratio counts every
challenger tried in the run (the journal keeps the count).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from coinrl.pipeline.errors import DataError

from .retrain_config import RetrainConfig

logger = logging.getLogger(__name__)

GATE_SPLIT = "gate"
GATE_DATA = "out of sample (retrain gate slice: newest bars, after the training window and embargo)"


def reload_mismatch(challenger: Any, champion: Any) -> str:
    """Why the live session could not hot-reload ``challenger`` in ``champion``'s place (the
    checks of :func:`~coinrl.live.reload.update_live_model`: the same feature spec, the same
    observation and action spaces), or "" when it could."""
    from coinrl.envs.trading_env import build_spaces

    if challenger.feature_spec.fingerprint() != champion.feature_spec.fingerprint():
        return (
            "its feature spec differs from the live champion's (a fitted feature was refitted on "
            "the new window?), so the running session could not load it; restart with it instead"
        )
    old = build_spaces(champion.env_config, len(champion.feature_spec.feature_names))
    new = build_spaces(challenger.env_config, len(challenger.feature_spec.feature_names))
    if old != new:
        return f"its observation/action spaces {new} differ from the live champion's {old}"
    return ""


def gate_challenger(
    challenger: Any, champion: Any, gate_candles: pd.DataFrame, config: RetrainConfig, *, n_trials: int,
    seed: int = 0,
) -> tuple[bool, dict[str, Any], list[str]]:
    """Judge ``challenger`` against ``champion`` on ``gate_candles``.

    Args:
        challenger, champion: :class:`~coinrl.agents.agent.TrainedAgent` (one asset).
        gate_candles: the gate slice's candles WITH the context before it that the features
            and the observation window need (the embargo's candles, never the training
            window's).
        config: the promotion rules (``min_p_better``, ``min_p_beats_cash``, ``min_dsr``) and
            bootstrap settings.
        n_trials: challengers tried in this run so far, this one included (for the deflated
            Sharpe ratio).
        seed: bootstrap seed.

    A challenger the running session could not hot-reload (:func:`reload_mismatch`) is
    rejected before any backtest.

    Returns:
        ``(passed, figures, reasons)``: figures are plain floats (total returns of challenger,
        champion, buy-and-hold and cash; ``p_better``, ``p_beats_cash``, ``dsr``, ``sharpe``
        per bar, ``bars``), reasons the rules that failed.

    Raises:
        DataError: the two agents traded different bars (other windows or warm-ups).
    """
    from coinrl.agents.backtest import simulate_trading_strategy
    from coinrl.agents.stats import sharpe_stats, verdict_from_returns

    mismatch = reload_mismatch(challenger, champion)
    if mismatch:
        logger.warning("retrain gate: %s", mismatch)
        return False, {"n_trials": int(n_trials)}, [mismatch]
    champ = simulate_trading_strategy(
        champion, gate_candles, name="champion", split=GATE_SPLIT, baselines=True, n_random=1,
        seed=seed, ma_crossover=None, data_description=GATE_DATA,
    )
    chal = simulate_trading_strategy(
        challenger, gate_candles, name="challenger", split=GATE_SPLIT, baselines=False, seed=seed,
        n_trials=n_trials, data_description=GATE_DATA,
    )
    a, b = chal.returns, champ.returns
    if a.shape != b.shape or not np.array_equal(chal.ts_ms, champ.ts_ms):
        raise DataError(
            f"the challenger traded {a.shape[0]} gate bars and the champion {b.shape[0]}: their "
            "feature warm-up or observation window differ; a challenger must keep the champion's"
        )
    vs_champion = verdict_from_returns(a, b, "champion", n_boot=config.n_boot,
                                       block_bars=config.block_bars, seed=seed, data=GATE_DATA)
    vs_cash = verdict_from_returns(a, np.zeros_like(a), "cash", n_boot=config.n_boot,
                                   block_bars=config.block_bars, seed=seed, data=GATE_DATA)
    stats = sharpe_stats(a, n_trials=max(1, n_trials))
    bh = champ.baselines.get("buy_and_hold")
    figures: dict[str, Any] = {
        "bars": int(a.shape[0]),
        "start_ts_ms": int(chal.ts_ms[0]),
        "end_ts_ms": int(chal.ts_ms[-1]),
        "challenger_total_return": vs_champion.agent_value,
        "champion_total_return": vs_champion.baseline_value,
        "buy_and_hold_total_return": float(bh.metrics["total_return"]) if bh is not None else None,
        "cash_total_return": 0.0,
        "p_better": vs_champion.confidence,
        "p_beats_cash": vs_cash.confidence,
        "margin_ci": [vs_champion.ci_low, vs_champion.ci_high],
        "dsr": float(stats["dsr"]),
        "psr": float(stats["psr"]),
        "sharpe_per_bar": float(stats["sharpe_per_bar"]),
        "n_trials": int(n_trials),
        "verdict_champion": vs_champion.line(),
        "verdict_cash": vs_cash.line(),
    }
    reasons: list[str] = []
    if vs_champion.confidence < config.min_p_better:
        reasons.append(
            f"P(challenger better than champion) = {vs_champion.confidence:.3f} < "
            f"min_p_better {config.min_p_better:g}"
        )
    if vs_cash.confidence < config.min_p_beats_cash:
        reasons.append(
            f"P(challenger better than cash) = {vs_cash.confidence:.3f} < min_p_beats_cash "
            f"{config.min_p_beats_cash:g}"
        )
    if stats["dsr"] < config.min_dsr:
        reasons.append(f"deflated Sharpe {stats['dsr']:.3f} over {n_trials} trials < min_dsr {config.min_dsr:g}")
    logger.info(
        "retrain gate bars=%d challenger=%+.4f champion=%+.4f p_better=%.3f p_cash=%.3f dsr=%.3f passed=%s",
        figures["bars"], figures["challenger_total_return"], figures["champion_total_return"],
        figures["p_better"], figures["p_beats_cash"], figures["dsr"], not reasons,
    )
    return not reasons, figures, reasons


__all__ = ["GATE_DATA", "gate_challenger", "reload_mismatch"]
