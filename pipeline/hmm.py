"""Gaussian HMM regimes: the ``hmm_regime`` feature kind, a train-only fit stored as plain data,
and a causal forward filter.

:class:`HmmRegimeFeature` is the kind (registered in :mod:`.features`); fitting it is
:func:`~coinrl.pipeline.features.fit_feature_spec`'s job, on training rows only.

:func:`fit_gaussian_hmm` fits ``hmmlearn.hmm.GaussianHMM`` on standardised training inputs and
returns :class:`HmmParams`, plain floats that live inside the feature spec (so a model bundle
stays data and live trading replays the same numbers). States are sorted by ascending mean of
the volatility input (or the variance of the first input), so state 0 is always the calmest one
and the columns keep their meaning across refits.

:func:`filtered_state_probs` is the FILTER ``P(s_t | x_{t-w+1..t})``: a scaled forward pass
(normalised every step) over the last ``w`` bars up to ``t``, never the smoother
``GaussianHMM.predict_proba``, whose backward pass uses bars after ``t``. The state before the
window is drawn from the chain's stationary distribution, so for ``t < w`` the result is
exactly ``P(s_t | x_0..x_t)`` with that prior; the fixed window is what lets live trading
reproduce the training values from a short tail of candles.
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import Field, field_validator, model_validator

from .config import FrozenModel
from .errors import DataError
from .feature_base import Bars, FeatureKind, Window

logger = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]

CovarianceType = Literal["full", "diag", "spherical", "tied"]

_LOG_2PI = math.log(2.0 * math.pi)


class HmmParams(FrozenModel):
    """A fitted Gaussian HMM over ``D`` standardised inputs and ``K`` states (plain data).

    Attributes:
        input_center, input_scale: per-input mean and std of the training rows; the model
            sees ``(x - center) / scale``.
        transmat: ``K x K`` transition probabilities (rows sum to 1).
        means: ``K x D`` state means (standardised units).
        covars: ``K x D x D`` full state covariances (standardised units), whatever the
            ``covariance_type`` of the fit.
        train_rows: rows the fit used (provenance).
    """

    input_center: tuple[float, ...] = Field(min_length=1)
    input_scale: tuple[float, ...] = Field(min_length=1)
    transmat: tuple[tuple[float, ...], ...] = Field(min_length=2)
    means: tuple[tuple[float, ...], ...] = Field(min_length=2)
    covars: tuple[tuple[tuple[float, ...], ...], ...] = Field(min_length=2)
    train_rows: int = Field(ge=1)

    @model_validator(mode="after")
    def _check(self) -> HmmParams:
        d, k = len(self.input_center), len(self.transmat)
        a = np.asarray(self.transmat, dtype=np.float64)
        if len(self.input_scale) != d or not all(s > 0 for s in self.input_scale):
            raise ValueError("input_scale must hold one positive value per input")
        if a.shape != (k, k) or (a < 0).any() or not np.allclose(a.sum(axis=1), 1.0, atol=1e-6):
            raise ValueError("transmat must be a K x K matrix of probabilities, rows summing to 1")
        if np.asarray(self.means, dtype=np.float64).shape != (k, d):
            raise ValueError(f"means must be {k} x {d}")
        c = np.asarray(self.covars, dtype=np.float64)
        if c.shape != (k, d, d) or not np.isfinite(c).all():
            raise ValueError(f"covars must be {k} x {d} x {d} finite matrices")
        try:
            np.linalg.cholesky(c)
        except np.linalg.LinAlgError as e:
            raise ValueError("covars must be positive definite") from e
        return self

    @property
    def n_states(self) -> int:
        """Number of hidden states ``K``."""
        return len(self.transmat)


def stationary_distribution(transmat: F64) -> F64:
    """The distribution ``pi`` with ``pi @ transmat = pi`` (least squares, clipped, normalised)."""
    k = len(transmat)
    lhs = np.vstack([transmat.T - np.eye(k), np.ones((1, k))])
    rhs = np.zeros(k + 1)
    rhs[-1] = 1.0
    pi = np.linalg.lstsq(lhs, rhs, rcond=None)[0]
    pi = np.clip(pi, 0.0, None)
    return np.asarray(pi / pi.sum(), dtype=np.float64)


def _log_emissions(z: F64, means: F64, covars: F64) -> F64:
    """``log N(z_t; mean_k, covar_k)`` per row and state, shape ``(rows, K)``; NaN rows stay NaN."""
    n, d = z.shape
    out = np.empty((n, len(means)))
    for k in range(len(means)):
        chol = np.linalg.cholesky(covars[k])
        diff = (z - means[k]).T  # (d, n)
        sol = np.linalg.solve(chol, np.nan_to_num(diff))
        maha = (sol * sol).sum(axis=0)
        logdet = 2.0 * np.log(np.diag(chol)).sum()
        out[:, k] = -0.5 * (d * _LOG_2PI + logdet + maha)
    out[np.isnan(z).any(axis=1)] = np.nan
    return out


def filtered_state_probs(inputs: npt.ArrayLike, params: HmmParams, window: int) -> F64:
    """Filtered state probabilities ``P(s_t | x_{t-window+1..t})`` by a forward pass.

    Row ``t`` uses inputs at rows ``<= t`` only. The pass is scaled: emission likelihoods are
    taken relative to the row's most likely state and the probabilities are normalised every
    step (no underflow); before the window the state is distributed as the chain's
    stationary distribution, so rows ``t < window`` get exactly the forward filter from row 0.

    Args:
        inputs: ``(rows, D)`` RAW inputs (standardised here with ``params``); a row with NaN
            makes every row whose window contains it NaN.
        params: the fitted model.
        window: bars of memory (>= 1).

    Returns:
        ``(rows, K)`` probabilities; each finite row sums to 1.
    """
    x = np.asarray(inputs, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != len(params.input_center):
        raise DataError(
            f"HMM inputs must be (rows, {len(params.input_center)}), got shape {x.shape}"
        )
    z = (x - np.asarray(params.input_center)) / np.asarray(params.input_scale)
    log_b = _log_emissions(
        z, np.asarray(params.means, dtype=np.float64), np.asarray(params.covars, dtype=np.float64)
    )
    a = np.asarray(params.transmat, dtype=np.float64)
    n, k = log_b.shape
    w = min(window, n) if n else 1
    # Emission likelihoods scaled per row (the best state gets 1): the per-step normalisation
    # cancels the scale, and nothing underflows.
    b = np.exp(log_b - np.max(log_b, axis=1, keepdims=True))
    # Row t's window covers padded rows [t, t + w): w - 1 uninformative steps before row 0
    # keep the stationary prior unchanged, so short windows equal the filter from row 0.
    padded = np.vstack([np.ones((w - 1, k)), b])
    alpha = np.broadcast_to(stationary_distribution(a), (n, k)).copy()
    with np.errstate(invalid="ignore", divide="ignore"):
        for j in range(w):
            if j > 0:
                alpha = alpha @ a
            alpha *= padded[j : j + n]
            alpha /= alpha.sum(axis=1, keepdims=True)
    return alpha


def fit_gaussian_hmm(
    train_inputs: npt.ArrayLike,
    *,
    n_states: int,
    covariance_type: CovarianceType,
    n_iter: int,
    seed: int,
    order_by: int | None,
) -> HmmParams:
    """Fit a ``GaussianHMM`` on TRAINING inputs only and return its parameters as data.

    Args:
        train_inputs: ``(rows, D)`` raw inputs of the training rows (finite).
        n_states, covariance_type, n_iter, seed: passed to ``hmmlearn.hmm.GaussianHMM``.
        order_by: input column whose state mean orders the states (ascending); None orders
            by the variance of input 0.

    Raises:
        DataError: too few or non-finite rows, or a fit that left a state unused.
    """
    from hmmlearn.hmm import GaussianHMM

    x = np.asarray(train_inputs, dtype=np.float64)
    need = 20 * n_states
    if x.ndim != 2 or len(x) < need:
        raise DataError(
            f"an {n_states}-state HMM needs at least {need} training rows, got {len(x)}; use "
            "more training data or fewer states"
        )
    if not np.isfinite(x).all():
        raise DataError("HMM training inputs hold NaN/inf; the warm-up rows must be dropped")
    center = x.mean(axis=0)
    scale = x.std(axis=0)
    scale = np.where(scale > 1e-12 * np.maximum(1.0, np.abs(center)), scale, 1.0)
    z = (x - center) / scale
    model = GaussianHMM(
        n_components=n_states,
        covariance_type=covariance_type,
        n_iter=n_iter,
        random_state=seed,
        init_params="stmc",
        params="stmc",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter; the result is checked below
        model.fit(z)
    transmat = np.asarray(model.transmat_, dtype=np.float64)
    means = np.asarray(model.means_, dtype=np.float64)
    covars = np.asarray(model.covars_, dtype=np.float64)  # full K x D x D for every type
    if not (np.isfinite(transmat).all() and np.isfinite(means).all()):
        raise DataError(
            f"the {n_states}-state HMM fit left a state without data (non-finite parameters); "
            "use fewer states or more training rows"
        )
    key = means[:, order_by] if order_by is not None else covars[:, 0, 0]
    order = np.argsort(key, kind="stable")
    transmat = transmat[np.ix_(order, order)]
    transmat = transmat / transmat.sum(axis=1, keepdims=True)
    logger.info(
        "hmm fit rows=%d states=%d covariance=%s converged=%s iterations=%d",
        len(x),
        n_states,
        covariance_type,
        bool(model.monitor_.converged),
        int(model.monitor_.iter),
    )
    return HmmParams(
        input_center=tuple(float(v) for v in center),
        input_scale=tuple(float(v) for v in scale),
        transmat=tuple(tuple(float(v) for v in row) for row in transmat),
        means=tuple(tuple(float(v) for v in row) for row in means[order]),
        covars=tuple(tuple(tuple(float(v) for v in row) for row in mat) for mat in covars[order]),
        train_rows=len(x),
    )


class HmmRegimeFeature(FeatureKind):
    """Regime probabilities of a Gaussian HMM: ``hmm{K}_w{window}_p{k}`` for states ``k < K``.

    Each row is the FILTERED ``P(s_t = k | x_{t-window+1..t})`` (a forward pass over the last
    ``window`` bars, :func:`~coinrl.pipeline.hmm.filtered_state_probs`), never hmmlearn's
    smoothed ``predict_proba``. Inputs per bar: ``log_return`` (1-bar log return) and/or
    ``volatility`` (rolling std of 1-bar log returns over ``vol_window`` bars). State 0 is the
    lowest-volatility regime. The HMM is fitted on the TRAINING rows only by
    :func:`~coinrl.pipeline.features.fit_feature_spec` (which :func:`~coinrl.pipeline.splits.prepare_data_for_model`
    calls); the fitted parameters are stored as plain data in ``fitted``, so the spec saved in a
    bundle replays the same values live. Computing an unfitted entry is an error.

    Attributes:
        n_states: hidden states ``K`` (one probability column each).
        inputs: per-bar observations of the HMM: ``log_return`` and/or ``volatility``.
        vol_window: bars of the rolling volatility input.
        window: bars of filter memory: row t is filtered over bars ``t-window+1..t``, starting
            from the chain's stationary distribution (what live replays from a short tail).
        covariance_type: hmmlearn's state covariance form (``full``, ``diag``, ...).
        n_iter: EM iterations of the fit (at most).
        seed: the fit's random seed (same seed, same data: same parameters).
        fitted: the parameters fitted on the training rows (plain data, filled in by
            ``prepare_data_for_model``; any value given is replaced there by a fresh fit).
    """

    kind: Literal["hmm_regime"] = "hmm_regime"
    n_states: int = Field(default=2, ge=2, le=8)
    inputs: tuple[Literal["log_return", "volatility"], ...] = Field(
        default=("log_return", "volatility"), min_length=1
    )
    vol_window: Window = 24
    window: int = Field(default=256, ge=1, le=100_000)
    covariance_type: CovarianceType = "diag"
    n_iter: int = Field(default=50, ge=1, le=10_000)
    seed: int = Field(default=0, ge=0)
    fitted: HmmParams | None = None

    @field_validator("inputs")
    @classmethod
    def _uniq(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(v)) != len(v):
            raise ValueError(f"inputs must be unique, got {list(v)}")
        return v

    @model_validator(mode="after")
    def _fit_matches(self) -> HmmRegimeFeature:
        f = self.fitted
        if f is not None and (
            f.n_states != self.n_states or len(f.input_center) != len(self.inputs)
        ):
            raise ValueError(
                f"fitted has {f.n_states} states and {len(f.input_center)} inputs but the entry "
                f"asks for {self.n_states} and {len(self.inputs)}; drop 'fitted' to refit"
            )
        return self

    def output_names(self) -> tuple[str, ...]:
        return tuple(f"hmm{self.n_states}_w{self.window}_p{k}" for k in range(self.n_states))

    def input_warmup(self) -> int:
        """Leading bars whose inputs are undefined."""
        return self.vol_window if "volatility" in self.inputs else 1

    def warmup(self) -> int:
        return self.input_warmup() + self.window - 1

    def input_matrix(self, bars: Bars) -> F64:
        """``(rows, len(inputs))`` causal raw inputs; NaN inside the input warm-up."""
        cols = []
        for name in self.inputs:
            if name == "log_return":
                cols.append(bars.log_ret_1)
            else:
                r = pd.Series(bars.log_ret_1)
                cols.append(
                    r.rolling(self.vol_window, min_periods=self.vol_window).std().to_numpy()
                )
        return np.column_stack(cols).astype(np.float64)

    def fit(self, bars: Bars, train_rows: range) -> HmmRegimeFeature:
        """This entry with ``fitted`` from the candle rows ``train_rows`` (inputs are causal,
        so rows after ``train_rows.stop`` cannot reach the fit)."""
        x = self.input_matrix(bars)[max(train_rows.start, self.input_warmup()) : train_rows.stop]
        params = fit_gaussian_hmm(
            x,
            n_states=self.n_states,
            covariance_type=self.covariance_type,
            n_iter=self.n_iter,
            seed=self.seed,
            order_by=self.inputs.index("volatility") if "volatility" in self.inputs else None,
        )
        return self.model_copy(update={"fitted": params})

    def compute(self, bars: Bars) -> dict[str, F64]:
        if self.fitted is None:
            raise DataError(
                "feature kind 'hmm_regime' is not fitted: fit it on the training rows with "
                "prepare_data_for_model (or fit_feature_spec) and use the spec it returns"
            )
        p = filtered_state_probs(self.input_matrix(bars), self.fitted, self.window)
        return {name: p[:, k] for k, name in enumerate(self.output_names())}


__all__ = [
    "CovarianceType",
    "HmmParams",
    "HmmRegimeFeature",
    "filtered_state_probs",
    "fit_gaussian_hmm",
    "stationary_distribution",
]
