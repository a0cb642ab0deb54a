"""The retraining rules (:class:`RetrainConfig`) and what one retrain gave (:class:`RetrainOutcome`).

Windows are counted in candles (bars of the bundle's timeframe), newest last::

    ... | training window (window_bars) | embargo (embargo_bars) | gate slice (gate_bars) | as_of

The gate slice is the newest ``gate_bars`` candles before ``as_of``; the embargo keeps every
candle the gate reads (its feature warm-up and observation window included) out of the training
window, so the gate measures the challenger and the champion on data neither trained on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from coinrl.pipeline.config import Fraction, FrozenModel
from coinrl.pipeline.errors import ConfigError

PosInt = Annotated[int, Field(ge=1)]

RetrainStatus = Literal["promoted", "rejected", "failed"]


class RetrainConfig(FrozenModel):
    """How often and on what a live bundle is retrained, and the gate a challenger must pass.

    Attributes:
        every: the scheduler's interval (``"24h"``, ``"30m"``, ``"7d"``; units s/m/h/d).
        window_bars: candles in the rolling training window (its last ``validation`` share is
            the training run's validation split).
        gate_bars: the newest candles, judged by the gate (never trained on).
        embargo_bars: candles between the training window and the gate slice; None: the
            least that keeps the gate's feature warm-up and observation window out of the
            training window (``warmup_bars + env.window``). A smaller value is refused.
        validation: share of the training window used as the run's validation split.
        init: ``fresh`` (new weights, the champion's config) or ``warm`` (continue training the
            champion's weights on the new window).
        total_timesteps: env steps of the retrain; None: the champion's ``train.total_timesteps``.
        seed: training seed; None: the champion's seed plus the trial number.
        min_p_better: promote only if the paired block bootstrap's P(challenger's total return
            > champion's) on the gate slice is at least this.
        min_p_beats_cash: ... and P(challenger's total return > 0, cash) at least this.
        min_dsr: ... and the deflated Sharpe ratio (over every challenger tried in this run) at
            least this (0 leaves it reported only).
        n_boot: bootstrap replicates of the gate.
        block_bars: bootstrap block length in bars (None: ``round(T ** (1/3))``).
        nice: niceness added to the training process (0..19: 19 is the lowest priority).
        time_limit_s: the training process is killed past this many seconds (None: no limit).
        subprocess: train in a child process (low priority, killable); False trains in this
            process (tests, debugging).
        rollback_bound: roll a promoted model back when its total return since promotion
            trails the old champion's on the same bars by more than this (a fraction: 0.05 is
            5 percentage points).
        rollback_min_bars: bars traded since promotion before the rollback rule may fire.
        shadow_bars: bars a challenger that passed the gate is shadowed beside the champion
            before promotion (:func:`~coinrl.live.retrain_rollback.check_shadow`; 0: none).
        shadow_tolerance: the shadow holds up when the challenger's total return over those
            bars is at least the champion's minus this (a fraction).
    """

    every: str = Field(default="24h", pattern=r"^\d+(\.\d+)?[smhd]$")
    window_bars: PosInt = 5_000
    gate_bars: PosInt = 500
    embargo_bars: int | None = Field(default=None, ge=0)
    validation: float = Field(default=0.15, ge=0.0, lt=0.9)
    init: Literal["fresh", "warm"] = "fresh"
    total_timesteps: PosInt | None = None
    seed: int | None = None
    min_p_better: Fraction = 0.8
    min_p_beats_cash: Fraction = 0.5
    min_dsr: Fraction = 0.0
    n_boot: PosInt = 2_000
    block_bars: PosInt | None = None
    nice: int = Field(default=19, ge=0, le=19)
    time_limit_s: float | None = Field(default=None, gt=0)
    subprocess: bool = True
    rollback_bound: float = Field(default=0.05, ge=0.0)
    rollback_min_bars: PosInt = 24
    shadow_bars: int = Field(default=0, ge=0)
    shadow_tolerance: float = Field(default=0.0, ge=0.0)

    @property
    def every_s(self) -> float:
        """:attr:`every` in seconds."""
        unit = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}[self.every[-1]]
        value = float(self.every[:-1]) * unit
        if value <= 0:
            raise ConfigError(f"retrain.every must be a positive interval, got {self.every!r}")
        return value


@dataclass
class RetrainOutcome:
    """What one :func:`~coinrl.live.retrain.retrain_once` did.

    Attributes:
        status: ``promoted`` (passed the gate), ``rejected`` (failed it) or ``failed`` (the
            retrain itself did not finish: see ``reasons``).
        trial: this run's challenger number (1 for the first; the deflated Sharpe's trials).
        challenger: the challenger bundle folder (None when none was written).
        champion: the champion bundle it was judged against.
        gate: the gate's figures (total returns, p_better, p_beats_cash, dsr, bars...).
        reasons: why it was rejected or failed (empty when promoted).
        lineage: the challenger's lineage (parent, data range and fingerprint, config diff).
        wall_s: seconds the retrain took, training included.
    """

    status: RetrainStatus
    trial: int
    challenger: Path | None
    champion: Path
    gate: dict[str, Any] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    lineage: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0

    @property
    def promoted(self) -> bool:
        """Whether the challenger passed the gate."""
        return self.status == "promoted"


__all__ = ["RetrainConfig", "RetrainOutcome", "RetrainStatus"]
