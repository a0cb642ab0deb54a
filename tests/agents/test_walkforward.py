"""Walk-forward: per-fold normalisation and retraining, stitched out-of-sample results, summaries."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from coinrl.agents.backtest import BacktestResult, simulate_trading_strategy
from coinrl.agents.config import TrainConfig
from coinrl.agents.walkforward import (
    SUMMARY_METRICS,
    fold_prepared,
    render_walk_forward_report,
    save_walk_forward,
    summarise,
    walk_forward,
)
from coinrl.envs.config import EnvConfig
from coinrl.pipeline.errors import ConfigError
from coinrl.pipeline.splits import Normaliser, prepare_data_for_model
from coinrl.pipeline.synthetic import planted_pattern

SPEC = {"features": [{"kind": "column", "name": "signal"}, {"kind": "returns", "horizons": [1, 4]}]}
SPLIT = {"train": 0.6, "validation": 0.2, "test": 0.2, "embargo_bars": 8, "walk_forward_folds": 2}


def _rule_results(n_folds: int = 3, seeds: int = 2) -> list[list[BacktestResult]]:
    """Rule strategies standing in for trained agents: ``signal`` sign, seed = a lag."""
    out = []
    series = planted_pattern(700 * n_folds, seed=20)
    for fold in range(n_folds):  # consecutive test blocks, as walk-forward folds are
        candles = series.iloc[fold * 700 : (fold + 1) * 700].reset_index(drop=True)
        candles.attrs = dict(series.attrs)
        sig = np.sign(candles["signal"].to_numpy())
        out.append([
            simulate_trading_strategy(np.r_[np.zeros(s), sig[: len(sig) - s]], candles, n_random=1)
            for s in range(seeds)
        ])
    return out


def test_each_fold_is_normalised_on_its_own_train_rows_only() -> None:
    prepared = prepare_data_for_model(planted_pattern(3000, seed=1), spec=SPEC, split=SPLIT)
    for i, fold in enumerate(prepared.folds):
        fp = fold_prepared(prepared, i)
        tr = fold.train
        expected = Normaliser.fit(prepared.raw_features[tr.start : tr.stop], prepared.spec.feature_names, prepared.norm)
        assert fp.normaliser.fingerprint() == expected.fingerprint()
        assert fp.test.meta["normaliser_fingerprint"] == expected.fingerprint()
        np.testing.assert_array_equal(fp.test.features, expected.transform(prepared.raw_features[fold.test.start : fold.test.stop]))
        np.testing.assert_array_equal(fp.full.features[fold.test.start : fold.test.stop], fp.test.features)
        # ordered, with the embargo between the parts
        assert tr.stop + 8 <= fold.validation.start
        assert fold.validation.stop + 8 <= fold.test.start
    assert prepared.folds[0].test.stop == prepared.folds[1].test.start  # test blocks tile the end
    assert fold_prepared(prepared, 0).normaliser.fingerprint() != prepared.normaliser.fingerprint()


@pytest.mark.slow
def test_summary_means_intervals_verdicts_and_deflated_sharpe() -> None:
    results = _rule_results()
    wf = summarise(results, [0, 1], n_trials=10)
    assert set(wf.summary) == {"agent", "buy_and_hold", "flat", "ma_crossover", "random"}
    tr = wf.metric_matrix("total_return")
    assert tr.shape == (3, 2)
    s = wf.summary["agent"]["total_return"]
    assert s["mean"] == pytest.approx(tr.mean())
    assert s["ci_low"] <= s["mean"] <= s["ci_high"]
    assert set(wf.summary["agent"]) <= set(SUMMARY_METRICS)
    assert [v.baseline for v in wf.verdicts] == ["buy_and_hold", "flat", "ma_crossover", "random"]
    flat = next(v for v in wf.verdicts if v.baseline == "flat")
    assert flat.margin == pytest.approx(tr.mean())
    assert flat.n == 6
    assert wf.stats["n_trials"] == 10.0
    # more trials can only deflate: the DSR is at most the PSR of the same series
    assert wf.stats["dsr_best_seed"] <= wf.stats["psr_best_seed"]
    # stitched out-of-sample equity: each fold continues where the last one ended
    st = wf.stitched_frame()
    assert len(st) == sum(len(r[0].equity_quote) - 1 for r in results) + 1
    assert st["ts_ms"].is_monotonic_increasing
    growth = np.prod([1.0 + row[1].metrics["total_return"] for row in results])
    assert st["agent_seed_1_equity_quote"].iloc[-1] == pytest.approx(growth, rel=1e-9)
    assert sorted(st["fold"].unique()) == [0, 1, 2]
    json.dumps(wf.to_dict(), allow_nan=False)


@pytest.mark.slow
def test_saved_walk_forward_folder_and_report(tmp_path: Path) -> None:
    wf = summarise(_rule_results(2, 2), [0, 1])
    folder = save_walk_forward(wf, tmp_path / "wf")
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["report.html", "runs", "stitched.parquet", "walkforward.json", "walkforward.png"]
    runs = sorted(p.name for p in (folder / "runs").iterdir())
    assert runs == ["fold0_seed0", "fold0_seed1", "fold1_seed0", "fold1_seed1"]
    assert (folder / "runs" / "fold1_seed0" / "fills.parquet").is_file()
    summary = json.loads((folder / "walkforward.json").read_text())
    assert summary["kind"] == "walkforward"
    assert len(summary["runs"]) == 4
    page = (folder / "report.html").read_text()
    assert wf.verdict_lines()[0] in page
    assert "<script src=" not in page
    pd.testing.assert_frame_equal(pd.read_parquet(folder / "stitched.parquet"), wf.stitched_frame())
    (folder / "report.html").unlink()
    assert render_walk_forward_report(folder).is_file()


def test_walk_forward_needs_folds(train_config: Callable[..., TrainConfig]) -> None:
    prepared = prepare_data_for_model(planted_pattern(1500, seed=1), spec=SPEC)
    with pytest.raises(ConfigError, match="walk_forward_folds"):
        walk_forward(prepared, train_config(), EnvConfig(window=8))


@pytest.mark.slow
def test_walk_forward_retrains_each_fold_and_seed_and_tests_out_of_sample(
    train_config: Callable[..., TrainConfig],
) -> None:
    prepared = prepare_data_for_model(planted_pattern(3000, seed=7), spec=SPEC, split=SPLIT)
    env = EnvConfig(window=8, episode_length_bars=128)
    calls: list[tuple[str, int, int]] = []
    cfg = train_config(total_timesteps=512, ppo={"n_steps": 64, "batch_size": 256, "n_epochs": 1})
    wf = walk_forward(prepared, cfg, env, seeds=[3, 4],
                      progress=lambda *a: calls.append(a), experiment_config={"name": "t"})
    assert calls[-1] == ("backtest", 1, 1)
    assert [c for c in calls if c[0] == "train"][-1] == ("train", 4, 4)
    assert wf.n_folds == 2
    assert wf.seeds == [3, 4]
    for i, row in enumerate(wf.results):
        fold = prepared.folds[i]
        fp = fold_prepared(prepared, i)
        for res in row:
            # tested on the fold's test rows only, with the fold's own normaliser
            assert res.meta["start_ts_ms"] == int(prepared.full.ts_ms[fold.test.start + env.window - 1])
            assert res.meta["end_ts_ms"] == int(prepared.full.ts_ms[fold.test.stop - 1])
            assert res.meta["normaliser_fingerprint"] == fp.normaliser.fingerprint()
            assert res.meta["kind"] == "agent"
    # different seeds train different agents
    a, b = wf.results[0]
    assert not np.array_equal(a.rollout.actions, b.rollout.actions)
    assert wf.meta["folds"][1]["test_rows"] == [prepared.folds[1].test.start, prepared.folds[1].test.stop]
    meta: dict[str, Any] = wf.to_dict()["meta"]
    assert meta["embargo_bars"] == 8
