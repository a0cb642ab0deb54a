"""Walk-forward folds of a portfolio: each fold's normalisers see its own train rows only."""

from __future__ import annotations

import pytest

from coinrl.pipeline.errors import ConfigError
from coinrl.pipeline.portfolio import prepare_portfolio
from coinrl.pipeline.splits import SplitConfig, walk_forward_folds
from coinrl.pipeline.synthetic_assets import correlated_assets

SPEC = {"features": [{"kind": "returns", "horizons": [1, 4]}]}
SPLIT = SplitConfig(train=0.6, validation=0.2, test=0.2, embargo_bars=5, walk_forward_folds=3)


def test_a_fold_uses_its_rows_and_fits_its_normalisers_on_its_train_rows_only() -> None:
    frames = correlated_assets(2, 1200, seed=1)
    f0 = prepare_portfolio(frames, spec=SPEC, split=SPLIT, fold=0)
    f2 = prepare_portfolio(frames, spec=SPEC, split=SPLIT, fold=2)
    single = prepare_portfolio(frames, spec=SPEC, split=SPLIT)
    folds = walk_forward_folds(len(f0.full), SPLIT)
    assert f0.main_fold == folds[0]
    assert f2.main_fold == folds[2]
    assert len(f0.train) == len(folds[0].train)
    assert f2.test.ts_ms[-1] == f0.full.ts_ms[-1]  # the last fold tests up to the end
    assert f0.full.meta["fold"] == 0
    # every candle after fold 0's training rows moves: fold 0's normalisers do not, the single
    # split's (whose train rows reach further) do
    cut = int(f0.full.ts_ms[folds[0].train.stop])
    moved = []
    for f in frames:
        g = f.copy()
        late = g["ts_ms"] >= cut
        for col in ("open", "high", "low", "close"):
            g.loc[late, col] = g.loc[late, col] * 1.5
        g.attrs = dict(f.attrs)
        moved.append(g)
    g0 = prepare_portfolio(moved, spec=SPEC, split=SPLIT, fold=0)
    assert [n.fingerprint() for n in g0.normalisers] == [n.fingerprint() for n in f0.normalisers]
    g_single = prepare_portfolio(moved, spec=SPEC, split=SPLIT)
    assert [n.fingerprint() for n in g_single.normalisers] != [n.fingerprint() for n in single.normalisers]


def test_a_fold_that_does_not_exist_is_a_config_error() -> None:
    frames = correlated_assets(2, 600, seed=1)
    with pytest.raises(ConfigError, match="fold 3 does not exist"):
        prepare_portfolio(frames, spec=SPEC, split=SPLIT, fold=3)
    with pytest.raises(ConfigError, match="walk_forward_folds=0"):
        prepare_portfolio(frames, spec=SPEC, fold=0)
