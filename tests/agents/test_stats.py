"""Bootstrap intervals, (deflated) Sharpe ratios and verdicts against known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from coinrl.agents.stats import (
    Verdict,
    block_bootstrap_means,
    block_bootstrap_sums,
    bootstrap_mean_ci,
    data_label,
    deflated_sharpe_from_stats,
    deflated_sharpe_ratio,
    expected_max_sharpe,
    lookahead_warning,
    probabilistic_sharpe_ratio,
    sharpe_stats,
    verdict_from_returns,
    verdict_from_runs,
)
from coinrl.pipeline.errors import DataError


def test_deflated_sharpe_reproduces_bailey_and_lopez_de_prado_worked_example() -> None:
    # "The Deflated Sharpe Ratio" (2014), section 5: annualised SR 2.5 over 1,250 daily
    # returns, 100 trials whose annualised Sharpe ratios vary by 0.5, skew -3, kurtosis 10:
    # SR0 = 0.1132 (daily) and DSR = 0.9004
    sr, var = 2.5 / math.sqrt(250), 0.5 / 250
    assert expected_max_sharpe(100, var) == pytest.approx(0.1132, abs=5e-5)
    assert deflated_sharpe_from_stats(sr, 1250, -3.0, 10.0, 100, var) == pytest.approx(0.9004, abs=5e-4)


def test_more_trials_deflate_more_and_one_trial_is_the_psr() -> None:
    rng = np.random.default_rng(1)
    r = rng.normal(0.0005, 0.01, 2000)
    one = deflated_sharpe_ratio(r, n_trials=1)
    assert one == pytest.approx(probabilistic_sharpe_ratio(r))
    values = [deflated_sharpe_ratio(r, n_trials=n, sharpe_variance=1e-4) for n in (1, 10, 100, 1000)]
    assert values == sorted(values, reverse=True)
    assert values[-1] < values[0]
    assert expected_max_sharpe(1, 1.0) == 0.0


def test_psr_is_near_one_for_skill_and_near_half_for_noise() -> None:
    rng = np.random.default_rng(2)
    assert probabilistic_sharpe_ratio(rng.normal(0.002, 0.01, 3000)) > 0.999
    noise = [probabilistic_sharpe_ratio(rng.normal(0.0, 0.01, 500)) for _ in range(200)]
    # under the null the PSR is uniform: its mean is about 1/2, and about 5 % exceed 0.95
    assert np.mean(noise) == pytest.approx(0.5, abs=0.06)
    assert 0.01 <= np.mean(np.asarray(noise) > 0.95) <= 0.12
    s = sharpe_stats(rng.normal(0.0, 0.01, 500))
    assert s["kurtosis"] == pytest.approx(3.0, abs=0.6)


def test_sharpe_stats_moments_match_scipy() -> None:
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(4)
    r = rng.standard_t(4, 5000) * 0.01 + 0.0003  # fat tails, some skew from the sample
    s = sharpe_stats(r)
    assert s["sharpe_per_bar"] == pytest.approx(r.mean() / r.std(ddof=1), rel=1e-12)
    assert s["skew"] == pytest.approx(float(scipy_stats.skew(r)), rel=1e-9)
    assert s["kurtosis"] == pytest.approx(float(scipy_stats.kurtosis(r, fisher=False)), rel=1e-9)
    assert s["kurtosis"] > 4.0  # t(4) is fat-tailed: the test would notice a normal-only formula
    assert s["n_obs"] == 5000.0


def test_bootstrap_interval_covers_the_true_mean_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(3)
    hits = 0
    for i in range(300):
        x = rng.normal(1.0, 2.0, 40)
        _, lo, hi, _ = bootstrap_mean_ci(x, n_boot=2000, seed=i)
        hits += lo <= 1.0 <= hi
    assert 0.88 <= hits / 300 <= 0.99


def test_two_stage_bootstrap_widens_intervals_when_folds_differ() -> None:
    # 4 folds x 5 seeds: the fold effect (one market per fold) dominates the seed noise
    rng = np.random.default_rng(4)
    x = np.array([0.3, -0.2, 0.1, -0.1])[:, None] + rng.normal(0.0, 0.01, (4, 5))
    mean, lo, hi, _ = bootstrap_mean_ci(x)
    _, lo_iid, hi_iid, _ = bootstrap_mean_ci(x.ravel())
    assert mean == pytest.approx(x.mean())
    assert hi - lo > 1.5 * (hi_iid - lo_iid)
    assert bootstrap_mean_ci([0.7])[:3] == (0.7, 0.7, 0.7)
    with pytest.raises(DataError, match="NaN"):
        bootstrap_mean_ci([1.0, math.nan])


def test_block_bootstrap_keeps_length_and_pairing() -> None:
    sums = block_bootstrap_sums(np.full(101, 2.0), n_boot=50, block_bars=7)
    np.testing.assert_allclose(sums, 202.0)  # every replicate has exactly 101 bars
    x = np.random.default_rng(5).normal(0.0, 1.0, 500)
    pair = block_bootstrap_sums(np.stack([x, 2.0 * x]), n_boot=200, seed=1)
    np.testing.assert_allclose(pair[1], 2.0 * pair[0])  # the same blocks for both series
    means = block_bootstrap_means(x, n_boot=4000)
    assert means.mean() == pytest.approx(x.mean(), abs=0.01)
    # serial dependence: blocks see the variance of the mean that iid resampling misses
    ar = np.zeros(2000)
    e = np.random.default_rng(6).normal(size=2000)
    for t in range(1, 2000):
        ar[t] = 0.9 * ar[t - 1] + e[t]
    wide = block_bootstrap_means(ar, block_bars=50).std()
    narrow = block_bootstrap_means(ar, block_bars=1).std()
    assert wide > 2.0 * narrow


def test_verdicts_say_beats_loses_or_inconclusive() -> None:
    rng = np.random.default_rng(7)
    base = rng.normal(0.0, 0.01, 3000)
    better = base + 0.002
    win = verdict_from_returns(better, base, "buy_and_hold")
    assert win.outcome == "beats"
    assert win.confidence > 0.975
    assert win.margin == pytest.approx(np.prod(1 + better) - np.prod(1 + base))
    assert win.ci_low > 0.0
    assert win.line().startswith("BEATS buy_and_hold out of sample after costs: total return")
    lose = verdict_from_returns(base - 0.002, base, "flat")
    assert lose.outcome == "loses"
    assert lose.line().startswith("LOSES to flat")
    tie = verdict_from_returns(rng.normal(0.0, 0.01, 3000), base, "random")
    assert tie.outcome == "inconclusive"
    assert "NOT SHOWN to beat random" in tie.line()
    assert Verdict.from_dict(win.to_dict()) == win


def test_run_verdicts_compare_each_run_with_its_own_fold() -> None:
    agent = np.array([[0.10, 0.12], [0.05, 0.07], [0.20, 0.18]])
    base = np.array([[0.02, 0.02], [0.01, 0.01], [0.15, 0.15]])
    v = verdict_from_runs(agent, base, "buy_and_hold")
    assert v.margin == pytest.approx((agent - base).mean())
    assert v.n == 6
    assert v.outcome == "beats"
    single = verdict_from_runs([[0.5]], [[0.1]], "flat")
    assert single.outcome == "inconclusive"  # one run cannot show a spread


def test_lookahead_warning_only_for_implausible_sharpe() -> None:
    assert lookahead_warning(2.0) is None
    warn = lookahead_warning(40.0)
    assert warn is not None
    assert "look-ahead" in warn
    assert lookahead_warning(math.inf) is not None


def test_a_random_baseline_is_judged_against_all_its_draws_not_the_first() -> None:
    rng = np.random.default_rng(4)
    t = 500
    agent = rng.normal(0.0002, 0.01, t)
    # the first draw is a disaster, the others do well: the first draw alone would flatter us
    draws = np.stack([np.full(t, -0.002), *(rng.normal(0.001, 0.01, t) for _ in range(4))])
    first_only = verdict_from_returns(agent, draws[0], "random")
    pooled = verdict_from_returns(agent, draws, "random")
    totals = np.expm1(np.log1p(draws).sum(axis=1))
    assert pooled.baseline_value == pytest.approx(totals.mean())
    assert pooled.n_draws == 5
    assert pooled.draws_beaten == pytest.approx(float((pooled.agent_value > totals).mean()))
    assert first_only.outcome == "beats"
    assert pooled.confidence < first_only.confidence
    # P(agent better) pools the replicates of every draw: the mean of the per-draw values
    per_draw = [verdict_from_returns(agent, d, "random").confidence for d in draws]
    assert pooled.confidence == pytest.approx(float(np.mean(per_draw)))
    line = pooled.line()
    assert "(mean of 5 draws)" in line
    assert f"beats {round(pooled.draws_beaten * 5)} of 5 draws" in line
    assert Verdict.from_dict(pooled.to_dict()) == pooled


def test_verdicts_say_what_the_data_was_and_flag_small_samples() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 0.01, 50), rng.normal(0, 0.01, 50)
    full = verdict_from_returns(a, b, "flat", data=data_label("full"), small_sample=True)
    assert "out of sample" not in full.line()
    assert "in-sample (full data" in full.line()
    assert "SMALL SAMPLE" in full.line()
    test = verdict_from_returns(a, b, "flat", data=data_label("test"))
    assert "out of sample (held-out test split)" in test.line()
    assert "SMALL SAMPLE" not in test.line()
    assert not data_label("validation").startswith("out of sample")
    assert "out of sample only if" in data_label("full", same_data=False)
    # a verdict stored before these fields existed still loads
    old = {k: v for k, v in test.to_dict().items() if k not in ("data", "n_draws", "draws_beaten", "small_sample")}
    assert Verdict.from_dict(old).n_draws == 0
