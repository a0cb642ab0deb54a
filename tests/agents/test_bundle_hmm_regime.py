"""A bundle trained with ``hmm_regime`` features carries the train-fitted HMM as data: loaded,
it rebuilds the same observations from candles (the live path) as training saw."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from coinrl.agents.bundle import load_model, save_model
from coinrl.agents.config import TrainConfig
from coinrl.agents.train import train_model
from coinrl.envs.config import EnvConfig
from coinrl.pipeline.splits import prepare_data_for_model
from coinrl.pipeline.synthetic import regime_switching

HMM_SPEC = {
    "features": [
        {"kind": "returns", "horizons": [1, 4]},
        {"kind": "hmm_regime", "n_states": 2, "vol_window": 12, "window": 48, "n_iter": 20},
    ]
}


@pytest.mark.slow  # trains a (tiny) agent
def test_hmm_bundle_round_trip_replays_identical_features(
    tmp_path: Path, train_config: Callable[..., TrainConfig], small_env: EnvConfig
) -> None:
    candles = regime_switching(2_000, seed=9)
    prepared = prepare_data_for_model(candles, spec=HMM_SPEC)
    agent = train_model(prepared, train_config(total_timesteps=512), small_env)
    assert agent.feature_spec == prepared.spec  # the fitted spec, not the bare one
    loaded = load_model(save_model(agent, tmp_path / "bundle"))
    assert loaded.feature_spec == prepared.spec
    assert loaded.feature_spec.features[1].fitted is not None
    replayed = loaded.market_data(candles, split="full")
    np.testing.assert_array_equal(replayed.features, prepared.full.features)
