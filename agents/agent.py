"""``TrainedAgent``: an SB3 model together with everything needed to feed it the same inputs.

Training returns one, :func:`~coinrl.agents.bundle.save_model` writes one, and
:func:`~coinrl.agents.bundle.load_model` gives it back. Besides the policy it carries the env
config (costs, window, action mode), the feature spec and the normaliser fitted on the training
split, so a backtest or a live decision builds exactly the observations the policy was trained
on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from coinrl.envs.config import EnvConfig
from coinrl.pipeline.dataset import MarketData
from coinrl.pipeline.features import FeatureSpec
from coinrl.pipeline.splits import Normaliser, PreparedData, market_data_from_spec

from .config import TrainConfig

if TYPE_CHECKING:
    import pandas as pd
    from stable_baselines3.common.base_class import BaseAlgorithm


def data_info(prepared: PreparedData) -> dict[str, Any]:
    """Provenance of the training data: source, market, date range, sizes and hashes.

    Returns:
        A JSON-safe dict: ``source``, ``symbol``, ``timeframe``, ``exchange``,
        ``data_fingerprint`` (sha256 of the candles), ``start_ts_ms``/``end_ts_ms`` (first and
        last feature bar), per-split ``{start_ts_ms, end_ts_ms, rows}``,
        ``feature_spec_fingerprint``, ``normaliser_fingerprint``, ``warmup_rows_dropped`` and
        the split/norm configs.
    """
    full = prepared.full

    def span(md: MarketData) -> dict[str, int]:
        if len(md) == 0:
            return {"rows": 0}
        return {"start_ts_ms": int(md.ts_ms[0]), "end_ts_ms": int(md.ts_ms[-1]), "rows": len(md)}

    return {
        "source": str(full.meta.get("source", "")),
        "symbol": full.symbol,
        "timeframe": full.timeframe,
        "exchange": full.exchange,
        "data_fingerprint": prepared.data_fingerprint,
        "start_ts_ms": int(full.ts_ms[0]),
        "end_ts_ms": int(full.ts_ms[-1]),
        "splits": {
            "train": span(prepared.train),
            "validation": span(prepared.validation),
            "test": span(prepared.test),
        },
        "feature_spec_fingerprint": prepared.spec.fingerprint(),
        "normaliser_fingerprint": prepared.normaliser.fingerprint(),
        "warmup_rows_dropped": prepared.warmup_rows_dropped,
        "split": prepared.split.model_dump(mode="json"),
        "norm": prepared.norm.model_dump(mode="json"),
    }


@dataclass(eq=False)
class TrainedAgent:
    """A trained policy and the inputs contract it was trained under.

    Attributes:
        model: the SB3 algorithm (PPO, DQN, ...); ``model.policy`` holds the weights.
        env_config: the env config used in training (evaluation uses the same costs).
        train_config: the training config (seed filled in).
        feature_spec: the feature spec the observations are built from.
        normaliser: fitted on the TRAINING split only.
        data_info: provenance of the training data (see :func:`data_info`).
        experiment_config: the full experiment config as plain data (secrets scrubbed on save).
        history: validation evaluations during training (``step``, ``score``, metrics...).
        info: training outcome (``num_timesteps``, ``best_step``, ``stopped_early``, ...).
    """

    model: BaseAlgorithm
    env_config: EnvConfig
    train_config: TrainConfig
    feature_spec: FeatureSpec
    normaliser: Normaliser
    data_info: dict[str, Any]
    experiment_config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def algo(self) -> str:
        """The algorithm name (``ppo``, ``dqn``, ...)."""
        return self.train_config.algo

    def predict(self, observation: Any, deterministic: bool = True) -> npt.NDArray[Any]:
        """Actions for a batch of observations (the policy's mode when ``deterministic``).

        Recurrent policies are called without state here; use
        :func:`~coinrl.agents.rollout.rollout_policy` to run them over a series.
        """
        action, _ = self.model.predict(observation, deterministic=deterministic)
        return np.asarray(action)

    def market_data(
        self, candles: pd.DataFrame, *, split: str = "live", meta: Mapping[str, Any] | None = None
    ) -> MarketData:
        """Observation-ready MarketData from new candles with the saved spec and normaliser."""
        return market_data_from_spec(
            candles, self.feature_spec, self.normaliser, split=split, meta=meta
        )


__all__ = ["TrainedAgent", "data_info"]
