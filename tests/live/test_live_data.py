"""get_live_data / LiveDataFeed over the emulator: closed candles only, featured exactly as the
backtest features the same candles (bit for bit); gaps, stale data and revised candles are refused."""

from __future__ import annotations

import numpy as np
import pytest
from live_helpers import SPEC, SYMBOL, candles, emulator, public

from coinrl.live.data import LiveDataFeed, get_live_data
from coinrl.pipeline.errors import DataError
from coinrl.pipeline.splits import market_data_from_spec, prepare_data_for_model

HOUR = 3_600_000
K = 200
FRAME = candles(K + 20, seed=4)


@pytest.fixture(scope="module")
def prepared():
    return prepare_data_for_model(candles(600, seed=2), spec=SPEC)


def test_only_closed_candles_featured_like_the_backtest(prepared):
    with emulator(FRAME, K) as (server, clock):
        clock.set(int(FRAME.ts_ms.iloc[K]) + HOUR // 2)  # bar K is open, half done
        md = get_live_data(SYMBOL, "1h", client=public(server), spec=prepared.spec,
                           normaliser=prepared.normaliser, window=8, history_bars=150)
    assert int(md.ts_ms[-1]) == int(FRAME.ts_ms.iloc[K - 1])  # the open bar is not there
    # the backtest's featuring of the same 150 closed candles, bit for bit
    same = FRAME.iloc[K - 150:K].reset_index(drop=True)
    same.attrs = dict(FRAME.attrs)
    ref = market_data_from_spec(same, prepared.spec, prepared.normaliser)
    np.testing.assert_array_equal(md.ts_ms, ref.ts_ms)
    np.testing.assert_array_equal(md.features, ref.features)


def test_stale_data_is_refused(prepared):
    end = int(FRAME.ts_ms.iloc[-1])
    with emulator(FRAME, K) as (server, clock):
        clock.set(end + 4 * HOUR)  # the feed ended 3+ bars ago
        with pytest.raises(DataError, match="stale"):
            get_live_data(SYMBOL, "1h", client=public(server), spec=prepared.spec,
                          normaliser=prepared.normaliser, window=8, history_bars=150)


def test_a_gap_in_the_candles_is_refused(prepared):
    gapped = FRAME.drop(index=[K - 10]).reset_index(drop=True)
    with emulator(gapped, K - 1) as (server, _):
        with pytest.raises(DataError, match="gap"):
            get_live_data(SYMBOL, "1h", client=public(server), spec=prepared.spec,
                          normaliser=prepared.normaliser, window=8, history_bars=150)


def test_the_feed_extends_bar_by_bar_and_matches_a_fresh_fetch(prepared):
    with emulator(FRAME, K) as (server, clock):
        client = public(server)
        feed = LiveDataFeed(client, SYMBOL, "1h", spec=prepared.spec,
                            normaliser=prepared.normaliser, window=8, history_bars=150)
        first = feed.update()
        for _ in range(3):
            clock.advance(HOUR)
            snap = feed.update()
        fresh = get_live_data(SYMBOL, "1h", client=client, spec=prepared.spec,
                              normaliser=prepared.normaliser, window=8, history_bars=153)
    assert snap.last_bar_ts_ms == first.last_bar_ts_ms + 3 * HOUR
    n = len(fresh)
    np.testing.assert_allclose(snap.market.features[-n:], fresh.features, rtol=1e-12, atol=1e-12)


def test_default_history_makes_live_features_equal_a_long_backtest(prepared):
    """Exponential indicators remember their first bar: a feed started at the minimum warm-up
    differs from a backtest that saw a long history; the default history (1,000 bars) does not."""
    long_frame = candles(1_400, seed=9)
    k = 1_300
    with emulator(long_frame, k) as (server, _):
        client = public(server)
        md = get_live_data(SYMBOL, "1h", client=client, spec=prepared.spec,
                           normaliser=prepared.normaliser, window=8)
        short = get_live_data(SYMBOL, "1h", client=client, spec=prepared.spec,
                              normaliser=prepared.normaliser, window=8,
                              history_bars=prepared.spec.warmup_bars + 10)
    full = long_frame.iloc[:k].reset_index(drop=True)
    full.attrs = dict(long_frame.attrs)
    ref = market_data_from_spec(full, prepared.spec, prepared.normaliser)  # all 1,300 bars
    last = 8
    assert int(md.ts_ms[-1]) == int(ref.ts_ms[-1])
    np.testing.assert_array_equal(md.features[-last:], ref.features[-last:])  # float32, exact
    # the control: the minimum warm-up alone is measurably off (so this test can fail)
    assert np.abs(short.features[-last:] - ref.features[-last:]).max() > 1e-6
