"""Hot reload of a live session's model: :func:`update_live_model`.

The bundle's fingerprint (:func:`bundle_fingerprint`) is polled by the
:class:`~coinrl.live.runner.Runner`; a changed bundle is loaded and validated against the
running session (manifest hashes and library versions by :func:`~coinrl.agents.bundle.load_model`,
the same feature spec, the same spaces, a dry prediction on the current candles) before the
runner swaps it in; on any failure the old model keeps trading and the reason is journalled.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from coinrl.pipeline.errors import CoinrlError, ConfigError

from .live_env import LiveTradingEnv


def bundle_fingerprint(path: str | Path) -> str:
    """A fingerprint of a bundle folder or zip that changes whenever any of its files does.

    sha256 over the manifest's bytes (it holds the sha256 of every other file) and the name,
    size and modification time of every file (so a file changed behind the manifest's back is
    noticed too, and then refused by the loader's hash check). "" when unreadable.
    """
    p = Path(path)
    h = hashlib.sha256()
    try:
        if p.is_dir():
            h.update((p / "manifest.json").read_bytes())
            for f in sorted(x for x in p.iterdir() if x.is_file()):
                st = f.stat()
                h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns};".encode())
        else:
            h.update(p.read_bytes())
    except OSError:
        return ""
    return h.hexdigest()


@dataclass(frozen=True)
class ReloadResult:
    """Outcome of one :func:`update_live_model` attempt.

    Attributes:
        status: ``unchanged``, ``loaded`` or ``rejected``.
        fingerprint: the bundle's fingerprint that was tried.
        reason: why it was rejected.
        agent: the new agent when loaded.
    """

    status: Literal["unchanged", "loaded", "rejected"]
    fingerprint: str
    reason: str = ""
    agent: Any = None


def update_live_model(
    bundle: str | Path,
    current: Any,
    env: LiveTradingEnv,
    *,
    known_fingerprint: str,
    loader: Callable[[Path], Any] | None = None,
) -> ReloadResult:
    """Load a changed bundle and validate it against the running session (the seed's name).

    Validation, in order: the bundle loads (manifest hashes, library major versions and the
    feature-spec fingerprint are checked by :func:`~coinrl.agents.bundle.load_model`); its
    feature spec is the running one's (same features, so observations keep their meaning);
    its env config gives the same observation and action spaces; a dry prediction on the
    current candles (featured with ITS normaliser) gives a valid action. Nothing is swapped
    here: the caller swaps on ``loaded``.

    Args:
        bundle: the bundle folder or zip being watched.
        current: the running :class:`~coinrl.agents.agent.TrainedAgent`.
        env: the running env (its feed's candles are used for the dry prediction).
        known_fingerprint: the fingerprint already tried (loaded or rejected).
        loader: bundle loader (default :func:`~coinrl.agents.bundle.load_model`).

    Returns:
        The :class:`ReloadResult`.
    """
    fp = bundle_fingerprint(bundle)
    if not fp or fp == known_fingerprint:
        return ReloadResult("unchanged", known_fingerprint)
    if loader is None:
        from coinrl.agents.bundle import load_model

        loader = load_model
    try:
        new = loader(Path(bundle))
        if new.feature_spec.fingerprint() != current.feature_spec.fingerprint():
            raise ConfigError(
                f"its feature spec ({list(new.feature_spec.feature_names)}) differs from the "
                f"running one ({list(current.feature_spec.feature_names)}); restart the runner "
                "to trade a model with other features"
            )
        from coinrl.envs.trading_env import build_spaces

        old_spaces = build_spaces(current.env_config, len(current.feature_spec.feature_names))
        new_spaces = build_spaces(new.env_config, len(new.feature_spec.feature_names))
        if old_spaces != new_spaces:
            raise ConfigError(
                f"its observation/action spaces {new_spaces} differ from the running "
                f"{old_spaces} (window, action mode or positions changed); restart to switch"
            )
        candles = env.feed.candles
        state = env.broker_state
        if candles is None or state is None or env.data is None:
            raise ConfigError("no live data yet to validate it on")
        from coinrl.pipeline.splits import market_data_from_spec

        md = market_data_from_spec(candles, new.feature_spec, new.normaliser, split="live")
        probe = type(env.data)(market=md, candles=candles, server_time_ms=env.data.server_time_ms,
                               bar_ms=env.data.bar_ms)
        obs = env.observe(probe, state)
        action = np.asarray(new.predict(_batch(obs), deterministic=True))
        if not np.all(np.isfinite(np.asarray(action, dtype=np.float64))):
            raise ConfigError(f"its dry prediction is not finite: {action.tolist()}")
        env.action_to_target(action.reshape(-1)[:1] if action.size else action)
        if not env.action_space.contains(_unbatch(action, env)):
            raise ConfigError(f"its dry prediction {action.tolist()} is outside the action space")
    except (CoinrlError, ValueError, OSError, RuntimeError) as e:
        return ReloadResult("rejected", fp, f"{type(e).__name__}: {e}")
    return ReloadResult("loaded", fp, agent=new)


def _batch(obs: Any) -> Any:
    if isinstance(obs, dict):
        return {k: np.asarray(v)[None] for k, v in obs.items()}
    return np.asarray(obs)[None]


def _unbatch(action: Any, env: LiveTradingEnv) -> Any:
    a = np.asarray(action)
    if env.config.action == "discrete":
        return int(a.reshape(-1)[0])
    return a.reshape(-1)[:1].astype(np.float32)



__all__ = ["ReloadResult", "bundle_fingerprint", "update_live_model"]
