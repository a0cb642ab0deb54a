"""Statistics for honest verdicts: bootstrap confidence intervals, the (deflated) Sharpe ratio.

* :func:`bootstrap_mean_ci`: percentile bootstrap of a mean; with a ``(folds, seeds)`` matrix
  it resamples folds, then seeds within each drawn fold (the runs of one fold share its
  market, so they are not independent draws).
* :func:`block_bootstrap_means`: the circular block bootstrap (Politis & Romano) of the mean
  of a per-bar series, which keeps the serial dependence of returns within blocks.
* :func:`probabilistic_sharpe_ratio` and :func:`deflated_sharpe_ratio` (Bailey & López de
  Prado, "The Deflated Sharpe Ratio", 2014): the probability that the true Sharpe ratio exceeds
  a benchmark, given the sample's length, skewness and kurtosis; deflated by the Sharpe ratio
  the best of ``n_trials`` unskilled configurations would show by luck.
* :class:`Verdict`: does the agent beat a baseline out of sample, after costs, with what
  confidence; :meth:`Verdict.line` is the plain sentence a report prints.

Sharpe ratios here are per bar (not annualised) unless a name says ``annualised``; every
input return is a fraction. Normal quantiles come from :class:`statistics.NormalDist`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from coinrl.pipeline.errors import DataError

F64 = npt.NDArray[np.float64]

EULER_GAMMA = 0.5772156649015329
"""The Euler-Mascheroni constant of the expected maximum of ``N`` normal Sharpe ratios."""

_N = NormalDist()

Outcome = Literal["beats", "loses", "inconclusive"]


# --------------------------------------------------------------------------- bootstrap


def bootstrap_mean_ci(
    values: npt.ArrayLike,
    *,
    confidence: float = 0.95,
    n_boot: int = 10_000,
    seed: int = 0,
) -> tuple[float, float, float, F64]:
    """Mean and percentile-bootstrap confidence interval of the mean.

    Args:
        values: a 1-D sample, or a ``(folds, seeds)`` matrix resampled in two stages (folds
            with replacement, then seeds with replacement within each drawn fold).
        confidence: two-sided level of the interval (0.95: the 2.5 % and 97.5 % quantiles).
        n_boot: bootstrap replicates.
        seed: seed of the resampling.

    Returns:
        ``(mean, ci_low, ci_high, replicates)``; with a single value the interval collapses to
        it (no spread can be estimated from one run).

    Raises:
        DataError: an empty sample or non-finite values.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.size == 0:
        raise DataError(f"bootstrap needs a non-empty 1-D or (folds, seeds) sample, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise DataError("bootstrap sample holds NaN/inf; drop or fix those runs first")
    if not 0.0 < confidence < 1.0:
        raise DataError(f"confidence must be in (0, 1), got {confidence}")
    mean = float(x.mean())
    k, s = x.shape
    if x.size == 1:
        return mean, mean, mean, np.full(1, mean)
    rng = np.random.default_rng(seed)
    folds = rng.integers(0, k, size=(n_boot, k))
    if s == 1:
        reps = x[folds, 0].mean(axis=1)
    else:
        seeds = rng.integers(0, s, size=(n_boot, k, s))
        reps = x[folds[:, :, None], seeds].mean(axis=(1, 2))
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(reps, [alpha, 1.0 - alpha])
    return mean, float(lo), float(hi), reps


def _block_starts(t: int, n_boot: int, block_bars: int | None, seed: int) -> tuple[npt.NDArray[np.int64], int]:
    size = max(1, round(t ** (1.0 / 3.0))) if block_bars is None else int(block_bars)
    size = min(max(size, 1), t)
    n_blocks = -(-t // size)
    rng = np.random.default_rng(seed)
    return rng.integers(0, t, size=(n_boot, n_blocks)), size


def block_bootstrap_sums(
    series: npt.ArrayLike, *, n_boot: int = 2_000, block_bars: int | None = None, seed: int = 0
) -> F64:
    """Circular block bootstrap replicates of the sums of one or more aligned series.

    Each replicate glues ``ceil(T / L)`` blocks of ``L`` consecutive bars (wrapping around the
    end) starting at uniformly random bars, cut to exactly ``T`` bars; aligned series (rows of
    ``series``) are resampled with the SAME blocks, so their pairing is kept.

    Args:
        series: ``(T,)`` or ``(m, T)`` per-bar values.
        n_boot: replicates.
        block_bars: block length ``L``; default ``round(T ** (1/3))`` (at least 1).
        seed: seed of the block starts.

    Returns:
        ``(n_boot,)`` (one series) or ``(m, n_boot)`` replicate sums.
    """
    a = np.asarray(series, dtype=np.float64)
    one = a.ndim == 1
    a2 = a[None] if one else a
    t = a2.shape[1]
    if t == 0:
        raise DataError("block bootstrap of an empty series; pass at least one bar")
    starts, size = _block_starts(t, n_boot, block_bars, seed)
    cut = starts.shape[1] * size - t
    out = np.empty((a2.shape[0], n_boot))
    for i, row in enumerate(a2):
        # block sums from prefix sums of the series repeated twice (wrap-around)
        cs = np.concatenate([[0.0], np.cumsum(np.concatenate([row, row]))])
        sums = cs[starts + size] - cs[starts]
        if cut:  # the last block is cut so that every replicate has exactly t bars
            last = starts[:, -1]
            sums[:, -1] = cs[last + size - cut] - cs[last]
        out[i] = sums.sum(axis=1)
    return out[0] if one else out


def block_bootstrap_means(
    x: npt.ArrayLike, *, n_boot: int = 2_000, block_bars: int | None = None, seed: int = 0
) -> F64:
    """Circular block bootstrap replicates of the mean of a per-bar series (see
    :func:`block_bootstrap_sums`)."""
    a = np.asarray(x, dtype=np.float64)
    return block_bootstrap_sums(a, n_boot=n_boot, block_bars=block_bars, seed=seed) / max(len(a), 1)


# --------------------------------------------------------------------------- Sharpe ratios


def _moments(returns: npt.ArrayLike) -> tuple[float, int, float, float]:
    """``(per-bar Sharpe, T, skewness, kurtosis)`` of a return series (kurtosis not excess)."""
    r = np.asarray(returns, dtype=np.float64)
    t = len(r)
    if t < 2:
        raise DataError(f"a Sharpe-ratio test needs at least 2 returns, got {t}")
    sd = float(r.std(ddof=1))
    if sd <= 0.0:
        return 0.0, t, 0.0, 3.0
    mu = r.mean()
    sr = float(mu) / sd
    d = r - mu
    z = d / np.sqrt(np.mean(d * d))
    z2 = z * z  # products, not z**3 / z**4: numpy's pow has no fast path for 3 and 4
    return sr, t, float(np.mean(z2 * z)), float(np.mean(z2 * z2))


def sharpe_std_error(sharpe: float, n_obs: int, skew: float, kurtosis: float) -> float:
    """Standard error of a per-bar Sharpe estimate (Mertens; Bailey & López de Prado eq. 2).

    ``sqrt((1 - skew * SR + (kurtosis - 1) / 4 * SR^2) / (T - 1))``; kurtosis is 3 for normal
    returns (not excess kurtosis).
    """
    v = 1.0 - skew * sharpe + (kurtosis - 1.0) / 4.0 * sharpe**2
    return math.sqrt(max(v, 1e-300) / (n_obs - 1))


def psr_from_stats(
    sharpe: float, n_obs: int, skew: float, kurtosis: float, sharpe_benchmark: float = 0.0
) -> float:
    """Probabilistic Sharpe ratio from the sample's statistics (all per bar).

    ``PSR = Phi((SR - SR*) / se(SR))``: the probability that the true Sharpe ratio is above
    ``sharpe_benchmark``.
    """
    return _N.cdf((sharpe - sharpe_benchmark) / sharpe_std_error(sharpe, n_obs, skew, kurtosis))


def expected_max_sharpe(n_trials: int, sharpe_variance: float) -> float:
    """Sharpe ratio the best of ``n_trials`` skill-less trials shows by luck (per bar).

    ``sqrt(V) * ((1 - g) * Phi^-1(1 - 1/N) + g * Phi^-1(1 - 1/(N e)))`` with ``g`` the
    Euler-Mascheroni constant and ``V`` the variance of the trials' Sharpe ratios; 0 for a
    single trial.
    """
    if n_trials < 1:
        raise DataError(f"n_trials must be >= 1, got {n_trials}")
    if n_trials == 1 or sharpe_variance <= 0.0:
        return 0.0
    n = float(n_trials)
    z1 = _N.inv_cdf(1.0 - 1.0 / n)
    z2 = _N.inv_cdf(1.0 - 1.0 / (n * math.e))
    return math.sqrt(sharpe_variance) * ((1.0 - EULER_GAMMA) * z1 + EULER_GAMMA * z2)


def deflated_sharpe_from_stats(
    sharpe: float,
    n_obs: int,
    skew: float,
    kurtosis: float,
    n_trials: int,
    sharpe_variance: float,
) -> float:
    """Deflated Sharpe ratio from the statistics of the selected strategy (all per bar).

    Args:
        sharpe: its per-bar Sharpe ratio.
        n_obs: its number of returns ``T``.
        skew, kurtosis: of its returns (kurtosis 3 = normal).
        n_trials: independent configurations tried before picking it.
        sharpe_variance: variance of the per-bar Sharpe ratios across those trials.

    Returns:
        ``PSR`` against :func:`expected_max_sharpe` (a probability in ``[0, 1]``).

    Example:
        Bailey & López de Prado's worked example (annual SR 2.5 over 5 years of daily returns,
        100 trials with annualised variance 0.5, skew -3, kurtosis 10):

        >>> round(deflated_sharpe_from_stats(2.5 / 250**0.5, 1250, -3, 10, 100, 0.5 / 250), 3)
        0.9
    """
    sr0 = expected_max_sharpe(n_trials, sharpe_variance)
    return psr_from_stats(sharpe, n_obs, skew, kurtosis, sr0)


def probabilistic_sharpe_ratio(returns: npt.ArrayLike, sharpe_benchmark: float = 0.0) -> float:
    """PSR of a per-bar return series against a per-bar benchmark Sharpe ratio."""
    sr, t, g3, g4 = _moments(returns)
    return psr_from_stats(sr, t, g3, g4, sharpe_benchmark)


def deflated_sharpe_ratio(
    returns: npt.ArrayLike, n_trials: int = 1, sharpe_variance: float | None = None
) -> float:
    """Deflated Sharpe ratio of a per-bar return series.

    Args:
        returns: the selected strategy's out-of-sample per-bar returns.
        n_trials: configurations (hyper-parameters, seeds, features...) tried before this one.
        sharpe_variance: variance of the per-bar Sharpe ratios across the trials; None uses the
            sampling variance of this series' Sharpe estimate (the spread skill-less trials of
            the same length would show).

    Returns:
        The probability that the true Sharpe ratio beats what the best of ``n_trials`` lucky
        trials would show (1 trial: the PSR against 0).
    """
    sr, t, g3, g4 = _moments(returns)
    var = sharpe_std_error(sr, t, g3, g4) ** 2 if sharpe_variance is None else sharpe_variance
    return deflated_sharpe_from_stats(sr, t, g3, g4, n_trials, var)


def sharpe_stats(
    returns: npt.ArrayLike, n_trials: int = 1, sharpe_variance: float | None = None
) -> dict[str, float]:
    """``sharpe_per_bar``, ``skew``, ``kurtosis``, ``n_obs``, ``psr`` (vs 0), ``sr0`` (the
    expected best-of-trials Sharpe, per bar), ``dsr`` and ``n_trials`` of a return series."""
    sr, t, g3, g4 = _moments(returns)
    var = sharpe_std_error(sr, t, g3, g4) ** 2 if sharpe_variance is None else sharpe_variance
    sr0 = expected_max_sharpe(n_trials, var)
    return {
        "sharpe_per_bar": sr,
        "skew": g3,
        "kurtosis": g4,
        "n_obs": float(t),
        "psr": psr_from_stats(sr, t, g3, g4, 0.0),
        "sr0_per_bar": sr0,
        "dsr": psr_from_stats(sr, t, g3, g4, sr0),
        "n_trials": float(n_trials),
    }


# --------------------------------------------------------------------------- verdicts


DATA_LABELS = {
    "test": "out of sample (held-out test split)",
    "validation": "on the validation split (used to pick the model: not fully out of sample)",
    "train": "in-sample (training split)",
    "full": "in-sample (full data: includes the training bars)",
    "walkforward": "out of sample (walk-forward test folds)",
}
"""What a verdict says about the data it was measured on, per split name."""


def data_label(split: str, *, same_data: bool = True) -> str:
    """The plain words for the data a verdict was measured on.

    Args:
        split: ``train``, ``validation``, ``test``, ``full`` or ``walkforward`` (anything else
            is named as given, without a claim of being out of sample).
        same_data: False when the candles are not the ones the bundle was trained on (``coinrl
            backtest --data``): their ``full`` split is then new data, out of sample only if
            none of its bars were in the training file.

    Example:
        >>> data_label("full")
        'in-sample (full data: includes the training bars)'
    """
    if not same_data:
        return (
            f"on other candles ({split} split; out of sample only if none of these bars were "
            "in the training data)"
        )
    return DATA_LABELS.get(split, f"on the {split} split")


@dataclass(frozen=True)
class Verdict:
    """Agent against one baseline, after costs, on the data :attr:`data` names.

    Attributes:
        baseline: the baseline's name.
        metric: what is compared (``total_return`` by default; for one backtest the interval
            comes from resampling its bars, for walk-forward from resampling its runs).
        agent_value, baseline_value: the metric of each (means over runs for walk-forward; the
            mean over draws for a randomised baseline).
        margin: agent minus baseline (mean).
        ci_low, ci_high: confidence interval of the margin (pooled over the draws of a
            randomised baseline).
        confidence: bootstrap probability that the margin is > 0 (pooled over draws).
        level: the interval's two-sided level.
        n: the number of samples behind it (bars, or runs).
        method: how the interval was obtained.
        outcome: ``beats`` (interval above 0), ``loses`` (below 0) or ``inconclusive``.
        data: what the data was (:func:`data_label`): only held-out splits are called out of
            sample.
        n_draws: draws of a randomised baseline judged against (0: a deterministic baseline).
        draws_beaten: share of those draws whose total return the agent beat (None without
            draws).
        small_sample: the sample is too short to annualise (see
            :func:`~coinrl.agents.metrics.can_annualise`); the line says so.
    """

    baseline: str
    metric: str
    agent_value: float
    baseline_value: float
    margin: float
    ci_low: float
    ci_high: float
    confidence: float
    level: float
    n: int
    method: str
    outcome: Outcome
    data: str = "out of sample"
    n_draws: int = 0
    draws_beaten: float | None = None
    small_sample: bool = False

    def line(self) -> str:
        """One plain sentence, e.g. ``BEATS buy_and_hold out of sample (held-out test split)
        after costs: total return +12.0 % vs +4.0 %...``."""
        head = {
            "beats": f"BEATS {self.baseline}",
            "loses": f"LOSES to {self.baseline}",
            "inconclusive": f"NOT SHOWN to beat {self.baseline}",
        }[self.outcome]
        pct = self.metric.endswith("return")
        fmt = (lambda v: f"{v:+.2%}") if pct else (lambda v: f"{v:+.3f}")
        name = self.metric.replace("_", " ")
        vs = fmt(self.baseline_value)
        if self.n_draws:
            vs += f" (mean of {self.n_draws} draws)"
        text = (
            f"{head} {self.data} after costs: {name} {fmt(self.agent_value)} vs {vs}, "
            f"margin {fmt(self.margin)} ({self.level:.0%} CI {fmt(self.ci_low)} to "
            f"{fmt(self.ci_high)}), P(agent better) = {self.confidence:.0%} "
            f"[{self.method}, n={self.n}]"
        )
        if self.n_draws and self.draws_beaten is not None:
            text += f"; beats {round(self.draws_beaten * self.n_draws)} of {self.n_draws} draws"
        if self.small_sample:
            text += "; SMALL SAMPLE: too short to annualise, read with care"
        return text

    def to_dict(self) -> dict[str, Any]:
        """Plain data, plus ``line``."""
        return {**asdict(self), "line": self.line()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Verdict:
        """Inverse of :meth:`to_dict` (``line`` ignored)."""
        fields = {k: v for k, v in data.items() if k != "line"}
        return cls(**fields)


def _outcome(lo: float, hi: float) -> Outcome:
    if lo > 0.0:
        return "beats"
    if hi < 0.0:
        return "loses"
    return "inconclusive"


def verdict_from_returns(
    agent_returns: npt.ArrayLike,
    baseline_returns: npt.ArrayLike,
    baseline: str,
    *,
    confidence: float = 0.95,
    n_boot: int = 2_000,
    block_bars: int | None = None,
    seed: int = 0,
    data: str = "out of sample",
    small_sample: bool = False,
) -> Verdict:
    """Verdict of one backtest: total-return margin with a paired block-bootstrap interval.

    Both return series (simple, per bar, after costs, over the same bars) are resampled with
    the same blocks (:func:`block_bootstrap_sums` of their log growth); each replicate's
    margin is the difference of the two compounded total returns.

    A randomised baseline is judged against ALL its draws, never one: pass
    ``baseline_returns`` as ``(draws, T)``. Every draw is resampled with the same blocks as the
    agent; the margin is the agent's total return minus the mean of the draws', the interval
    and ``P(agent better)`` pool the replicate margins of all draws, and
    :attr:`Verdict.draws_beaten` is the share of draws the agent's total return beat.

    Args:
        agent_returns: ``(T,)`` per-bar simple returns of the agent.
        baseline_returns: ``(T,)`` per-bar returns of the baseline, or ``(draws, T)``.
        baseline: the baseline's name.
        confidence: two-sided level of the interval.
        n_boot: bootstrap replicates.
        block_bars: block length (default ``round(T ** (1/3))``).
        seed: seed of the bootstrap.
        data: what the data was (:func:`data_label`).
        small_sample: flag the verdict as measured on a sample too short to annualise.
    """
    a = np.asarray(agent_returns, dtype=np.float64)
    b = np.asarray(baseline_returns, dtype=np.float64)
    draws = b.ndim == 2
    b2 = b if draws else b[None]
    if a.ndim != 1 or b2.ndim != 2 or b2.shape[1] != a.shape[0] or len(b2) == 0:
        raise DataError(f"agent and baseline returns differ in shape: {a.shape} vs {b.shape}")
    floor = -1.0 + 1e-15  # a bar that wipes the account out
    logs = np.log1p(np.maximum(np.vstack([a[None], b2]), floor))
    reps = np.expm1(block_bootstrap_sums(logs, n_boot=n_boot, block_bars=block_bars, seed=seed))
    diff = (reps[0][None, :] - reps[1:]).reshape(-1)  # pooled over draws
    alpha = (1.0 - confidence) / 2.0
    lo, hi = (float(v) for v in np.quantile(diff, [alpha, 1.0 - alpha]))
    total_a = float(np.expm1(logs[0].sum()))
    totals_b = np.expm1(logs[1:].sum(axis=1))
    total_b = float(totals_b.mean())
    method = "paired circular block bootstrap over bars"
    if draws:
        method += f", pooled over {len(b2)} draws"
    return Verdict(
        baseline=baseline,
        metric="total_return",
        agent_value=total_a,
        baseline_value=total_b,
        margin=total_a - total_b,
        ci_low=lo,
        ci_high=hi,
        confidence=float((diff > 0.0).mean()),
        level=confidence,
        n=len(a),
        method=method,
        outcome=_outcome(lo, hi),
        data=data,
        n_draws=len(b2) if draws else 0,
        draws_beaten=float((total_a > totals_b).mean()) if draws else None,
        small_sample=small_sample,
    )


def verdict_from_runs(
    agent_values: npt.ArrayLike,
    baseline_values: npt.ArrayLike,
    baseline: str,
    metric: str = "total_return",
    *,
    confidence: float = 0.95,
    n_boot: int = 10_000,
    seed: int = 0,
    data: str = DATA_LABELS["walkforward"],
    small_sample: bool = False,
) -> Verdict:
    """Verdict of walk-forward runs: bootstrap of the mean margin over folds and seeds.

    Args:
        agent_values, baseline_values: the metric per run, shaped ``(folds, seeds)`` (or 1-D
            runs); each agent run is compared with the baseline on the same fold.
        baseline: the baseline's name.
        metric: the metric's name (for the report).
        confidence: two-sided level of the interval.
        n_boot: bootstrap replicates.
        seed: seed of the bootstrap.
        data: what the data was (:func:`data_label`).
        small_sample: flag the verdict as measured on samples too short to annualise.
    """
    a = np.asarray(agent_values, dtype=np.float64)
    b = np.asarray(baseline_values, dtype=np.float64)
    if a.shape != b.shape:
        raise DataError(f"agent and baseline runs differ in shape: {a.shape} vs {b.shape}")
    margin, lo, hi, reps = bootstrap_mean_ci(a - b, confidence=confidence, n_boot=n_boot, seed=seed)
    single = a.size == 1
    return Verdict(
        baseline=baseline,
        metric=metric,
        agent_value=float(a.mean()),
        baseline_value=float(b.mean()),
        margin=margin,
        ci_low=lo,
        ci_high=hi,
        confidence=float((reps > 0.0).mean()),
        level=confidence,
        n=int(a.size),
        method="one run, no interval" if single else "bootstrap over folds and seeds",
        outcome="inconclusive" if single else _outcome(lo, hi),
        data=data,
        small_sample=small_sample,
    )


IMPLAUSIBLE_SHARPE = 5.0
"""An annualised out-of-sample Sharpe ratio above this, after costs, is treated as a sign of
look-ahead (the future leaking into decisions) rather than of skill."""


def lookahead_warning(annualised_sharpe: float, threshold: float = IMPLAUSIBLE_SHARPE) -> str | None:
    """A warning when an out-of-sample Sharpe ratio is too good to be true, else None."""
    if math.isfinite(annualised_sharpe) and annualised_sharpe <= threshold:
        return None
    return (
        f"Out-of-sample Sharpe ratio {annualised_sharpe:.2f} is above {threshold:g}: implausible "
        "for a real strategy after costs. Check for look-ahead (features or signals that use "
        "bars after the decision bar, normalisation fitted on test data)."
    )


__all__ = [
    "DATA_LABELS",
    "EULER_GAMMA",
    "IMPLAUSIBLE_SHARPE",
    "Verdict",
    "block_bootstrap_means",
    "block_bootstrap_sums",
    "bootstrap_mean_ci",
    "data_label",
    "deflated_sharpe_from_stats",
    "deflated_sharpe_ratio",
    "expected_max_sharpe",
    "lookahead_warning",
    "probabilistic_sharpe_ratio",
    "psr_from_stats",
    "sharpe_stats",
    "sharpe_std_error",
    "verdict_from_returns",
    "verdict_from_runs",
]
