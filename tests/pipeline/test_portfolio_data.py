"""Several assets on one clock: the real 5-minute feather set, the point-in-time universe,
train-only normalisers, bad inputs naming the asset, and the correlated synthetic generator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from coinrl.pipeline.dataset import PortfolioData
from coinrl.pipeline.errors import DataError
from coinrl.pipeline.portfolio import prepare_portfolio
from coinrl.pipeline.source import PortfolioDataConfig, load_portfolio_dataset
from coinrl.pipeline.synthetic_assets import correlated_assets

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
FEATHERS = tuple(str(DATA / f"{s}_BTC-5m.feather") for s in ("ADA", "ETH", "LTC"))
NO_NORM = {"method": "none", "clip": None}


@pytest.fixture(scope="module")
def feather_set() -> object:
    if not all(Path(p).is_file() for p in FEATHERS):
        pytest.skip(f"shared data missing under {DATA}")
    return load_portfolio_dataset(PortfolioDataConfig(sources=FEATHERS, market_features=True))


def test_three_feather_files_load_as_one_clock_with_masked_gaps(feather_set: object) -> None:
    pp = feather_set
    full: PortfolioData = pp.full  # type: ignore[attr-defined]
    assert full.symbols == ("ADA/BTC", "ETH/BTC", "LTC/BTC")
    assert full.timeframe == "5m"
    assert full.features.shape == (len(full), 3, full.n_features)
    assert np.all(np.diff(full.ts_ms) >= 300_000)
    # ADA/BTC has 5 gaps (its CleanReport says so): masked there, ETH and LTC are not
    ada_off = np.flatnonzero(~full.tradable[:, 0])
    assert len(ada_off) > 0
    assert full.tradable[:, 1:].all()
    # an untradable bar is a flat bar at the last tradable close: no jump from a stale price
    t = int(ada_off[ada_off > 0][0])
    prev = full.close[t - 1, 0]
    for col in (full.open, full.high, full.low, full.close):
        assert col[t, 0] == prev
    assert full.volume[t, 0] == 0.0
    assert np.all(full.features[t, 0] == 0.0)
    # the per-asset normalisers are fitted on the train rows only: z-scored train features
    # have mean ~0 and std ~1 per asset
    tr = pp.train  # type: ignore[attr-defined]
    for a in range(3):
        x = tr.features[tr.tradable[:, a], a].astype(np.float64)
        assert np.abs(x.mean(axis=0)).max() < 0.1
    assert len(pp.normalisers) == 3  # type: ignore[attr-defined]
    assert full.market_feature_names == ("basket_ret_1",)


def _frames(n: int = 800, seed: int = 0) -> list[pd.DataFrame]:
    return correlated_assets(3, n, timeframe="1h", seed=seed)


def test_an_asset_enters_when_its_data_starts() -> None:
    frames = _frames()
    late = frames[2].iloc[400:].reset_index(drop=True)
    late.attrs = dict(frames[2].attrs)
    pp = prepare_portfolio([frames[0], frames[1], late], norm=NO_NORM, norm_scope="pooled")
    full = pp.full
    first_ts = int(late["ts_ms"].iloc[0])
    before = full.ts_ms < first_ts
    assert before.any()
    assert not full.tradable[before, 2].any()
    assert np.all(full.features[before, 2] == 0.0)
    # tradable once past its own warm-up
    warm = pp.spec.warmup_bars
    start = int(np.searchsorted(full.ts_ms, first_ts))
    assert not full.tradable[start : start + warm, 2].any()
    assert full.tradable[start + warm :, 2].all()


def test_a_late_asset_without_training_rows_needs_pooled_scaling_and_is_named() -> None:
    frames = _frames(1200)
    late = frames[1].iloc[900:].reset_index(drop=True)
    late.attrs = dict(frames[1].attrs)
    with pytest.raises(DataError, match="SYN1/USD.*pooled"):
        prepare_portfolio([frames[0], late])
    pp = prepare_portfolio([frames[0], late], norm_scope="pooled")
    assert len(pp.normalisers) == 1


def test_features_at_or_before_t_ignore_every_asset_after_t() -> None:
    """No look-ahead across assets: later candles of ANY asset change nothing up to t."""
    frames = _frames(600)
    full = prepare_portfolio(frames, norm=NO_NORM, market_features=True).full
    cut = 450
    short = []
    for f in frames:
        g = f.iloc[:cut].copy()
        g.attrs = dict(f.attrs)
        short.append(g)
    part = prepare_portfolio(short, norm=NO_NORM, market_features=True).full
    n = len(part)
    assert np.array_equal(full.features[:n], part.features)
    assert np.array_equal(full.market_features[:n], part.market_features)
    assert np.array_equal(full.tradable[:n], part.tradable)
    assert np.array_equal(full.close[:n], part.close)


def test_assets_on_different_timeframes_are_refused_naming_the_asset() -> None:
    frames = _frames()
    other = correlated_assets(1, 800, timeframe="4h", seed=1)[0]
    other.attrs["symbol"] = "ODD/USD"
    with pytest.raises(DataError, match="ODD/USD is on timeframe 4h"):
        prepare_portfolio([frames[0], other])


def test_an_asset_with_no_overlap_is_refused_naming_it() -> None:
    near = correlated_assets(2, 600, seed=0)
    far = correlated_assets(1, 600, seed=1, start_ts_ms=1_700_000_000_000)[0]
    far.attrs["symbol"] = "FAR/USD"
    with pytest.raises(DataError, match=r"^FAR/USD \(.*no bar overlaps"):
        prepare_portfolio([*near, far])


def test_one_source_is_a_one_asset_portfolio() -> None:
    pp = load_portfolio_dataset(PortfolioDataConfig())
    assert pp.full.n_assets == 1
    assert pp.full.tradable.all()


def test_correlated_assets_are_seeded_correlated_and_carry_the_planted_lead_lag() -> None:
    a = correlated_assets(4, 20_000, seed=3, lead_lag=(0, 2, 0.3))
    b = correlated_assets(4, 20_000, seed=3, lead_lag=(0, 2, 0.3))
    for x, y in zip(a, b, strict=True):
        pd.testing.assert_frame_equal(x, y)
    r = np.stack([np.diff(np.log(f["close"].to_numpy())) for f in a], axis=1)
    c = np.corrcoef(r.T)
    assert c[1, 3] > 0.3  # the common factor
    lead = np.corrcoef(r[:-1, 0], r[1:, 2])[0, 1]
    noise = np.corrcoef(r[:-1, 1], r[1:, 3])[0, 1]
    assert lead > 0.1  # planted: asset 2 follows asset 0's last return
    assert abs(noise) < 0.03  # not planted: about 0 (4 standard errors at n = 20,000)
    plain = correlated_assets(4, 20_000, seed=3)
    rp = np.stack([np.diff(np.log(f["close"].to_numpy())) for f in plain], axis=1)
    assert abs(np.corrcoef(rp[:-1, 0], rp[1:, 2])[0, 1]) < 0.03


def test_symbols_are_looked_up_in_the_stored_catalog(tmp_path: Path) -> None:
    from coinrl.pipeline.store import store_data

    for f in correlated_assets(2, 600, seed=5):
        store_data(f, tmp_path / f"{f.attrs['symbol'].replace('/', '_')}_1h.parquet")
    cfg = PortfolioDataConfig(symbols=("SYN1/USD", "SYN0/USD"), data_dir=str(tmp_path), timeframe="1h")
    pp = load_portfolio_dataset(cfg)
    assert pp.full.symbols == ("SYN1/USD", "SYN0/USD")
    with pytest.raises(DataError, match="NOPE/USD on 1h is not stored"):
        load_portfolio_dataset(cfg.model_copy(update={"symbols": ("SYN0/USD", "NOPE/USD")}))
