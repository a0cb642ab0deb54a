"""Gaussian HMM regimes: a train-only fit stored as plain data, and a causal forward filter.

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
from pydantic import Field, model_validator

from .config import FrozenModel
from .errors import DataError

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


__all__ = [
    "CovarianceType",
    "HmmParams",
    "filtered_state_probs",
    "fit_gaussian_hmm",
    "stationary_distribution",
]
