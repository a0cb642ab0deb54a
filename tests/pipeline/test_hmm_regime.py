"""hmm_regime: a filter (not the smoother), fitted on the training split only, stored as data.

Causality per bar is proven by the hypothesis test over every kind in test_features.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from hmmlearn.hmm import GaussianHMM

from coinrl.pipeline.errors import ConfigError, DataError
from coinrl.pipeline.features import FeatureSpec, feature_engineering, fit_feature_spec
from coinrl.pipeline.hmm import HmmParams, filtered_state_probs, stationary_distribution
from coinrl.pipeline.portfolio import prepare_portfolio
from coinrl.pipeline.splits import SplitConfig, prepare_data_for_model, split_bounds
from coinrl.pipeline.synthetic import regime_switching

# Tiny hand case: 2 states, 1 input, already standardised (center 0, scale 1).
HAND = HmmParams(
    input_center=(0.0,),
    input_scale=(1.0,),
    transmat=((0.9, 0.1), (0.2, 0.8)),
    means=((-1.0,), (1.0,)),
    covars=(((1.0,),), ((0.25,),)),
    train_rows=1,
)
X_HAND = np.array([[0.1], [-1.2], [2.0], [0.9], [-0.3], [1.1], [0.8], [-2.0]])

ENTRY = {"kind": "hmm_regime", "n_states": 2, "vol_window": 12, "window": 48, "n_iter": 20}


def _reference_filter(x: np.ndarray, pi: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Textbook forward filter with unscaled Gaussian densities, one row at a time."""
    mu = np.array([-1.0, 1.0])
    var = np.array([1.0, 0.25])
    out = []
    alpha = None
    for t in range(len(x)):
        b = np.exp(-0.5 * (x[t, 0] - mu) ** 2 / var) / np.sqrt(2 * np.pi * var)
        pred = pi if alpha is None else alpha @ a
        alpha = pred * b / (pred * b).sum()
        out.append(alpha)
    return np.array(out)


def _hmmlearn_model() -> GaussianHMM:
    m = GaussianHMM(n_components=2, covariance_type="full")
    a = np.array(HAND.transmat)
    m.startprob_ = stationary_distribution(a)
    m.transmat_ = a
    m.means_ = np.array(HAND.means)
    m.covars_ = np.array(HAND.covars)
    return m


def _spec(**kw: object) -> FeatureSpec:
    return FeatureSpec.from_dict({"features": [{**ENTRY, **kw}]})


def test_stationary_prior_of_the_hand_chain():
    np.testing.assert_allclose(
        stationary_distribution(np.array(HAND.transmat)), [2 / 3, 1 / 3], atol=1e-12
    )


def test_filtered_probabilities_equal_a_reference_forward_pass_on_a_hand_case():
    got = filtered_state_probs(X_HAND, HAND, window=len(X_HAND))
    ref = _reference_filter(X_HAND, np.array([2 / 3, 1 / 3]), np.array(HAND.transmat))
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-12)


def test_filter_is_the_last_row_of_the_smoother_on_each_prefix_and_differs_from_it_before():
    """P(s_t | x_0..x_t) is hmmlearn's predict_proba on the prefix ending at t (its last row);
    predict_proba on the whole series smooths with later bars, so it differs somewhere."""
    model = _hmmlearn_model()
    got = filtered_state_probs(X_HAND, HAND, window=len(X_HAND))
    for t in range(len(X_HAND)):
        np.testing.assert_allclose(got[t], model.predict_proba(X_HAND[: t + 1])[-1], atol=1e-10)
    smoothed = model.predict_proba(X_HAND)
    assert np.abs(got[:-1] - smoothed[:-1]).max() > 0.05  # the smoother looks ahead
    np.testing.assert_allclose(got[-1], smoothed[-1], atol=1e-10)  # same at the last bar


def test_windowed_filter_row_equals_the_filter_over_its_last_window_only():
    x = np.random.default_rng(0).normal(0.0, 1.2, (40, 1))
    w = 7
    got = filtered_state_probs(x, HAND, window=w)
    for t in range(len(x)):
        alone = filtered_state_probs(x[max(0, t - w + 1) : t + 1], HAND, window=w)
        np.testing.assert_allclose(got[t], alone[-1], atol=1e-12)


@pytest.mark.slow
def test_probabilities_sum_to_one_and_state_zero_is_the_calm_regime():
    df = regime_switching(3_000, seed=4)
    prepared = prepare_data_for_model(df, _spec())
    probs = prepared.raw_features
    assert probs.shape[1] == 2
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)
    assert ((probs >= 0.0) & (probs <= 1.0)).all()
    fitted = prepared.spec.features[0].fitted
    assert fitted is not None
    vol_means = [m[1] for m in fitted.means]  # inputs: (log_return, volatility)
    assert vol_means == sorted(vol_means)


@pytest.mark.slow
def test_fit_sees_training_rows_only():
    """Changing every candle after the training split changes neither the fitted parameters
    nor the train-range features; changing one training candle does (the test can fail)."""
    df = regime_switching(2_000, seed=5)
    spec = _spec()
    split = SplitConfig(train=0.6, validation=0.2, test=0.2, embargo_bars=5)
    base = prepare_data_for_model(df, spec, split)
    warm = spec.warmup_bars
    train_stop = warm + split_bounds(len(df) - warm, split).train.stop  # candle rows

    later = df.copy()
    rng = np.random.default_rng(1)
    factor = np.exp(np.cumsum(rng.normal(0.0, 0.02, len(df) - train_stop)))
    for c in ("open", "high", "low", "close"):
        later.loc[train_stop:, c] = later.loc[train_stop:, c].to_numpy() * factor
    after = prepare_data_for_model(later, spec, split)
    assert after.spec == base.spec
    tr = base.main_fold.train
    np.testing.assert_array_equal(after.raw_features[: tr.stop], base.raw_features[: tr.stop])
    assert not np.array_equal(after.raw_features, base.raw_features)

    inside = df.copy()
    inside.loc[train_stop - 200 :, ["open", "high", "low", "close"]] *= 1.5
    assert prepare_data_for_model(inside, spec, split).spec != base.spec


@pytest.mark.slow
def test_walk_forward_folds_refit_on_their_own_train_rows():
    df = regime_switching(2_400, seed=6)
    spec = _spec()
    split = SplitConfig(train=0.6, validation=0.2, test=0.2, walk_forward_folds=3)
    prepared = prepare_data_for_model(df, spec, split)
    fd = prepared.fold_data(0)
    assert fd.spec != prepared.spec
    assert fd.spec.features[0].fitted.train_rows < prepared.spec.features[0].fitted.train_rows
    stop = spec.warmup_bars + fd.fold.train.stop
    later = df.copy()
    later.loc[stop:, ["open", "high", "low", "close"]] *= 0.7
    assert prepare_data_for_model(later, spec, split).fold_data(0).spec == fd.spec
    np.testing.assert_array_equal(
        fd.train.features,
        prepare_data_for_model(later, spec, split).fold_data(0).train.features,
    )


@pytest.mark.slow
def test_same_seed_same_fit():
    df = regime_switching(1_500, seed=7)
    spec = _spec(n_states=3, covariance_type="full", seed=11)
    rows = range(spec.warmup_bars, 1_000)
    assert fit_feature_spec(df, spec, rows) == fit_feature_spec(df, spec, rows)


def test_unfitted_entry_refuses_to_compute():
    with pytest.raises(DataError, match="not fitted"):
        feature_engineering(regime_switching(500, seed=0), _spec())


@pytest.mark.slow
def test_fitted_spec_round_trips_as_data_and_replays_identical_features_from_a_tail():
    """The spec (with its fitted parameters) is what a bundle saves as YAML and live trading
    replays: same fingerprint, and the last rows from a short tail equal training's (to
    rounding: pandas' running rolling std depends on where the series starts, ~1e-13)."""
    df = regime_switching(2_000, seed=8)
    fitted = prepare_data_for_model(df, _spec()).spec
    back = FeatureSpec.from_yaml(fitted.to_yaml())
    assert back == fitted
    assert back.fingerprint() == fitted.fingerprint()
    full = feature_engineering(df, fitted)
    k = 30
    tail = feature_engineering(df.iloc[-(back.warmup_bars + k) :].reset_index(drop=True), back)
    np.testing.assert_allclose(
        tail.drop(columns="ts_ms").to_numpy(),
        full.iloc[-k:].drop(columns="ts_ms").to_numpy(),
        rtol=1e-9,
        atol=1e-12,
    )


def test_the_readme_example_spec_validates():
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = text[text.index("### Regime features (HMM)") :]
    block = re.search(r"```yaml\n(.*?)```", section, re.DOTALL)
    assert block is not None
    spec = FeatureSpec.from_dict(yaml.safe_load(block.group(1))["data"]["features"])
    assert spec.fitted_kinds == ("hmm_regime",)


def test_portfolios_refuse_hmm_regime_with_a_clear_error():
    frames = [regime_switching(600, seed=s) for s in (1, 2)]
    for f, sym in zip(frames, ("AAA/USD", "BBB/USD"), strict=True):
        f.attrs["symbol"] = sym
    with pytest.raises(ConfigError, match="not supported for portfolios"):
        prepare_portfolio(frames, _spec())
