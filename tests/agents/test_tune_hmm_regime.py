"""The tuner's folds fit ``hmm_regime`` on each fold's own train rows, never on later rows."""

from __future__ import annotations

import numpy as np
import pytest

from coinrl.agents.tune import tuning_folds
from coinrl.agents.tune.best import _train_plus_validation
from coinrl.pipeline.source import DataConfig
from coinrl.pipeline.splits import prepare_data_for_model
from coinrl.pipeline.synthetic import regime_switching

DATA = DataConfig.model_validate(
    {
        "features": {
            "features": [
                {"kind": "returns", "horizons": [1]},
                {"kind": "hmm_regime", "vol_window": 12, "window": 48, "n_iter": 20},
            ]
        },
        "split": {"train": 0.6, "validation": 0.2, "test": 0.2},
    }
)


@pytest.mark.slow
def test_one_fold_is_the_experiments_own_fit():
    candles = regime_switching(2_000, seed=2)
    fold = tuning_folds(candles, DATA, 1).folds[0]
    prepared = prepare_data_for_model(candles, DATA.features, DATA.split, DATA.norm)
    assert fold.spec == prepared.spec
    np.testing.assert_array_equal(fold.train.features, prepared.train.features)
    np.testing.assert_array_equal(fold.validation.features, prepared.validation.features)


@pytest.mark.slow
def test_each_fold_fits_on_its_own_train_rows_only():
    candles = regime_switching(2_400, seed=3)
    folds = tuning_folds(candles, DATA, 2, "rolling").folds
    assert folds[0].spec != folds[1].spec
    warm = DATA.features.warmup_bars
    stop = warm + folds[0].main_fold.train.stop  # candle row after fold 0's training rows
    later = candles.copy()
    later.loc[stop:, ["open", "high", "low", "close"]] *= 0.8
    again = tuning_folds(later, DATA, 2, "rolling").folds[0]
    assert again.spec == folds[0].spec
    np.testing.assert_array_equal(again.train.features, folds[0].train.features)


@pytest.mark.slow
def test_the_final_train_plus_validation_model_refits_on_those_rows_only():
    """tune-best trains the chosen config on train + validation: the HMM is refitted on those
    rows, and the test rows still reach nothing."""
    candles = regime_switching(2_000, seed=4)
    prepared = prepare_data_for_model(candles, DATA.features, DATA.split, DATA.norm)
    out = _train_plus_validation(prepared)
    fitted, before = out.spec.features[1].fitted, prepared.spec.features[1].fitted
    assert fitted is not None
    assert before is not None
    assert fitted.train_rows > before.train_rows
    warm = DATA.features.warmup_bars
    later = candles.copy()
    later.loc[warm + prepared.main_fold.test.start :, ["open", "high", "low", "close"]] *= 0.8
    again = _train_plus_validation(
        prepare_data_for_model(later, DATA.features, DATA.split, DATA.norm)
    )
    assert again.spec == out.spec
    np.testing.assert_array_equal(again.train.features, out.train.features)
