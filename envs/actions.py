"""``ActionMap``: the one map from a policy's action to target weights, for every env.

A target weight ``w_a`` is asset ``a``'s wanted position notional / account equity (negative =
short); cash is the residual ``1 - sum w_a`` (negative = borrowed). The budget:
``sum |w_a| <= gross`` and ``|sum w_a| <= net``.

- **continuous**: the action is any real vector (A,). Without shorting, negative entries are
  set to 0. Then it is scaled radially onto the budget:
  ``w = y * min(1, gross / sum |y|, net / |sum y|)`` — an L1 (gross) projection along the ray,
  so every point of the budget, all-cash included, is reachable and the direction the policy
  chose is kept. No softmax: a softmax over a clipped Box pins weights near 1/N (FinRL's
  issues #494/#1076) and cannot express cash, shorts or leverage. The action space is
  ``Box(-gross, gross, (A,))`` (``[0, gross]`` long-only) only so SB3 samples and clips in a
  range where the map is onto; values outside it are valid too. With ``A = 1`` the map is the
  single-asset env's clip to ``[lo, hi]`` exactly.
- **discrete**: ``MultiDiscrete([len(positions)] * A)``: asset ``a`` takes ``positions[i_a]``;
  a combination beyond the budget is scaled radially as above.

NaN or inf in an action is an error naming the asset. The kernel then sizes, rounds and, if the
account cannot pay for it, scales the rebalance (:mod:`coinrl.envs.portfolio_kernel`). The
backtester and live trading can call :meth:`ActionMap.weights` / :meth:`ActionMap.weights_batch`
on the same actions to get the same targets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from gymnasium import spaces

from .config import PortfolioEnvConfig

_KERNEL: list[Any] = []


def _compiled() -> Any:
    """The compiled portfolio kernel (imported on first use: numba loads lazily)."""
    if not _KERNEL:
        from .portfolio_kernel import compiled

        _KERNEL.append(compiled())
    return _KERNEL[0]

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class ActionMap:
    """Actions -> target weights within a gross and a net budget (see module doc).

    Attributes:
        kind: ``"continuous"`` or ``"discrete"``.
        symbols: the A asset names (for error messages and reports).
        gross: budget on ``sum |w|``.
        net: bound on ``|sum w|``.
        allow_short: whether weights may be negative.
        positions: the per-asset exposures of the discrete actions.
    """

    kind: str
    symbols: tuple[str, ...]
    gross: float
    net: float
    allow_short: bool
    positions: tuple[float, ...] = ()

    @classmethod
    def from_config(cls, config: PortfolioEnvConfig, symbols: Sequence[str]) -> ActionMap:
        """The map of a portfolio env config over ``symbols``."""
        return cls(
            kind=config.action, symbols=tuple(symbols), gross=config.gross_budget,
            net=config.net_budget, allow_short=config.allow_short,
            positions=config.discrete_positions if config.action == "discrete" else (),
        )

    @property
    def n_assets(self) -> int:
        """Number of assets ``A``."""
        return len(self.symbols)

    def space(self) -> spaces.Space[Any]:
        """The Gymnasium action space of one account."""
        a = self.n_assets
        if self.kind == "discrete":
            return spaces.MultiDiscrete(np.full(a, len(self.positions), dtype=np.int64))
        lo = -self.gross if self.allow_short else 0.0
        return spaces.Box(np.float32(lo), np.float32(self.gross), shape=(a,), dtype=np.float32)

    def weights(self, action: Any) -> F64:
        """Target weights (A,) for one account's action.

        Raises:
            ValueError: wrong shape, NaN/inf (naming the asset), or an out-of-range index.
        """
        if self.kind == "continuous":  # the env's per-step path: one copy, one compiled call
            y = np.array(action, dtype=np.float64, ndmin=2)
            if y.shape == (1, self.n_assets):
                if _compiled().project_rows(y, self.gross, self.net, self.allow_short) < 0:
                    return y[0]
        return self.weights_batch(np.asarray(action)[None, ...])[0]

    def weights_batch(self, actions: Any) -> F64:
        """Target weights (N, A) for N accounts' actions (N, A).

        Raises:
            ValueError: wrong shape, NaN/inf (naming the asset), or an out-of-range index.
        """
        a = np.asarray(actions)
        n_assets = self.n_assets
        if a.ndim == 1 and n_assets == 1:
            a = a[:, None]
        if a.ndim != 2 or a.shape[1] != n_assets:
            raise ValueError(f"expected actions of shape (N, {n_assets}), got {a.shape}")
        if self.kind == "discrete":
            if a.dtype.kind not in "iu":
                if a.dtype.kind != "f" or not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
                    raise ValueError(f"discrete actions must be integers, got {a.tolist()}")
            idx = a.astype(np.int64)
            bad = (idx < 0) | (idx >= len(self.positions))
            if bad.any():
                col = int(np.nonzero(bad)[1][0])
                raise ValueError(
                    f"discrete action for {self.symbols[col]} must be in [0, {len(self.positions)}), "
                    f"got {int(idx[np.nonzero(bad)][0])}"
                )
            y = np.ascontiguousarray(np.asarray(self.positions, dtype=np.float64)[idx])
            _compiled().project_rows(y, self.gross, self.net, self.allow_short)
            return y
        else:
            y = np.array(a, dtype=np.float64, order="C")  # a copy: projected in place
            first_bad = _compiled().project_rows(y, self.gross, self.net, self.allow_short)
            if first_bad >= 0:
                i, col = divmod(first_bad, n_assets)
                raise ValueError(
                    f"the action for {self.symbols[col]} is {y[i, col]}; the policy must output "
                    "finite numbers"
                )
        return y
