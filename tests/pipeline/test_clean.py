"""Cleaning: explicit policies for order, duplicates, invalid rows and gaps, all reported."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coinrl.pipeline.clean import CleanConfig, CleanReport, infer_timeframe, preprocess_data
from coinrl.pipeline.config import validate_config
from coinrl.pipeline.errors import ConfigError, DataError

HOUR = 3_600_000
T0 = 1_609_459_200_000  # 2021-01-01T00:00Z


def bars(n: int = 6, start: int = T0, step: int = HOUR, seed: int = 0) -> pd.DataFrame:
    """n valid hourly bars: a random walk with consistent OHLC."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.r_[100.0, close[:-1]]
    high = np.maximum(open_, close) * 1.002
    low = np.minimum(open_, close) * 0.998
    df = pd.DataFrame(
        {
            "ts_ms": start + step * np.arange(n, dtype=np.int64),
            "open": open_, "high": high, "low": low, "close": close,
            "volume": rng.uniform(1, 10, n),
        }
    )
    df.attrs["source"] = "test.csv"
    return df


def report(df: pd.DataFrame) -> dict:
    return df.attrs["clean_report"]


def test_clean_input_passes_through_unchanged() -> None:
    raw = bars()
    out = preprocess_data(raw)
    pd.testing.assert_frame_equal(out, raw)
    rep = report(out)
    assert rep["rows_in"] == rep["rows_out"] == 6
    assert rep["timeframe"] == "1h"
    assert not rep["reversed"]
    assert rep["n_gaps"] == 0
    assert out.attrs["source"] == "test.csv"
    assert out.attrs["timeframe"] == "1h"


def test_input_frame_is_not_mutated() -> None:
    raw = bars().iloc[::-1].reset_index(drop=True)
    raw.loc[2, "close"] = np.nan
    before = raw.copy()
    preprocess_data(raw)
    pd.testing.assert_frame_equal(raw, before)


def test_newest_first_input_is_flipped_not_counted_as_unsorted() -> None:
    raw = bars()
    out = preprocess_data(raw.iloc[::-1].reset_index(drop=True))
    pd.testing.assert_frame_equal(out, raw, check_like=False)
    assert report(out)["reversed"] is True
    assert report(out)["n_unsorted_fixed"] == 0


def test_rows_out_of_place_are_sorted_and_counted() -> None:
    raw = bars(8)
    shuffled = raw.iloc[[0, 1, 4, 2, 3, 5, 7, 6]].reset_index(drop=True)
    out = preprocess_data(shuffled)
    pd.testing.assert_frame_equal(out, raw)
    assert report(out)["n_unsorted_fixed"] == 3  # rows 2, 3 and 6 came after a later bar
    assert report(out)["reversed"] is False


def test_identical_duplicates_are_dropped_whatever_the_policy() -> None:
    raw = bars()
    dup = pd.concat([raw, raw.iloc[[2, 4]]], ignore_index=True)
    for policy in ("error", "first", "last"):
        out = preprocess_data(dup, CleanConfig(duplicates=policy))
        pd.testing.assert_frame_equal(out, raw)
        assert report(out)["n_duplicates_identical"] == 2
        assert report(out)["n_duplicates_conflicting"] == 0


def _conflicting() -> pd.DataFrame:
    raw = bars()
    other = raw.iloc[[3]].copy()
    other["close"] *= 1.001
    other["high"] = np.maximum(other["high"], other["close"])
    other["volume"] = 99.0
    return pd.concat([raw, other], ignore_index=True)  # the second bar at ts[3] comes last


def test_conflicting_duplicates_error_names_count_time_and_option() -> None:
    with pytest.raises(DataError) as info:
        preprocess_data(_conflicting(), CleanConfig(duplicates="error"))
    msg = str(info.value)
    assert "test.csv has 1 conflicting duplicate" in msg
    assert "2021-01-01T03:00:00Z" in msg
    assert "duplicates='last'" in msg


@pytest.mark.parametrize(("policy", "volume"), [("first", None), ("last", 99.0)])
def test_conflicting_duplicates_keep_first_or_last_in_input_order(policy: str, volume: float | None) -> None:
    raw = _conflicting()
    out = preprocess_data(raw, CleanConfig(duplicates=policy))
    assert len(out) == 6
    assert out["ts_ms"].is_unique
    expected = raw.loc[3, "volume"] if volume is None else volume
    assert out.loc[3, "volume"] == expected
    assert report(out)["n_duplicates_conflicting"] == 1


def test_last_means_last_in_input_even_if_an_identical_copy_came_first() -> None:
    raw = bars()
    a = raw.iloc[[1]]
    b = a.assign(volume=42.0)
    data = pd.concat([raw.drop(index=1), a, b, a], ignore_index=True)  # A, B, A at ts[1]
    last = preprocess_data(data, CleanConfig(duplicates="last"))
    first = preprocess_data(data, CleanConfig(duplicates="first"))
    assert last.loc[1, "volume"] == raw.loc[1, "volume"]  # the final A
    assert first.loc[1, "volume"] == raw.loc[1, "volume"]  # the first A
    assert report(last)["n_duplicates_identical"] == 1
    assert report(last)["n_duplicates_conflicting"] == 1


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"close": np.nan}, "not_finite"),
        ({"volume": np.inf}, "not_finite"),
        ({"low": 0.0}, "non_positive_price"),
        ({"high": 50.0}, "high_below_open_close"),
        ({"low": 500.0, "high": 600.0}, "low_above_open_close"),
        ({"volume": -1.0}, "negative_volume"),
    ],
)
def test_invalid_rows_are_dropped_and_counted_by_reason(change: dict, reason: str) -> None:
    raw = bars()
    bad = raw.copy()
    for col, val in change.items():
        bad.loc[2, col] = val
    out = preprocess_data(bad)
    pd.testing.assert_frame_equal(out, raw.drop(index=2).reset_index(drop=True))
    rep = report(out)
    assert rep["n_invalid"][reason] == 1
    assert rep["n_invalid_rows"] == 1
    assert rep["n_gaps"] == 1  # the dropped bar leaves a gap, and it is reported


def test_high_below_low_is_invalid() -> None:
    raw = bars()
    raw.loc[1, ["high", "low"]] = [raw.loc[1, "low"], raw.loc[1, "high"]]
    assert report(preprocess_data(raw))["n_invalid"]["high_below_low"] == 1


def test_invalid_error_policy_names_count_time_and_option() -> None:
    raw = bars()
    raw.loc[4, "open"] = np.nan
    with pytest.raises(DataError, match=r"1 invalid rows \(first at 2021-01-01T04:00:00Z: not_finite") as info:
        preprocess_data(raw, CleanConfig(invalid="error"))
    assert "invalid='drop'" in str(info.value)


def _with_gap() -> pd.DataFrame:
    return bars(8).drop(index=[3, 4, 6]).reset_index(drop=True)  # 2 bars missing, then 1


def test_gaps_are_reported_with_size_and_place() -> None:
    out = preprocess_data(_with_gap())
    rep = report(out)
    assert len(out) == 5
    assert "filled" not in out.columns
    assert (rep["n_gaps"], rep["largest_gap_bars"], rep["first_gap_ts_ms"]) == (2, 2, T0 + 2 * HOUR)
    assert rep["n_filled"] == 0


def test_gap_error_policy_says_how_many_where_and_what_to_pass() -> None:
    with pytest.raises(DataError) as info:
        preprocess_data(_with_gap(), CleanConfig(gaps="error"))
    msg = str(info.value)
    assert "2 gaps (3 missing 1h bars, largest 2" in msg
    assert "2021-01-01T02:00:00Z" in msg
    assert "gaps='ffill'" in msg
    assert "gaps='report'" in msg


def test_ffill_inserts_flat_zero_volume_bars_and_marks_them() -> None:
    raw = _with_gap()
    out = preprocess_data(raw, CleanConfig(gaps="ffill"))
    assert out["ts_ms"].tolist() == [T0 + HOUR * i for i in range(8)]
    assert out["filled"].tolist() == [False, False, False, True, True, False, True, False]
    filled = out[out["filled"]]
    prev_close = out["close"].shift(1)[out["filled"]]
    # A filled bar sits at the previous close (which for a run of fills is the last real close).
    assert (filled["open"] == prev_close).all()
    assert (filled["close"] == prev_close).all()
    assert (filled["high"] == filled["low"]).all()
    assert (filled["volume"] == 0).all()
    assert filled["close"].tolist() == [raw.loc[2, "close"]] * 2 + [raw.loc[3, "close"]]
    real = out[~out["filled"]].reset_index(drop=True)
    pd.testing.assert_frame_equal(real.drop(columns="filled"), raw)
    assert report(out)["n_filled"] == 3
    assert report(out)["n_gaps"] == 2


def test_ffill_without_gaps_still_adds_the_filled_column() -> None:
    out = preprocess_data(bars(), CleanConfig(gaps="ffill"))
    assert out["filled"].dtype == bool
    assert not out["filled"].any()


def test_empty_frame_is_a_data_error() -> None:
    with pytest.raises(DataError, match="empty"):
        preprocess_data(bars().iloc[:0])


def test_missing_columns_are_listed_with_what_is_expected() -> None:
    with pytest.raises(DataError, match=r"lacks columns \['high', 'volume'\]; expected \['ts_ms'"):
        preprocess_data(bars().drop(columns=["high", "volume"]))
    with pytest.raises(DataError, match="no time column"):
        preprocess_data(bars().drop(columns=["ts_ms"]))


def test_naive_datetimes_are_refused_with_the_fix() -> None:
    raw = bars()
    raw["date"] = pd.to_datetime(raw.pop("ts_ms"), unit="ms")
    with pytest.raises(DataError, match="naive datetimes.*tz_localize"):
        preprocess_data(raw)


def test_tz_aware_date_column_or_index_become_utc_ms() -> None:
    raw = bars()
    dated = raw.drop(columns="ts_ms").assign(
        date=pd.to_datetime(raw["ts_ms"], unit="ms", utc=True).dt.tz_convert("America/New_York")
    )
    out = preprocess_data(dated)
    assert out["ts_ms"].tolist() == raw["ts_ms"].tolist()
    assert "date" not in out.columns
    indexed = raw.drop(columns="ts_ms").set_index(pd.DatetimeIndex(pd.to_datetime(raw["ts_ms"], unit="ms", utc=True)))
    assert preprocess_data(indexed)["ts_ms"].tolist() == raw["ts_ms"].tolist()


def test_bars_off_the_timeframe_grid_are_an_error() -> None:
    raw = bars(10, step=5 * 60_000)
    with pytest.raises(DataError, match="off the 1h grid"):
        preprocess_data(raw, CleanConfig(timeframe="1h"))
    assert report(preprocess_data(raw))["timeframe"] == "5m"


def test_drop_incomplete_last_uses_the_bar_close_time() -> None:
    raw = bars()
    last_open = int(raw["ts_ms"].iloc[-1])
    cfg = CleanConfig(drop_incomplete_last=True)
    still_open = preprocess_data(raw, cfg, now_ms=last_open + HOUR - 1)
    closed = preprocess_data(raw, cfg, now_ms=last_open + HOUR)
    assert len(still_open) == 5
    assert report(still_open)["dropped_incomplete_last"]
    assert len(closed) == 6
    assert not report(closed)["dropped_incomplete_last"]


def test_extra_columns_are_kept_and_nan_in_filled_bars() -> None:
    raw = _with_gap().assign(trades=np.arange(5, dtype=np.int64))
    out = preprocess_data(raw, CleanConfig(gaps="ffill"))
    assert out["trades"].isna().tolist() == out["filled"].tolist()
    assert out.loc[~out["filled"], "trades"].tolist() == [0, 1, 2, 3, 4]


def test_config_rejects_unknown_policies_and_timeframes() -> None:
    with pytest.raises(ConfigError, match="duplicates"):
        validate_config(CleanConfig, {"duplicates": "keep"})
    with pytest.raises(ConfigError, match="timeframe"):
        validate_config(CleanConfig, {"timeframe": "1x"})
    with pytest.raises(ConfigError, match="unknown key"):
        validate_config(CleanConfig, {"dedupe": "last"})


def test_report_is_plain_json_and_summarises_in_one_line() -> None:
    raw = pd.concat([_with_gap(), _with_gap().iloc[[0]]], ignore_index=True).iloc[::-1]
    out = preprocess_data(raw.reset_index(drop=True), CleanConfig(gaps="ffill"))
    rep = report(out)
    json.dumps(rep)
    summary = CleanReport(**rep).summary()
    assert "\n" not in summary
    for part in ("rows 6->8", "reversed", "identical=1", "filled=3", "gaps=2"):
        assert part in summary, summary


def test_infer_timeframe_takes_the_most_common_spacing() -> None:
    ts = np.array([0, 300_000, 600_000, 1_200_000, 1_500_000, 1_500_000])
    assert infer_timeframe(ts) == "5m"
    assert infer_timeframe(ts[::-1]) == "5m"
    assert infer_timeframe(np.array([5])) is None


def test_infer_timeframe_sees_through_heavy_gaps_but_not_a_stray_bar() -> None:
    gappy = HOUR * np.array([0, 2, 4, 6, 7, 9, 10])  # 2h steps outnumber 1h steps
    assert infer_timeframe(gappy) == "1h"
    stray = np.r_[HOUR * np.arange(100), 100 * HOUR + 30 * 60_000]  # one bar at hh:30
    assert infer_timeframe(stray) == "1h"
    with pytest.raises(DataError, match="1 bars off the 1h grid"):
        preprocess_data(
            pd.concat([bars(100), bars(1, start=T0 + 99 * HOUR + 30 * 60_000)], ignore_index=True)
        )


@settings(max_examples=60, deadline=None)
@given(
    order=st.permutations(list(range(12))),
    dup_idx=st.lists(st.integers(0, 11), max_size=6),
    drop_idx=st.sets(st.integers(1, 10), max_size=4),
    conflict=st.booleans(),
)
@pytest.mark.slow
def test_any_shuffle_with_duplicates_comes_out_ascending_unique_and_from_the_input(
    order: list[int], dup_idx: list[int], drop_idx: set[int], conflict: bool
) -> None:
    base = bars(12)
    extra = base.iloc[dup_idx].copy()
    if conflict:
        extra["volume"] += 1.0
    raw = pd.concat([base.drop(index=list(drop_idx)), extra]).reset_index(drop=True)
    raw = raw.iloc[[i for i in order if i < len(raw)] + list(range(12, len(raw)))].reset_index(drop=True)
    out = preprocess_data(raw)
    ts = out["ts_ms"].to_numpy()
    assert bool(np.all(np.diff(ts) > 0))
    assert set(ts) == set(raw["ts_ms"])
    rep = report(out)
    assert rep["rows_out"] == len(out) == raw["ts_ms"].nunique()
    assert rep["rows_in"] - rep["rows_out"] == rep["n_duplicates_identical"] + rep["n_duplicates_conflicting"]
    # Every output row is one of the input rows.
    merged = out.merge(raw, on=list(out.columns), how="left", indicator=True)
    assert (merged["_merge"] == "both").all()
