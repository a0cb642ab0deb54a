"""Splits and normalisation: chronological, disjoint, embargoed, fitted on train only, and the
live replay path rebuilds the very rows training saw."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coinrl.pipeline.config import validate_config
from coinrl.pipeline.dataset import MarketData
from coinrl.pipeline.errors import ConfigError, DataError
from coinrl.pipeline.features import FeatureSpec, default_feature_spec, feature_engineering
from coinrl.pipeline.splits import (
    Fold,
    Normaliser,
    NormConfig,
    SplitConfig,
    candles_fingerprint,
    make_market_data,
    market_data_from_spec,
    prepare_data_for_model,
    split_bounds,
    walk_forward_folds,
)
from coinrl.pipeline.synthetic import gbm, planted_pattern, regime_switching

SMALL_SPEC = {"features": [{"kind": "returns", "horizons": [1, 4]}, {"kind": "rsi", "window": 5}]}


# --------------------------------------------------------------------------- configs


@pytest.mark.parametrize(
    ("data", "hint"),
    [
        ({"train": 0.7, "validation": 0.2, "test": 0.2}, "must sum to 1"),
        ({"train": 0.0, "validation": 0.5, "test": 0.5}, "train must be > 0"),
        ({"train": 1.2, "validation": -0.1, "test": -0.1}, "train:"),
        ({"embargo_bars": -1}, "embargo_bars:"),
        (
            {"walk_forward_folds": 3, "train": 0.8, "validation": 0.2, "test": 0.0},
            "test must be > 0",
        ),
        ({"walk_forward_mode": "sliding"}, "walk_forward_mode:"),
        ({"folds": 3}, "folds: unknown key"),
    ],
)
def test_bad_split_configs_raise_config_error(data, hint):
    with pytest.raises(ConfigError, match=hint):
        validate_config(SplitConfig, data)


def test_bad_norm_config_raises_config_error():
    with pytest.raises(ConfigError, match="method:"):
        validate_config(NormConfig, {"method": "minmax"})
    with pytest.raises(ConfigError, match="clip:"):
        validate_config(NormConfig, {"clip": 0})


# --------------------------------------------------------------------------- folds


def test_single_split_hand_checked():
    cfg = SplitConfig(train=0.6, validation=0.2, test=0.2, embargo_bars=2)
    f = split_bounds(100, cfg)
    # usable = 100 - 2*2 = 96; val = test = floor(0.2*96) = 19; train takes the rest (58).
    assert (f.train, f.validation, f.test) == (range(0, 58), range(60, 79), range(81, 100))
    no_val = split_bounds(100, SplitConfig(train=0.8, validation=0.0, test=0.2, embargo_bars=3))
    # Only one gap: train | 3 | test over 97 usable rows.
    assert (no_val.train, no_val.validation, no_val.test) == (
        range(0, 78),
        range(78, 78),
        range(81, 100),
    )
    assert split_bounds(
        10, SplitConfig(train=1.0, validation=0.0, test=0.0, embargo_bars=5)
    ).train == range(0, 10)


def test_walk_forward_folds_hand_checked():
    base = {
        "train": 0.6,
        "validation": 0.2,
        "test": 0.2,
        "embargo_bars": 2,
        "walk_forward_folds": 3,
    }
    # Window W satisfies W + 2*n_test = 100 with n_test = 0.2 * (W - 4): n_test = n_val = 13,
    # train 44; the test blocks tile [61, 100).
    rolling = walk_forward_folds(100, SplitConfig(**base, walk_forward_mode="rolling"))
    assert rolling == [
        Fold(0, range(0, 44), range(46, 59), range(61, 74)),
        Fold(1, range(13, 57), range(59, 72), range(74, 87)),
        Fold(2, range(26, 70), range(72, 85), range(87, 100)),
    ]
    anchored = walk_forward_folds(100, SplitConfig(**base, walk_forward_mode="anchored"))
    assert [f.train for f in anchored] == [range(0, 44), range(0, 57), range(0, 70)]
    assert [(f.validation, f.test) for f in anchored] == [(f.validation, f.test) for f in rolling]
    assert walk_forward_folds(100, SplitConfig()) == []


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 5_000),
    val=st.sampled_from([0.0, 0.1, 0.15, 0.25]),
    test=st.sampled_from([0.05, 0.15, 0.2, 0.3]),
    embargo=st.integers(0, 50),
    k=st.integers(0, 8),
    mode=st.sampled_from(["anchored", "rolling"]),
)
@pytest.mark.slow
def test_folds_are_ordered_disjoint_embargoed_and_tile_the_end(n, val, test, embargo, k, mode):
    cfg = SplitConfig(
        train=round(1 - val - test, 10),
        validation=val,
        test=test,
        embargo_bars=embargo,
        walk_forward_folds=k,
        walk_forward_mode=mode,
    )
    try:
        folds = walk_forward_folds(n, cfg) if k else [split_bounds(n, cfg)]
    except DataError:
        assert n < 20 * (embargo + 1) * max(k, 1)  # only refused when plainly too short
        return
    assert len(folds) == max(k, 1)
    for f in folds:
        assert 0 <= f.train.start < f.train.stop
        assert len(f.test) >= 1
        if val > 0:
            assert len(f.validation) >= 1
            assert f.validation.start - f.train.stop == embargo
            assert f.test.start - f.validation.stop == embargo
        else:
            assert f.test.start - f.train.stop == embargo
        assert f.test.stop <= n
        if mode == "anchored":
            assert f.train.start == 0
    assert folds[-1].test.stop == n
    for a, b in zip(folds, folds[1:], strict=False):
        assert b.test.start == a.test.stop  # test blocks are contiguous and disjoint
        assert b.train.stop > a.train.stop
        if mode == "rolling":
            assert len(b.train) == len(a.train)
    if k == 0:
        f = folds[0]
        assert f.train.start == 0
        assert len(f.train) + len(f.validation) + len(f.test) == n - embargo * (2 if val > 0 else 1)


def test_too_few_rows_is_a_data_error():
    with pytest.raises(DataError, match="too few"):
        split_bounds(10, SplitConfig(embargo_bars=4))
    with pytest.raises(DataError, match="too few"):
        prepare_data_for_model(gbm(200), SMALL_SPEC, {"embargo_bars": 80})


# --------------------------------------------------------------------------- normaliser


def test_zscore_robust_and_none_statistics():
    rng = np.random.default_rng(0)
    x = np.column_stack([rng.normal(3.0, 2.0, 10_000), rng.standard_t(3, 10_000)])
    z = Normaliser.fit(x, ["a", "b"], NormConfig(method="zscore", clip=None))
    np.testing.assert_allclose(z.center, x.mean(axis=0))
    np.testing.assert_allclose(z.scale, x.std(axis=0))
    out = z.transform(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=0), 1.0, atol=1e-5)
    r = Normaliser.fit(x, ["a", "b"], {"method": "robust"})
    q75, q25 = np.percentile(x, [75, 25], axis=0)
    np.testing.assert_allclose(r.center, np.median(x, axis=0))
    np.testing.assert_allclose(r.scale, (q75 - q25) / 1.349)
    assert np.abs(r.transform(x)).max() == pytest.approx(5.0)  # clipped at the default 5
    nn = Normaliser.fit(x, ["a", "b"], {"method": "none", "clip": None})
    np.testing.assert_allclose(nn.transform(x), x.astype(np.float32))


def test_zero_spread_feature_is_centred_not_blown_up():
    x = np.column_stack([np.full(100, 0.25), np.arange(100.0)])
    n = Normaliser.fit(x, ["const", "ramp"])
    assert n.scale[0] == 1.0
    out = n.transform(np.array([[0.25, 50.0], [0.75, 50.0]]))
    assert np.isfinite(out).all()
    assert out[0, 0] == 0.0
    assert out[1, 0] == pytest.approx(0.5)


def test_normaliser_round_trips_through_json():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 3)) * [1e-3, 2.0, 50.0] + [0.1, -3.0, 7.0]
    n = Normaliser.fit(x, ["a", "b", "c"], {"method": "robust", "clip": 3.0})
    back = Normaliser.from_dict(json.loads(json.dumps(n.to_dict())))
    np.testing.assert_array_equal(back.transform(x), n.transform(x))
    assert back.fingerprint() == n.fingerprint()
    assert back.names == ("a", "b", "c")
    other = Normaliser.fit(x[:400], ["a", "b", "c"], {"method": "robust", "clip": 3.0})
    assert other.fingerprint() != n.fingerprint()


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.pop("scale"),
        lambda d: d.update(scale=[1.0, 0.0]),
        lambda d: d.update(names=["a"]),
        lambda d: d.update(method="minmax"),
        lambda d: d.update(format="sklearn"),
    ],
)
def test_malformed_normaliser_dict_is_a_config_error(mutate):
    d = Normaliser.fit(np.random.default_rng(0).normal(size=(50, 2)), ["a", "b"]).to_dict()
    mutate(d)
    with pytest.raises(ConfigError):
        Normaliser.from_dict(d)


def test_transform_checks_shape_and_values():
    n = Normaliser.fit(np.random.default_rng(0).normal(size=(50, 2)), ["a", "b"])
    with pytest.raises(DataError, match=r"\(rows, 2\)"):
        n.transform(np.zeros((5, 3)))
    with pytest.raises(DataError, match="NaN"):
        n.transform(np.array([[np.nan, 0.0]]))
    assert n.transform(np.array([0.0, 0.0])).shape == (2,)  # one live row


# --------------------------------------------------------------------------- prepare


def _level_shift_market() -> pd.DataFrame:
    """Candles with a pass-through ``level`` column: ~N(0,1) early, ~N(50,1) in the last 30 %."""
    df = gbm(4_000, seed=3)
    rng = np.random.default_rng(3)
    level = rng.normal(0.0, 1.0, len(df))
    level[int(0.7 * len(df)) :] += 50.0
    df["level"] = level
    return df


def test_normaliser_is_fitted_on_the_train_rows_only():
    df = _level_shift_market()
    spec = {"features": [{"kind": "returns", "horizons": [1]}, {"kind": "column", "name": "level"}]}
    p = prepare_data_for_model(
        df, spec, {"train": 0.6, "validation": 0.1, "test": 0.3, "embargo_bars": 5}
    )
    j = p.spec.feature_names.index("level")
    train_raw = p.raw_features[p.main_fold.train.start : p.main_fold.train.stop, j]
    assert p.normaliser.center[j] == pytest.approx(train_raw.mean(), rel=1e-12)
    assert p.normaliser.scale[j] == pytest.approx(train_raw.std(), rel=1e-12)
    full_mean = p.raw_features[:, j].mean()
    assert abs(p.normaliser.center[j] - full_mean) > 5.0  # what fitting on everything would give
    # Train looks standardised; the shifted test part is not (and clips at +5).
    tr = p.train.features[:, j]
    assert abs(tr.mean()) < 1e-3
    assert tr.std() == pytest.approx(1.0, abs=1e-3)
    assert np.all(p.test.features[:, j] == pytest.approx(5.0))


def test_prepared_parts_are_aligned_ordered_embargoed_market_data():
    df = regime_switching(3_000, seed=4)
    df.attrs["exchange"] = "bitstamp"
    spec = default_feature_spec()
    split = SplitConfig(embargo_bars=7)
    p = prepare_data_for_model(df, spec, split)
    w = spec.warmup_bars
    assert p.warmup_rows_dropped == w
    assert len(p.full) == len(df) - w
    frame = feature_engineering(df, spec)
    tf_ms = 3_600_000
    parts = {"train": p.train, "validation": p.validation, "test": p.test}
    for name, md in parts.items():
        assert isinstance(md, MarketData)
        rows = p.main_fold.parts()[name]
        assert len(md) == len(rows)
        assert md.features.dtype == np.float32
        assert md.feature_names == spec.feature_names
        assert (md.symbol, md.timeframe, md.exchange) == ("SYN/USD", "1h", "bitstamp")
        assert md.meta["split"] == name
        assert md.meta["data_fingerprint"] == p.data_fingerprint
        assert md.meta["normaliser_fingerprint"] == p.normaliser.fingerprint()
        assert md.funding_rate is None
        # Row i of the part is candle w + rows.start + i, and its features are that bar's.
        c0 = w + rows.start
        np.testing.assert_array_equal(md.ts_ms, df["ts_ms"].to_numpy()[c0 : c0 + len(md)])
        np.testing.assert_array_equal(md.close, df["close"].to_numpy()[c0 : c0 + len(md)])
        np.testing.assert_array_equal(md.high, df["high"].to_numpy()[c0 : c0 + len(md)])
        want = p.normaliser.transform(
            frame[list(spec.feature_names)].to_numpy()[rows.start : rows.stop]
        )
        np.testing.assert_array_equal(md.features, want)
    # Chronological with exactly embargo_bars bars dropped in between.
    assert p.validation.ts_ms[0] - p.train.ts_ms[-1] == (split.embargo_bars + 1) * tf_ms
    assert p.test.ts_ms[0] - p.validation.ts_ms[-1] == (split.embargo_bars + 1) * tf_ms
    assert len(p.train) + len(p.validation) + len(p.test) == len(p.full) - 2 * split.embargo_bars


def test_data_fingerprint_is_sha256_of_the_candle_arrays():
    df = gbm(500, seed=1)
    h = hashlib.sha256()
    for col, dt in (
        ("ts_ms", "<i8"),
        ("open", "<f8"),
        ("high", "<f8"),
        ("low", "<f8"),
        ("close", "<f8"),
        ("volume", "<f8"),
    ):
        h.update(col.encode())
        h.update(df[col].to_numpy().astype(dt).tobytes())
    assert candles_fingerprint(df) == h.hexdigest()
    assert prepare_data_for_model(df, SMALL_SPEC).data_fingerprint == h.hexdigest()
    changed = df.copy()
    changed.loc[123, "close"] *= 1.0000001
    assert candles_fingerprint(changed) != h.hexdigest()


def test_funding_rate_column_is_carried():
    df = gbm(600, seed=2)
    df["funding_rate"] = np.where(np.arange(600) % 8 == 0, 1e-4, 0.0)
    p = prepare_data_for_model(df, SMALL_SPEC)
    w = p.warmup_rows_dropped
    np.testing.assert_array_equal(p.full.funding_rate, df["funding_rate"].to_numpy()[w:])
    start = p.main_fold.test.start
    np.testing.assert_array_equal(p.test.funding_rate, df["funding_rate"].to_numpy()[w + start :])
    df.loc[300, "funding_rate"] = np.nan
    with pytest.raises(DataError, match="funding_rate"):
        prepare_data_for_model(df, SMALL_SPEC)


def test_fold_data_refits_the_normaliser_on_each_fold_train():
    df = _level_shift_market()
    spec = {"features": [{"kind": "column", "name": "level"}]}
    p = prepare_data_for_model(df, spec, {"walk_forward_folds": 3, "walk_forward_mode": "rolling"})
    assert len(p.folds) == 3
    for i, fold in enumerate(p.folds):
        fd = p.fold_data(i)
        train_raw = p.raw_features[fold.train.start : fold.train.stop, 0]
        assert fd.normaliser.center[0] == pytest.approx(train_raw.mean())
        assert len(fd.train) == len(fold.train)
        assert fd.test.meta["split"] == "test"
        assert fd.test.meta["fold"] == i
        np.testing.assert_array_equal(fd.test.ts_ms, p.full.ts_ms[fold.test.start : fold.test.stop])
    with pytest.raises(ConfigError):
        p.fold_data(3)


def test_live_replay_from_saved_spec_and_normaliser_matches_training_rows():
    df = planted_pattern(3_000, seed=6)
    spec = FeatureSpec.from_dict(
        {
            "features": [
                *default_feature_spec().to_dict()["features"],
                {"kind": "column", "name": "signal"},
            ]
        }
    )
    p = prepare_data_for_model(df, spec)
    # What a bundle stores and what live trading loads back.
    spec_live = FeatureSpec.from_yaml(p.spec.to_yaml())
    norm_live = Normaliser.from_dict(json.loads(json.dumps(p.normaliser.to_dict())))
    k = 40
    recent = df.iloc[-(spec_live.warmup_bars + k) :].reset_index(drop=True)
    live = market_data_from_spec(recent, spec_live, norm_live)
    assert len(live) == k
    np.testing.assert_array_equal(live.ts_ms, p.full.ts_ms[-k:])
    np.testing.assert_allclose(live.features, p.full.features[-k:], atol=1e-4)
    assert live.meta["split"] == "live"
    # make_market_data with a precomputed frame is the same path.
    again = make_market_data(recent, feature_engineering(recent, spec_live), norm_live)
    np.testing.assert_array_equal(again.features, live.features)


def test_live_replay_refuses_a_mismatched_spec_or_frame():
    df = gbm(1_000, seed=7)
    p = prepare_data_for_model(df, SMALL_SPEC)
    with pytest.raises(DataError, match="differ from the normaliser"):
        market_data_from_spec(df, default_feature_spec(), p.normaliser)
    frame = feature_engineering(df, SMALL_SPEC).drop(columns=["rsi_5"])
    with pytest.raises(DataError, match="rsi_5"):
        make_market_data(df, frame, p.normaliser)
    other = feature_engineering(gbm(1_000, seed=7, start_ts_ms=0), SMALL_SPEC)
    with pytest.raises(DataError, match="does not line up"):
        make_market_data(df, other, p.normaliser)


SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"  # /work/shared/data


@pytest.mark.parametrize("name", ["ADA_BTC-5m", "ETH_BTC-5m", "XRP_ETH-5m"])
def test_real_exchange_candles_prepare_cleanly(name):
    path = SHARED_DATA / f"{name}.feather"
    if not path.is_file():
        pytest.skip(f"{path} not available")
    raw = pd.read_feather(path)
    ts_ms = (raw["date"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)
    df = pd.DataFrame({"ts_ms": ts_ms.astype(np.int64)})
    for c in ("open", "high", "low", "close", "volume"):
        df[c] = raw[c].astype(np.float64)
    df.attrs.update(symbol=name.split("-")[0].replace("_", "/"), timeframe="5m")
    p = prepare_data_for_model(df)
    assert np.isfinite(p.full.features).all()
    assert np.abs(p.full.features).max() <= 5.0
    assert p.train.timeframe == "5m"
    # Standardised on train (up to the clipping of fat tails).
    assert np.abs(p.train.features.mean(axis=0)).max() < 0.2
