"""get_live_data / LiveDataFeed over the emulator: closed candles only, featured exactly as the
backtest features the same candles (bit for bit); gaps and stale data are refused; a bar boundary
passing between the time and candle requests never makes the bar in progress look closed; a
closed candle the exchange revises is replaced and journalled, not a halt forever."""

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


def test_a_bar_boundary_passing_mid_fetch_never_makes_the_bar_in_progress_closed(prepared):
    """The clock jumps a whole bar right after the klines answer (the boundary passes between
    the candle request and the time request): the bar that was in progress when the candles
    were cut (served as open = high = low = close, volume 0) must not be taken as closed."""
    with emulator(FRAME, K) as (server, clock):
        clock.set(int(FRAME.ts_ms.iloc[K]))  # bar K just opened: served as a flat, empty bar
        client = public(server)
        server.faults.clock_jump(HOUR, path_prefix="/api/v3/klines", count=1)
        frame = client.fetch_closed_candles(SYMBOL, "1h", limit=50, max_stale_bars=None)
        assert server.faults.fired().get("clock_jump") == 1
    last = frame.iloc[-1]
    assert int(last["ts_ms"]) == int(FRAME.ts_ms.iloc[K - 1])  # not bar K
    assert float(last["close"]) == float(FRAME.close.iloc[K - 1])


def test_a_feed_mid_session_never_takes_a_flat_in_progress_bar(prepared):
    with emulator(FRAME, K) as (server, clock):
        client = public(server)
        feed = LiveDataFeed(client, SYMBOL, "1h", spec=prepared.spec,
                            normaliser=prepared.normaliser, window=8, history_bars=150)
        feed.update()
        for _ in range(4):
            clock.advance(HOUR)
            server.faults.clock_jump(HOUR, path_prefix="/api/v3/klines", count=1)
            snap = feed.update()
        revisions = feed.revisions_total
    buf = snap.candles.set_index("ts_ms")
    ref = FRAME.set_index("ts_ms").loc[buf.index]
    np.testing.assert_array_equal(buf["close"].to_numpy(), ref["close"].to_numpy())
    assert revisions == 0


def test_a_revised_closed_candle_is_replaced_and_journalled_not_a_halt(prepared, tmp_path):
    from coinrl.live.journal import Journal

    with emulator(FRAME, K) as (server, clock):
        client = public(server)
        feed = LiveDataFeed(client, SYMBOL, "1h", spec=prepared.spec,
                            normaliser=prepared.normaliser, window=8, history_bars=150)
        feed.update()
        corrected = float(FRAME.close.iloc[K - 2]) + 0.5
        server.revise_candle(SYMBOL, int(FRAME.ts_ms.iloc[K - 2]), close=corrected)
        clock.advance(HOUR)
        snap = feed.update()  # was: DataError "revised a closed candle", forever
        clock.advance(HOUR)
        later = feed.update()  # and the session goes on
        revisions = feed.pop_revisions()
    assert later.last_bar_ts_ms == snap.last_bar_ts_ms + HOUR
    buf = later.candles.set_index("ts_ms")
    assert float(buf.loc[int(FRAME.ts_ms.iloc[K - 2]), "close"]) == corrected
    assert [r["bar_ts_ms"] for r in revisions] == [int(FRAME.ts_ms.iloc[K - 2])]
    assert revisions[0]["after"]["close"] == corrected
    # the features are re-derived from the corrected candles
    same = FRAME.iloc[K - 150:K + 2].reset_index(drop=True)
    same.loc[148, "close"] = corrected
    same.attrs = dict(FRAME.attrs)
    ref = market_data_from_spec(same, prepared.spec, prepared.normaliser)
    np.testing.assert_array_equal(later.market.features, ref.features)
    with Journal(tmp_path / "j.sqlite", run_id="rev") as j:  # what the env journals
        for r in revisions:
            j.append("reconciliation", ts_ms=r["server_time_ms"], bar_ts_ms=r["bar_ts_ms"], payload=r)
        assert j.last("reconciliation").payload["what"] == "candle_revised"
