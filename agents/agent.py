"""``TrainedAgent``: an SB3 model together with everything needed to feed it the same inputs.

Training returns one, :func:`~coinrl.agents.bundle.save_model` writes one, and
:func:`~coinrl.agents.bundle.load_model` gives it back. Besides the policy it carries the env
config (costs, window, action mode), the feature spec and the normaliser fitted on the training
split, so a backtest or a live decision builds exactly the observations the policy was trained
on. A portfolio agent also carries a :class:`PortfolioSpec` (its assets and every fitted
normaliser); :func:`~coinrl.agents.train_portfolio.portfolio_data_for` rebuilds its data.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from coinrl.envs.config import EnvConfig
from coinrl.pipeline.dataset import MarketData, PortfolioData
from coinrl.pipeline.features import FeatureSpec
from coinrl.pipeline.portfolio import PreparedPortfolio
from coinrl.pipeline.splits import Normaliser, PreparedData, market_data_from_spec

from .config import TrainConfig

if TYPE_CHECKING:
    import pandas as pd
    from stable_baselines3.common.base_class import BaseAlgorithm


def data_info(prepared: PreparedData) -> dict[str, Any]:
    """Provenance of the training data: source, market, date range, sizes and hashes.

    Returns:
        A JSON-safe dict: ``source``, ``symbol``, ``timeframe``, ``exchange``,
        ``data_fingerprint`` (sha256 of the candles), ``start_ts_ms``/``end_ts_ms`` (first and
        last feature bar), per-split ``{start_ts_ms, end_ts_ms, rows}``,
        ``feature_spec_fingerprint``, ``normaliser_fingerprint``, ``warmup_rows_dropped`` and
        the split/norm configs.
    """
    full = prepared.full

    def span(md: MarketData) -> dict[str, int]:
        if len(md) == 0:
            return {"rows": 0}
        return {"start_ts_ms": int(md.ts_ms[0]), "end_ts_ms": int(md.ts_ms[-1]), "rows": len(md)}

    return {
        "source": str(full.meta.get("source", "")),
        "symbol": full.symbol,
        "timeframe": full.timeframe,
        "exchange": full.exchange,
        "data_fingerprint": prepared.data_fingerprint,
        "start_ts_ms": int(full.ts_ms[0]),
        "end_ts_ms": int(full.ts_ms[-1]),
        "splits": {
            "train": span(prepared.train),
            "validation": span(prepared.validation),
            "test": span(prepared.test),
        },
        "feature_spec_fingerprint": prepared.spec.fingerprint(),
        "normaliser_fingerprint": prepared.normaliser.fingerprint(),
        "warmup_rows_dropped": prepared.warmup_rows_dropped,
        "split": prepared.split.model_dump(mode="json"),
        "norm": prepared.norm.model_dump(mode="json"),
    }


PORTFOLIO_FORMAT = "coinrl.portfolio"


@dataclass(frozen=True, eq=False)
class PortfolioSpec:
    """The assets of a portfolio agent and the normalisers its observations are built with.

    Attributes:
        symbols: the A assets, in the order of the observation and the action.
        norm_scope: ``per_asset`` (``normalisers[a]`` for asset ``a``) or ``pooled`` (one).
        normalisers: fitted on the TRAINING rows (per asset, or pooled over all assets).
        market_normaliser: the market-wide features' normaliser (None without them).
        market_feature_names: names of the market-wide features (empty without them).
    """

    symbols: tuple[str, ...]
    norm_scope: str
    normalisers: tuple[Normaliser, ...]
    market_normaliser: Normaliser | None = None
    market_feature_names: tuple[str, ...] = ()

    @classmethod
    def of(cls, prepared: PreparedPortfolio) -> PortfolioSpec:
        """The spec of prepared portfolio data (its symbols and fitted normalisers)."""
        return cls(
            symbols=prepared.full.symbols, norm_scope=prepared.norm_scope,
            normalisers=tuple(prepared.normalisers), market_normaliser=prepared.market_normaliser,
            market_feature_names=prepared.full.market_feature_names,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (the bundle's ``portfolio.json``)."""
        return {
            "format": PORTFOLIO_FORMAT,
            "version": 1,
            "symbols": list(self.symbols),
            "norm_scope": self.norm_scope,
            "normalisers": [n.to_dict() for n in self.normalisers],
            "market_normaliser": None if self.market_normaliser is None else self.market_normaliser.to_dict(),
            "market_feature_names": list(self.market_feature_names),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PortfolioSpec:
        """Back from :meth:`to_dict`.

        Raises:
            ConfigError: not such a dict, or normalisers that do not fit the symbols.
        """
        from coinrl.pipeline.errors import ConfigError

        if not isinstance(data, Mapping) or data.get("format") != PORTFOLIO_FORMAT or data.get("version") != 1:
            raise ConfigError(f"not a {PORTFOLIO_FORMAT} v1 record; the bundle is damaged or newer")
        try:
            mkt = data.get("market_normaliser")
            spec = cls(
                symbols=tuple(str(x) for x in data["symbols"]),
                norm_scope=str(data["norm_scope"]),
                normalisers=tuple(Normaliser.from_dict(n) for n in data["normalisers"]),
                market_normaliser=None if mkt is None else Normaliser.from_dict(mkt),
                market_feature_names=tuple(str(x) for x in data.get("market_feature_names", ())),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"malformed {PORTFOLIO_FORMAT} record ({e!r}); the bundle is damaged") from e
        want = 1 if spec.norm_scope == "pooled" else len(spec.symbols)
        if spec.norm_scope not in ("per_asset", "pooled") or len(spec.normalisers) != want:
            raise ConfigError(
                f"{PORTFOLIO_FORMAT} record has {len(spec.normalisers)} normaliser(s) for "
                f"{len(spec.symbols)} assets with norm_scope={spec.norm_scope!r}; the bundle is damaged"
            )
        return spec

    def fingerprint(self) -> str:
        """sha256 hex of the canonical JSON of :meth:`to_dict`."""
        canon = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(canon.encode()).hexdigest()


def portfolio_data_info(prepared: PreparedPortfolio) -> dict[str, Any]:
    """Provenance of a portfolio's training data: per asset its source, first tradable bar and
    candle hash, the clock's range and split sizes, and the fingerprints (JSON-safe).

    ``data_fingerprint`` hashes every asset's candles on the clock
    (:func:`~coinrl.pipeline.portfolio.portfolio_fingerprint`); ``symbol`` is the assets
    joined with ``,``.
    """
    full = prepared.full

    def span(pd_: PortfolioData) -> dict[str, int]:
        if len(pd_) == 0:
            return {"rows": 0}
        return {"start_ts_ms": int(pd_.ts_ms[0]), "end_ts_ms": int(pd_.ts_ms[-1]), "rows": len(pd_)}

    sources = list(full.meta.get("sources") or [])
    prints = prepared.asset_fingerprints
    assets = []
    for a, sym in enumerate(full.symbols):
        rows = np.flatnonzero(full.tradable[:, a])
        assets.append({
            "symbol": sym,
            "source": str(sources[a]) if a < len(sources) else "",
            "data_fingerprint": prints[sym],
            "first_tradable_ts_ms": int(full.ts_ms[rows[0]]) if len(rows) else None,
            "tradable_rows": int(len(rows)),
        })
    return {
        "kind": "portfolio",
        "symbol": ",".join(full.symbols),
        "symbols": list(full.symbols),
        "assets": assets,
        "source": ",".join(str(x) for x in sources),
        "timeframe": full.timeframe,
        "exchange": full.exchange,
        "data_fingerprint": prepared.data_fingerprint,
        "start_ts_ms": int(full.ts_ms[0]),
        "end_ts_ms": int(full.ts_ms[-1]),
        "splits": {
            "train": span(prepared.train),
            "validation": span(prepared.validation),
            "test": span(prepared.test),
        },
        "feature_spec_fingerprint": prepared.spec.fingerprint(),
        "normaliser_fingerprint": PortfolioSpec.of(prepared).fingerprint(),
        "norm_scope": prepared.norm_scope,
        "market_features": list(full.market_feature_names),
        "split": prepared.split.model_dump(mode="json"),
        "norm": prepared.norm.model_dump(mode="json"),
    }


@dataclass(eq=False)
class TrainedAgent:
    """A trained policy and the inputs contract it was trained under.

    Attributes:
        model: the SB3 algorithm (PPO, DQN, ...); ``model.policy`` holds the weights.
        env_config: the env config used in training (evaluation uses the same costs).
        train_config: the training config (seed filled in).
        feature_spec: the feature spec the observations are built from.
        normaliser: fitted on the TRAINING split only.
        data_info: provenance of the training data (see :func:`data_info`).
        experiment_config: the full experiment config as plain data (secrets scrubbed on save).
        history: validation evaluations during training (``step``, ``score``, metrics...).
        info: training outcome (``num_timesteps``, ``best_step``, ``stopped_early``, ...).
        portfolio: a portfolio agent's assets and normalisers (None for one asset; then
            ``env_config`` is a ``PortfolioEnvConfig`` and ``normaliser`` is the first of
            ``portfolio.normalisers``).
    """

    model: BaseAlgorithm
    env_config: EnvConfig
    train_config: TrainConfig
    feature_spec: FeatureSpec
    normaliser: Normaliser
    data_info: dict[str, Any]
    experiment_config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    portfolio: PortfolioSpec | None = None

    @property
    def is_portfolio(self) -> bool:
        """Whether this agent trades a portfolio (see :attr:`portfolio`)."""
        return self.portfolio is not None

    @property
    def algo(self) -> str:
        """The algorithm name (``ppo``, ``dqn``, ...)."""
        return self.train_config.algo

    def predict(self, observation: Any, deterministic: bool = True) -> npt.NDArray[Any]:
        """Actions for a batch of observations (the policy's mode when ``deterministic``).

        Recurrent policies are called without state here; use
        :func:`~coinrl.agents.rollout.rollout_policy` to run them over a series.
        """
        action, _ = self.model.predict(observation, deterministic=deterministic)
        return np.asarray(action)

    def market_data(
        self, candles: pd.DataFrame, *, split: str = "live", meta: Mapping[str, Any] | None = None
    ) -> MarketData:
        """Observation-ready MarketData from new candles with the saved spec and normaliser.

        Raises:
            ConfigError: a portfolio agent (use
                :func:`~coinrl.agents.train_portfolio.portfolio_data_for`).
        """
        if self.portfolio is not None:
            from coinrl.pipeline.errors import ConfigError

            raise ConfigError(
                f"this agent trades a portfolio of {list(self.portfolio.symbols)}; build its data "
                "with coinrl.agents.train_portfolio.portfolio_data_for, not market_data"
            )
        return market_data_from_spec(
            candles, self.feature_spec, self.normaliser, split=split, meta=meta
        )


__all__ = ["PORTFOLIO_FORMAT", "PortfolioSpec", "TrainedAgent", "data_info", "portfolio_data_info"]
