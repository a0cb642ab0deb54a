"""The portfolio kernel's reads of a decision: the observation and the action map's projection.

Helpers of :mod:`coinrl.envs.portfolio_kernel` (plain Python here, inlined into its compiled
entry points): :func:`_pobserve` writes one account's observation, :func:`_project_row` maps one
continuous action onto the gross/net budget (:class:`~coinrl.envs.actions.ActionMap`'s rule).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from .kernel import CASH, EQUITY, P_EQ_FLOOR, P_MMR, P_N_FEATURES, P_WINDOW
from .portfolio_bar import A_QTY, B_CLOSE, N_ACCT_ROWS, N_ASSET_ROWS

F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]


def _pobserve(s: F64, j: int, p: F64, pa: F64, bars: F64, feats: F32, t: int, out: F32, row_: int) -> None:
    """Account ``j``'s observation for decision bar ``t`` into ``out[row_]``.

    Layout: the window of feature rows ``t - window + 1 .. t`` (each row: asset 0's features,
    ..., asset A-1's, then the market-wide ones), then the A weights ``qty_a close_a / equity``,
    then the account features: cash / equity, gross exposure, margin ratio (maintenance margin
    / equity, clipped to [0, 1]) and distance to liquidation (the fraction every price must move
    against its position to reach the account's liquidation point, clipped to [0, 1]; 1 when
    flat). Equity is floored at ``eq_floor`` in the denominators.
    """
    n = pa.shape[0]
    w = int(p[P_WINDOW])
    nf = int(p[P_N_FEATURES])
    wf = w * nf
    src = feats[(t + 1 - w) * nf : (t + 1) * nf]
    dst = out[row_]
    for k in range(wf):
        dst[k] = src[k]
    equity = s[EQUITY, j]
    floor = p[P_EQ_FLOOR]
    eqs = equity if equity > floor else floor
    gross = 0.0
    mm = 0.0
    den = 0.0
    for a in range(n):
        q = s[N_ACCT_ROWS + a * N_ASSET_ROWS + A_QTY, j]
        c = bars[t, a, B_CLOSE]
        dst[wf + a] = q * c / eqs
        aq = abs(q)
        gross += aq * c
        mm += pa[a, P_MMR] * aq * c
        den += abs(q - pa[a, P_MMR] * aq) * c
    col = wf + n
    dst[col] = s[CASH, j] / eqs
    dst[col + 1] = gross / eqs
    ratio = mm / eqs
    dst[col + 2] = 0.0 if ratio < 0.0 else (1.0 if ratio > 1.0 else ratio)
    if den == 0.0:
        dist = 1.0
    else:
        dist = (equity - mm) / den
        dist = 0.0 if dist < 0.0 else (1.0 if dist > 1.0 else dist)
    dst[col + 3] = dist


# ---------------------------------------------------------------------- action map
def clip_exposure(v: float, gross: float, net: float, allow_short: bool) -> float:
    """One asset's continuous map: ``v`` clipped to ``[lo, min(gross, net)]``, ``lo = -gross``
    with shorting, else 0 (``v`` known finite). The single-asset envs' rule (plain Python for
    :meth:`~coinrl.envs.actions.ActionMap.exposure`, inlined into the compiled kernel)."""
    lo = -gross if allow_short else 0.0
    hi = gross if gross < net else net
    return hi if v > hi else (lo if v < lo else v)


def _project_row(y: F64, gross: float, net: float, allow_short: bool) -> None:
    """One row of :func:`project_rows`, in place (entries known finite)."""
    a_n = y.shape[0]
    if a_n == 1:
        y[0] = clip_exposure(y[0], gross, net, allow_short)
        return
    g = 0.0
    t = 0.0
    for a in range(a_n):
        v = y[a]
        if not allow_short and v < 0.0:
            v = 0.0
            y[a] = 0.0
        g += abs(v)
        t += v
    scale = 1.0
    if g > gross:
        scale = gross / g
    if abs(t) > net:
        k = net / abs(t)
        scale = k if k < scale else scale
    if scale != 1.0:
        for a in range(a_n):
            y[a] = y[a] * scale


def _first_bad(y: F64) -> int:
    """Flat index of the first NaN/inf of ``y`` (1-D), or -1."""
    for a in range(y.shape[0]):
        v = y[a]
        if v != v or v == math.inf or v == -math.inf:
            return a
    return -1


def project_rows(y: F64, gross: float, net: float, allow_short: bool) -> int:
    """:class:`~coinrl.envs.actions.ActionMap`'s continuous map, in place on rows of ``y``
    (N, A): negatives to 0 without shorting, then radial scaling onto ``sum |w| <= gross`` and
    ``|sum w| <= net``; one asset: the clip to ``[lo, min(gross, net)]``. Returns -1, or the
    flat index of the first NaN/inf entry (nothing is changed then)."""
    n, a_n = y.shape
    for i in range(n):
        bad = _first_bad(y[i])
        if bad >= 0:
            return i * a_n + bad
    for i in range(n):
        _project_row(y[i], gross, net, allow_short)
    return -1
