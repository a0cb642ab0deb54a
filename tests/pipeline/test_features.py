"""Features: causal (property-tested per kind), scale-free, equal to ``ta`` where replaced,
replayable from a short tail, and a spec that validates, round-trips and fingerprints."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
import ta
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coinrl.pipeline.errors import ConfigError, DataError
from coinrl.pipeline.features import (
    FEATURE_KINDS,
    FeatureSpec,
    default_feature_spec,
    feature_engineering,
    wilder_atr,
)
from coinrl.pipeline.synthetic import gbm, planted_pattern, regime_switching

# One small spec per kind (short windows keep the hypothesis examples fast).
KIND_SPECS: dict[str, dict] = {
    "returns": {"kind": "returns", "horizons": [1, 3, 7]},
    "sma_ratio": {"kind": "sma_ratio", "windows": [2, 9]},
    "ema_ratio": {"kind": "ema_ratio", "windows": [3, 9]},
    "rsi": {"kind": "rsi", "window": 5},
    "macd": {"kind": "macd", "fast": 3, "slow": 7, "signal": 4},
    "bollinger": {"kind": "bollinger", "window": 6, "dev": 1.5},
    "atr": {"kind": "atr", "window": 5},
    "volatility": {"kind": "volatility", "windows": [3, 10]},
    "volume": {"kind": "volume", "windows": [2, 8]},
    "time": {"kind": "time"},
    "column": {"kind": "column", "name": "signal"},
    # fitted by hand (prepare_data_for_model fits it on train rows; tests/pipeline/test_hmm_regime.py)
    "hmm_regime": {
        "kind": "hmm_regime",
        "n_states": 2,
        "vol_window": 3,
        "window": 6,
        "fitted": {
            "input_center": [0.0, 0.005],
            "input_scale": [0.005, 0.003],
            "transmat": [[0.9, 0.1], [0.2, 0.8]],
            "means": [[0.0, -0.5], [0.2, 1.0]],
            "covars": [[[1.0, 0.0], [0.0, 0.5]], [[2.0, 0.3], [0.3, 1.5]]],
            "train_rows": 100,
        },
    },
}

Compute = Callable[[pd.DataFrame], pd.DataFrame]


def _spec(*entries: dict) -> FeatureSpec:
    return FeatureSpec.from_dict({"features": list(entries)})


def _market(seed: int, n: int, flat: tuple[int, int] | None = None) -> pd.DataFrame:
    """Planted-pattern candles (they carry a ``signal`` column), optionally with a flat,
    zero-volume stretch ``[start, stop)`` like a gap filled by a cleaner."""
    df = planted_pattern(n, timeframe="5m", seed=seed)
    if flat is not None:
        a, b = flat
        price = df["close"].iloc[a - 1] if a > 0 else df["open"].iloc[0]
        for c in ("open", "high", "low", "close"):
            df.loc[a : b - 1, c] = price
        df.loc[a : b - 1, "volume"] = 0.0
    return df


def _perturb_after(df: pd.DataFrame, t: int, seed: int) -> pd.DataFrame:
    """Change every candle after row t (prices, volume, signal), keeping candles valid."""
    rng = np.random.default_rng(seed)
    out = df.copy()
    k = len(df) - t - 1
    factor = np.exp(rng.normal(0.0, 0.05, k))
    for c in ("open", "high", "low", "close"):
        out[c] = np.concatenate([df[c].to_numpy()[: t + 1], df[c].to_numpy()[t + 1 :] * factor])
    vol = df["volume"].to_numpy().copy()
    vol[t + 1 :] = vol[t + 1 :] * np.exp(rng.normal(0.0, 1.0, k)) + rng.random(k)
    out["volume"] = vol
    sig = df["signal"].to_numpy().copy()
    sig[t + 1 :] += rng.normal(0.0, 1.0, k)
    out["signal"] = sig
    return out


def _compare(compute: Compute, df: pd.DataFrame, t: int, seed: int) -> tuple[list[str], bool]:
    """(columns whose values at rows <= t change when bars > t change, whether rows > t changed)."""
    a = compute(df)
    b = compute(_perturb_after(df, t, seed))
    cut = df["ts_ms"].iloc[t]
    past_a, past_b = a[a["ts_ms"] <= cut], b[b["ts_ms"] <= cut]
    leaked = [
        c
        for c in a.columns
        if c != "ts_ms"
        and not np.array_equal(past_a[c].to_numpy(), past_b[c].to_numpy(), equal_nan=True)
    ]
    fut_a, fut_b = a[a["ts_ms"] > cut], b[b["ts_ms"] > cut]
    changed = any(
        not np.array_equal(fut_a[c].to_numpy(), fut_b[c].to_numpy(), equal_nan=True)
        for c in a.columns
        if c != "ts_ms"
    )
    return leaked, changed


def test_every_registered_kind_has_a_causality_case():
    assert set(KIND_SPECS) == set(FEATURE_KINDS)


@pytest.mark.parametrize("kind", sorted(KIND_SPECS))
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_features_at_or_before_t_ignore_every_later_bar(kind, data):
    spec = _spec(KIND_SPECS[kind])
    w = spec.warmup_bars
    n = w + data.draw(st.integers(3, 120), label="rows_after_warmup")
    seed = data.draw(st.integers(0, 2**31 - 1), label="seed")
    flat = None
    if data.draw(st.booleans(), label="flat_stretch"):
        a = data.draw(st.integers(1, n - 2), label="flat_start")
        flat = (a, data.draw(st.integers(a + 1, n), label="flat_stop"))
    df = _market(seed, n, flat)
    t = data.draw(st.integers(w, n - 2), label="t")
    leaked, changed = _compare(lambda d: feature_engineering(d, spec), df, t, seed + 1)
    assert leaked == [], f"{kind}: {leaked} at rows <= t changed when bars > t changed"
    if kind != "time":  # the perturbation must reach the features, or the check proves nothing
        assert changed


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), extra=st.integers(2, 60), frac=st.floats(0.0, 1.0))
def test_default_spec_is_causal(seed, extra, frac):
    spec = default_feature_spec()
    n = spec.warmup_bars + extra
    t = spec.warmup_bars + int(frac * (extra - 2))
    leaked, changed = _compare(lambda d: feature_engineering(d, spec), _market(seed, n), t, seed)
    assert leaked == []
    assert changed


def _leaky_frames() -> dict[str, Compute]:
    def centred(d: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"ts_ms": d["ts_ms"], "x": d["close"].rolling(5, center=True).mean()})

    def ta_ichimoku_visual(d: pd.DataFrame) -> pd.DataFrame:
        # ta pads the shifted "visual" cloud with the WHOLE series' mean: a look-ahead.
        ich = ta.trend.IchimokuIndicator(d["high"], d["low"], 3, 5, 10, visual=True)
        return pd.DataFrame({"ts_ms": d["ts_ms"], "x": ich.ichimoku_a()})

    def next_return(d: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"ts_ms": d["ts_ms"], "x": np.log(d["close"]).diff().shift(-1)})

    return {
        "centred": centred,
        "next_return": next_return,
        "ta_ichimoku_visual": ta_ichimoku_visual,
    }


@pytest.mark.parametrize("name", sorted(_leaky_frames()))
def test_the_causality_check_catches_look_ahead(name):
    leaked, _ = _compare(_leaky_frames()[name], _market(0, 200), 10, 1)
    assert leaked == ["x"]


# --------------------------------------------------------------------------- values


def test_output_shape_names_alignment_and_attrs():
    df = regime_switching(1_500, seed=1)
    df.attrs["exchange"] = "kraken"
    spec = default_feature_spec()
    out = feature_engineering(df, spec)
    w = spec.warmup_bars
    assert list(out.columns) == ["ts_ms", *spec.feature_names]
    assert len(out) == len(df) - w
    np.testing.assert_array_equal(out["ts_ms"].to_numpy(), df["ts_ms"].to_numpy()[w:])
    assert out["ts_ms"].dtype == np.int64
    assert all(out[c].dtype == np.float64 for c in spec.feature_names)
    assert np.isfinite(out[list(spec.feature_names)].to_numpy()).all()
    assert out.attrs["warmup_rows_dropped"] == w
    assert out.attrs["feature_spec_fingerprint"] == spec.fingerprint()
    assert (out.attrs["symbol"], out.attrs["timeframe"], out.attrs["exchange"]) == (
        "SYN/USD",
        "1h",
        "kraken",
    )
    # Hand-checked values: a log return and an SMA ratio at one row.
    c = df["close"].to_numpy()
    i = 700
    row = out.iloc[i - w]
    assert row["ret_log_4"] == pytest.approx(np.log(c[i] / c[i - 4]), rel=1e-12)
    assert row["sma_ratio_10"] == pytest.approx(c[i] / c[i - 9 : i + 1].mean() - 1, rel=1e-9)


def test_features_are_scale_free():
    df = regime_switching(2_000, seed=2)
    scaled = df.copy()
    for col in ("open", "high", "low", "close"):
        scaled[col] = df[col] * 1_000.0
    scaled["volume"] = df["volume"] * 37.0
    a = feature_engineering(df)
    b = feature_engineering(scaled)
    for col in a.columns:
        np.testing.assert_allclose(b[col], a[col], rtol=1e-7, atol=1e-10, err_msg=col)


def test_time_features_encode_utc_hour_and_weekday():
    monday_6am = int(pd.Timestamp("2024-01-01 06:00", tz="UTC").value // 1_000_000)
    df = gbm(30, timeframe="1d", start_ts_ms=monday_6am, seed=0)
    out = feature_engineering(df, _spec({"kind": "time"}))
    assert out["hour_sin"].iloc[0] == pytest.approx(1.0)
    assert out["hour_cos"].iloc[0] == pytest.approx(0.0, abs=1e-12)
    day = 2 * np.pi * (np.arange(30) % 7 + 0.25) / 7  # Monday = 0, plus a quarter day
    np.testing.assert_allclose(out["dow_sin"], np.sin(day), atol=1e-12)
    np.testing.assert_allclose(out["dow_cos"], np.cos(day), atol=1e-12)


def test_features_from_a_short_tail_match_full_history_features():
    """Live trading computes features from the last warmup+k candles only: same values."""
    df = regime_switching(6_000, seed=3)
    spec = default_feature_spec()
    k = 60
    full = feature_engineering(df, spec).iloc[-k:].reset_index(drop=True)
    tail = feature_engineering(df.iloc[-(spec.warmup_bars + k) :].reset_index(drop=True), spec)
    assert len(tail) == k
    np.testing.assert_array_equal(tail["ts_ms"], full["ts_ms"])
    stds = feature_engineering(df, spec)[list(spec.feature_names)].std()
    for col in spec.feature_names:
        err = np.abs(tail[col] - full[col]).max()
        assert err <= 1e-4 * stds[col] + 1e-12, f"{col}: {err} vs std {stds[col]}"


def test_flat_zero_volume_stretch_gives_finite_neutral_values():
    df = _market(5, 1_000, flat=(400, 700))
    out = feature_engineering(df).set_index("ts_ms")
    inside = out.loc[df["ts_ms"].iloc[450] : df["ts_ms"].iloc[699]]
    assert np.isfinite(out.to_numpy()).all()
    np.testing.assert_array_equal(inside["bb_pctb_20_2"], 0.5)
    np.testing.assert_array_equal(inside["bb_width_20_2"], 0.0)
    np.testing.assert_array_equal(inside["ret_log_1"], 0.0)
    np.testing.assert_array_equal(inside["volume_ratio_24"], 0.0)  # zero volume as usual


# --------------------------------------------------------------------------- ta equality


@pytest.mark.parametrize("window", [2, 14, 30])
def test_atr_equals_ta_average_true_range(window):
    df = regime_switching(3_000, seed=window)
    h, lo, c = (df[k] for k in ("high", "low", "close"))
    want = ta.volatility.AverageTrueRange(h, lo, c, window=window).average_true_range().to_numpy()
    got = wilder_atr(h.to_numpy(), lo.to_numpy(), c.to_numpy(), window)
    assert np.isnan(got[: window - 1]).all()  # ta writes zeros there; we leave them undefined
    np.testing.assert_allclose(got[window - 1 :], want[window - 1 :], rtol=1e-10)
    out = feature_engineering(df, _spec({"kind": "atr", "window": window}))
    w = len(df) - len(out)
    np.testing.assert_allclose(out[f"atr_{window}"], want[w:] / c.to_numpy()[w:], rtol=1e-10)


def test_rsi_bollinger_macd_match_ta_definitions():
    df = regime_switching(3_000, seed=9)
    c = df["close"]
    spec = _spec(
        {"kind": "rsi", "window": 14},
        {"kind": "bollinger", "window": 20, "dev": 2.0},
        {"kind": "macd", "fast": 12, "slow": 26, "signal": 9},
    )
    out = feature_engineering(df, spec)
    w = spec.warmup_bars
    cc = c.to_numpy()[w:]
    np.testing.assert_allclose(
        out["rsi_14"], ta.momentum.rsi(c, 14).to_numpy()[w:] / 100, rtol=1e-12
    )
    bb = ta.volatility.BollingerBands(c, 20, 2)
    np.testing.assert_allclose(out["bb_pctb_20_2"], bb.bollinger_pband().to_numpy()[w:], rtol=1e-9)
    np.testing.assert_allclose(
        out["bb_width_20_2"], bb.bollinger_wband().to_numpy()[w:] / 100, rtol=1e-9
    )
    # MACD = EMA12 - EMA26 (recursive EMAs, adjust=False), signal = EMA9 of it, over the close.
    ema = {s: c.ewm(span=s, adjust=False).mean() for s in (12, 26)}
    line = ema[12] - ema[26]
    sig = line.ewm(span=9, adjust=False).mean()
    np.testing.assert_allclose(out["macd_12_26_9"], (line.to_numpy() / c.to_numpy())[w:], rtol=1e-9)
    # ta starts the signal EMA after the line's warm-up; after our warm-up the start is forgotten.
    np.testing.assert_allclose(
        out["macd_signal_12_26_9"], (sig.to_numpy() / c.to_numpy())[w:], rtol=1e-3, atol=1e-9
    )
    assert np.allclose(out["macd_hist_12_26_9"], out["macd_12_26_9"] - out["macd_signal_12_26_9"])
    assert cc.shape[0] == len(out)


def test_rsi_of_a_series_flat_since_its_start_is_neutral_not_100():
    close = np.concatenate([np.full(300, 100.0), 100.0 * np.exp(np.cumsum(np.full(50, 0.001)))])
    df = pd.DataFrame(
        {
            "ts_ms": np.arange(350, dtype=np.int64) * 60_000,
            "open": close,
            "high": close,
            "low": close,
            "close": close,
            "volume": np.ones(350),
        }
    )
    out = feature_engineering(df, _spec({"kind": "rsi", "window": 14}))
    rsi = out["rsi_14"].to_numpy()
    flat_rows = 300 - (350 - len(out))
    np.testing.assert_array_equal(rsi[:flat_rows], 0.5)
    np.testing.assert_array_equal(rsi[flat_rows:], 1.0)  # only up moves since: RSI 100 %


# --------------------------------------------------------------------------- spec


def test_spec_round_trips_through_dict_yaml_and_file(tmp_path):
    spec = default_feature_spec()
    assert FeatureSpec.from_dict(spec.to_dict()) == spec
    assert FeatureSpec.from_yaml(spec.to_yaml()) == spec
    path = tmp_path / "features.yaml"
    path.write_text(spec.to_yaml(), encoding="utf-8")
    loaded = FeatureSpec.load(path)
    assert loaded == spec
    assert loaded.fingerprint() == spec.fingerprint()


def test_fingerprint_is_stable_canonical_and_sensitive():
    short = _spec({"kind": "rsi"}, {"kind": "returns", "horizons": [1, 2]})
    spelled = _spec({"window": 14, "kind": "rsi"}, {"horizons": [1, 2], "kind": "returns"})
    assert short.fingerprint() == spelled.fingerprint()
    # Pinned: a change here means bundles saved earlier no longer match; bump on purpose.
    assert short.fingerprint() == "9739d652a7843fd523b6228902b0c63b339930a13494ff0a7ad219494b7f9339"
    assert (
        _spec({"kind": "rsi", "window": 15}, {"kind": "returns", "horizons": [1, 2]}).fingerprint()
        != short.fingerprint()
    )
    assert (
        _spec({"kind": "returns", "horizons": [1, 2]}, {"kind": "rsi"}).fingerprint()
        != short.fingerprint()
    )


@pytest.mark.parametrize(
    ("entries", "path", "hint"),
    [
        (
            [{"kind": "returns"}, {"kind": "wavelet"}],
            "features.1",
            "does not match any of the expected tags",
        ),
        (
            [{"kind": "sma_ratio", "windows": [10, 1]}],
            "features.0.sma_ratio.windows.1",
            "greater than or equal to 2",
        ),
        ([{"kind": "rsi", "window": "long"}], "features.0.rsi.window", "integer"),
        (
            [{"kind": "macd", "fast": 26, "slow": 12}],
            "features.0.macd",
            "fast (26) must be shorter",
        ),
        ([{"kind": "bollinger", "dev": 0}], "features.0.bollinger.dev", "greater than 0"),
        ([{"kind": "returns", "horizons": [4, 4]}], "features.0.returns.horizons", "unique"),
        ([{"kind": "rsi", "windw": 3}], "features.0.rsi.windw", "unknown key"),
        ([{"kind": "column", "name": "close"}], "features.0.column.name", "raw candle column"),
        ([{"kind": "rsi"}, {"kind": "rsi"}], "<root>", "produced by entries 0 and 1"),
    ],
)
def test_bad_specs_raise_config_error_with_field_path(entries, path, hint):
    with pytest.raises(ConfigError) as exc:
        FeatureSpec.from_dict({"features": entries})
    msg = str(exc.value)
    assert f"{path}:" in msg
    assert hint in msg


def test_empty_or_unknown_top_level_spec_is_rejected():
    with pytest.raises(ConfigError, match="features"):
        FeatureSpec.from_dict({"features": []})
    with pytest.raises(ConfigError, match="unknown key"):
        FeatureSpec.from_dict({"features": [{"kind": "rsi"}], "extra": 1})
    with pytest.raises(ConfigError):
        feature_engineering(gbm(500), {"features": [{"kind": "nope"}]})


# --------------------------------------------------------------------------- bad data


def test_too_few_candles_for_the_warmup():
    spec = default_feature_spec()
    with pytest.raises(DataError, match=f"needs {spec.warmup_bars} warm-up bars"):
        feature_engineering(gbm(spec.warmup_bars), spec)
    assert len(feature_engineering(gbm(spec.warmup_bars + 1), spec)) == 1


def test_bad_candles_raise_data_error():
    df = gbm(300)
    with pytest.raises(DataError, match="lacks columns"):
        feature_engineering(df.drop(columns=["volume"]))
    with pytest.raises(DataError, match="'signal'"):
        feature_engineering(df, _spec({"kind": "column", "name": "signal"}))
    bad = df.copy()
    bad.loc[[100, 101], "ts_ms"] = bad.loc[[101, 100], "ts_ms"].to_numpy()
    with pytest.raises(DataError, match="strictly ascending"):
        feature_engineering(bad)
    bad = df.copy()
    bad.loc[250, "close"] = np.nan
    with pytest.raises(DataError, match="close has 1 non-positive or non-finite"):
        feature_engineering(bad)
    bad = df.copy()
    bad["ts_ms"] = bad["ts_ms"].astype(np.float64)
    with pytest.raises(DataError, match="int64"):
        feature_engineering(bad)


def test_nan_after_warmup_names_the_feature():
    df = planted_pattern(300, seed=1)
    df.loc[200, "signal"] = np.nan
    with pytest.raises(DataError, match="feature 'signal'.*1 NaN/inf"):
        feature_engineering(df, _spec({"kind": "returns"}, {"kind": "column", "name": "signal"}))
    # A NaN inside the declared warm-up is dropped with it.
    df.loc[200, "signal"] = 0.0
    df.loc[3, "signal"] = np.nan
    out = feature_engineering(df, _spec({"kind": "returns"}, {"kind": "column", "name": "signal"}))
    assert np.isfinite(out["signal"]).all()


# --------------------------------------------------------------------------- speed


@pytest.mark.slow
def test_default_spec_on_a_million_one_minute_bars_within_five_seconds():
    df = gbm(1_000_000, timeframe="1m", seed=0)
    t0 = time.perf_counter()
    out = feature_engineering(df)
    elapsed = time.perf_counter() - t0
    assert len(out) == 1_000_000 - default_feature_spec().warmup_bars
    assert elapsed <= 5.0, f"default features on 1M bars took {elapsed:.2f}s"
