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

NaN or inf in an action is an error naming the asset.

One asset (:meth:`ActionMap.from_env_config`, what :class:`~coinrl.envs.trading_env.TradingEnv`,
the vector env, the rollouts and live trading call): the gross and net budgets are the config's
``max_leverage``, so the continuous map is the clip to ``EnvConfig.exposure_bounds`` and a discrete
action is ``discrete_positions[i]`` (:meth:`ActionMap.exposure` for one account,
:meth:`ActionMap.exposures` for many, :meth:`ActionMap.actions_for` the inverse). The kernel then sizes, rounds and, if the
account cannot pay for it, scales the rebalance (:mod:`coinrl.envs.portfolio_kernel`). The
backtester and live trading can call :meth:`ActionMap.weights` / :meth:`ActionMap.weights_batch`
on the same actions to get the same targets.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from gymnasium import spaces

from coinrl.pipeline.errors import ConfigError

from .config import EnvConfig, PortfolioEnvConfig
from .portfolio_obs import clip_exposure

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

    @classmethod
    def from_env_config(cls, config: EnvConfig, symbol: str = "asset") -> ActionMap:
        """The single-asset map of an :class:`~coinrl.envs.config.EnvConfig` (``A = 1``):
        continuous actions clipped to ``config.exposure_bounds``, discrete ones indexing
        ``config.discrete_positions``."""
        lev = float(config.max_leverage)
        return cls(
            kind=config.action, symbols=(symbol,), gross=lev, net=lev,
            allow_short=config.allow_short,
            positions=tuple(float(p) for p in config.discrete_positions) if config.action == "discrete" else (),
        )

    @functools.cached_property
    def _pos_map(self) -> dict[Any, float]:
        """Discrete index -> exposure (``exposure``'s fast path; cached on first use)."""
        return {i: p for i, p in enumerate(self.positions)}

    @functools.cached_property
    def _position_array(self) -> F64:
        """The discrete positions as a float64 array (cached)."""
        return np.asarray(self.positions, dtype=np.float64)

    @functools.cached_property
    def _positions_fit(self) -> bool:
        """Whether every combination of discrete positions is inside the budget already, so
        the projection is the identity on them: ``A * max |p| <= min(gross, net)`` (then
        ``sum |w| <= gross`` and ``|sum w| <= net``), and no short without shorting."""
        p = self._position_array
        if p.size == 0 or (not self.allow_short and bool((p < 0.0).any())):
            return False
        return self.n_assets * float(np.abs(p).max()) <= min(self.gross, self.net)

    def exposure(self, action: Any) -> float:
        """The target exposure (position notional / equity) of one single-asset action.

        Continuous: the action's one number clipped to ``[lo, min(gross, net)]``; discrete: the
        position the index stands for. Plain Python (the per-step path of the single envs).

        Raises:
            ValueError: NaN/inf, a discrete index that is not an integer in range, or more than
                one number.
        """
        if self.kind == "discrete":
            try:
                return self._pos_map[action]
            except (KeyError, TypeError):
                return self.positions[self._index(action)]
        if isinstance(action, np.ndarray) and action.ndim == 1 and action.shape[0] == 1:
            x = float(action[0])
        else:
            a = np.asarray(action, dtype=np.float64).reshape(-1)
            if a.size != 1:
                raise ValueError(f"expected one action, got shape {np.asarray(action).shape}")
            x = float(a[0])
        if x - x != 0.0:  # NaN or inf
            raise ValueError(f"the action for {self.symbols[0]} is {_name(x)}; the policy must "
                             "output finite numbers")
        return clip_exposure(x, self.gross, self.net, self.allow_short)

    def _index(self, action: Any) -> int:
        """A discrete action that was not a plain in-range int, validated."""
        n = len(self.positions)
        try:
            a = np.asarray(action)
            if a.size == 1:
                v = a.reshape(())
                if a.dtype.kind in "iu" or (a.dtype.kind == "f" and np.isfinite(v) and v == np.round(v)):
                    i = int(v)
                    if 0 <= i < n:
                        return i
        except (TypeError, ValueError):
            pass
        raise ValueError(f"discrete action must be an integer in [0, {n}), got {action!r}")

    def exposures(self, actions: Any) -> F64:
        """Target exposures of single-asset actions of any batch shape: discrete ``(...)``
        indices, continuous ``(..., 1)`` (or ``(...)``) numbers; returns float64 ``(...)``.

        Raises:
            ValueError: as :meth:`weights_batch`.
        """
        if self.n_assets != 1:
            raise ValueError(f"exposures() maps one asset's actions; this map has {self.n_assets}")
        a = np.asarray(actions)
        if self.kind == "continuous" and a.ndim >= 1 and a.shape[-1] == 1:
            a = a[..., 0]
        shape = a.shape
        return self.weights_batch(a.reshape(-1, 1)).reshape(shape)

    def actions_for(self, exposures: npt.ArrayLike) -> npt.NDArray[Any]:
        """The single-asset actions that stand for target ``exposures`` (the inverse of
        :meth:`exposures`): discrete, the index of each exposure among the positions (int64);
        continuous, the exposure itself as float32, shaped ``(..., 1)``.

        Raises:
            ConfigError: an exposure that a discrete map cannot express.
        """
        x = np.asarray(exposures, dtype=np.float64)
        if self.kind == "continuous":
            return x[..., None].astype(np.float32)
        pos = np.asarray(self.positions, dtype=np.float64)
        idx = np.abs(x[..., None] - pos).argmin(axis=-1)
        bad = ~np.isclose(pos[idx], x, rtol=0.0, atol=1e-12)
        if bad.any():
            first = float(x[bad].reshape(-1)[0])
            raise ConfigError(
                f"target exposure {first} is not one of the env's discrete positions "
                f"{list(self.positions)}; use those exposures or a continuous env"
            )
        return idx.astype(np.int64)

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
            n_pos = len(self.positions)
            if a.dtype.kind not in "iu":
                if a.dtype.kind != "f" or not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
                    raise ValueError(f"discrete actions must be integers in [0, {n_pos}), got {a.tolist()}")
            idx = a.astype(np.int64, copy=False)
            if (idx.view(np.uint64) >= n_pos).any():  # a negative index is a huge unsigned one
                bad = (idx < 0) | (idx >= n_pos)
                col = int(np.nonzero(bad)[1][0])
                raise ValueError(
                    f"discrete action for {self.symbols[col]} must be in [0, {n_pos}), "
                    f"got {int(idx[np.nonzero(bad)][0])}"
                )
            y: F64 = self._position_array[idx]  # a fresh C-contiguous array
            if not self._positions_fit:
                _compiled().project_rows(y, self.gross, self.net, self.allow_short)
            return y
        else:
            y = np.array(a, dtype=np.float64, order="C")  # a copy: projected in place
            first_bad = _compiled().project_rows(y, self.gross, self.net, self.allow_short)
            if first_bad >= 0:
                i, col = divmod(first_bad, n_assets)
                raise ValueError(
                    f"the action for {self.symbols[col]} is {_name(float(y[i, col]))}; the policy "
                    "must output finite numbers"
                )
        return y


def _name(x: float) -> str:
    """``NaN``, ``inf``, ``-inf`` or the number (error messages)."""
    return "NaN" if x != x else str(x)
