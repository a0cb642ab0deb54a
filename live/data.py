"""Live market data: closed candles from the exchange, gap-checked, featured like training.

:class:`LiveDataFeed` keeps a buffer of CLOSED candles (the bar in progress is never used:
:meth:`coinrl.live.exchange.ExchangeClient.fetch_closed_candles`), extends it with each new
closed bar, refuses gaps, replaces a closed bar the exchange revised (journalled, features
re-derived), and turns it into observation-ready
:class:`~coinrl.pipeline.dataset.MarketData` with the bundle's OWN feature spec and normaliser
(:func:`~coinrl.pipeline.splits.market_data_from_spec`, never refitted).

Parity with the backtest: the buffer is anchored at its first candle and features are
recomputed over the whole buffer, so every feature row is computed from the same candles in
the same order as a backtest over those candles: the rows are bit-identical (the features are
causal, so later candles never change earlier rows). Only when the buffer exceeds
``max_bars`` is its oldest part dropped; rows then match to the warm-up tolerance of
:mod:`coinrl.pipeline.features` (``EWM_DECAY_TOL``).

Staleness: each snapshot carries the exchange's time and the close time of the newest closed
candle. :func:`get_live_data` (and a feed built with ``max_stale_bars``) refuses data whose
newest candle closed more than ``max_stale_bars`` bars ago; the trading env instead hands the
delay to the risk layer, which halts (and journals the halt) without stopping the session.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from coinrl.pipeline.dataset import MarketData
from coinrl.pipeline.errors import DataError
from coinrl.pipeline.exchange_client import call_exchange, create_exchange
from coinrl.pipeline.features import FeatureSpec
from coinrl.pipeline.splits import Normaliser, market_data_from_spec
from coinrl.pipeline.store import gap_summary
from coinrl.pipeline.timeframes import timeframe_to_ms

from .exchange import ExchangeClient

logger = logging.getLogger(__name__)

MAX_FETCH_BARS = 1000
"""Most candles one request returns (Binance's klines limit)."""

DEFAULT_HISTORY_BARS = MAX_FETCH_BARS
"""Candles loaded at the start by default. Exponentially weighted features (ta's RSI, EMA, MACD,
Wilder ATR) remember their first bar with weight ``(1 - alpha) ** n``: after the minimum warm-up
(~125 bars) that is still ~1e-4, so a live feed started there would not equal a backtest that
saw years of history. After 1,000 bars it is below 1e-25: live observations equal the
backtest's in float32."""

_OHLCV = ["ts_ms", "open", "high", "low", "close", "volume"]


@dataclass(frozen=True, eq=False)
class LiveData:
    """One snapshot of the live market.

    Attributes:
        market: observation-ready rows (features normalised), one per closed candle after
            the feature warm-up; its last row is the newest closed bar (the decision bar).
        candles: the closed-candle buffer the rows were computed from.
        server_time_ms: the exchange's clock when the candles were fetched, UTC ms.
        bar_ms: bar length, ms.
    """

    market: MarketData
    candles: pd.DataFrame
    server_time_ms: int
    bar_ms: int

    @property
    def last_bar_ts_ms(self) -> int:
        """Open time of the newest closed bar (the decision bar), UTC ms."""
        return int(self.market.ts_ms[-1])

    @property
    def last_close_ms(self) -> int:
        """Close time of the newest closed bar (= the next bar's open), UTC ms."""
        return self.last_bar_ts_ms + self.bar_ms

    @property
    def stale_bars(self) -> float:
        """Bars between the newest close and the exchange's clock (0 right after a close)."""
        return (self.server_time_ms - self.last_close_ms) / self.bar_ms


class LiveDataFeed:
    """Closed candles of one market, extended bar by bar, featured with a bundle's spec.

    Args:
        client: an exchange client (keys not needed: :func:`public_client`).
        symbol: unified symbol (``"BTC/USDT"``).
        timeframe: bar size (``"1h"``).
        spec: the bundle's feature spec.
        normaliser: the bundle's normaliser (fitted on its training split).
        window: observation window of the policy (rows needed after the warm-up).
        history_bars: closed candles loaded at the start (default
            :data:`DEFAULT_HISTORY_BARS`, at least warm-up + window + 2; fewer when the market
            has fewer).
        max_bars: largest buffer; older candles are dropped beyond it.
        max_stale_bars: refuse (DataError) a snapshot whose newest candle closed more than this
            many bars before the exchange's clock; None = report it only (``LiveData.stale_bars``).

    Raises:
        DataError: ``history_bars`` above what one request returns.
    """

    def __init__(
        self,
        client: ExchangeClient,
        symbol: str,
        timeframe: str,
        *,
        spec: FeatureSpec,
        normaliser: Normaliser,
        window: int = 1,
        history_bars: int | None = None,
        max_bars: int = 5000,
        max_stale_bars: float | None = None,
    ) -> None:
        self.client = client
        self.symbol = symbol
        self.timeframe = timeframe
        self.bar_ms = timeframe_to_ms(timeframe)
        self.spec = spec
        self.normaliser = normaliser
        need = spec.warmup_bars + window + 2
        self.history_bars = (
            int(history_bars) if history_bars is not None else max(need, DEFAULT_HISTORY_BARS)
        )
        if self.history_bars < spec.warmup_bars + window:
            raise DataError(
                f"history_bars={self.history_bars} is below the feature warm-up "
                f"({spec.warmup_bars}) plus the window ({window}); pass at least {need}"
            )
        if self.history_bars > MAX_FETCH_BARS:
            raise DataError(
                f"history_bars={self.history_bars} is above the {MAX_FETCH_BARS} candles one "
                "request returns; use a shorter feature warm-up or window"
            )
        self.max_bars = max(int(max_bars), self.history_bars)
        self.max_stale_bars = max_stale_bars
        self._buf: pd.DataFrame | None = None
        self._server_ms = 0
        self._revisions: list[dict[str, Any]] = []
        self.revisions_total = 0
        """Closed candles the exchange revised so far (each replaced and journalled)."""

    @property
    def candles(self) -> pd.DataFrame | None:
        """The closed-candle buffer (None before the first :meth:`update`)."""
        return self._buf

    def set_model(self, spec: FeatureSpec, normaliser: Normaliser) -> None:
        """Feature the next snapshots with another bundle's spec and normaliser (hot reload)."""
        self.spec = spec
        self.normaliser = normaliser

    def refeature(self) -> LiveData:
        """The current buffer featured again (spec/normaliser changed), without fetching.

        Raises:
            DataError: called before the first :meth:`update`.
        """
        if self._buf is None:
            raise DataError("refeature() before the first update(): there are no candles yet")
        return self._snapshot(self._buf, self._server_ms)

    def _snapshot(self, buf: pd.DataFrame, server_ms: int) -> LiveData:
        market = market_data_from_spec(buf, self.spec, self.normaliser, split="live",
                                       meta={"server_time_ms": server_ms})
        return LiveData(market=market, candles=buf, server_time_ms=server_ms, bar_ms=self.bar_ms)

    def _fetch(self, limit: int) -> pd.DataFrame:
        return self.client.fetch_closed_candles(
            self.symbol, self.timeframe, limit=min(limit, MAX_FETCH_BARS), max_stale_bars=None
        )

    def _check(self, frame: pd.DataFrame, what: str) -> None:
        n_gaps, largest, first = gap_summary(frame["ts_ms"].to_numpy(), self.timeframe)
        if n_gaps:
            when = pd.Timestamp(int(first or 0), unit="ms", tz="UTC")
            raise DataError(
                f"{self.symbol} {self.timeframe} {what}: {n_gaps} gap(s) of up to {largest} "
                f"missing bar(s), first after {when:%Y-%m-%d %H:%M} UTC; the exchange's candles "
                "are incomplete: do not trade on them (retry, or check the market's status)"
            )

    def pop_revisions(self) -> list[dict[str, Any]]:
        """Candle revisions taken since the last call (for the journal), oldest first."""
        out, self._revisions = self._revisions, []
        return out

    def _revise(self, buf: pd.DataFrame, fresh: pd.DataFrame, server_ms: int) -> pd.DataFrame:
        """``buf`` with the candles the exchange now reports differently replaced by its values.

        A closed candle never changes on an honest feed; when one does (a bar that was taken
        as closed while still in progress, an exchange correction), the exchange's current
        value wins: the buffer takes it, every feature row is re-derived from the corrected
        candles at the next snapshot, and the revision is kept for the journal
        (:meth:`pop_revisions`) instead of halting the session forever.
        """
        last = int(buf["ts_ms"].iloc[-1])
        overlap = fresh[fresh["ts_ms"] <= last].set_index("ts_ms")[_OHLCV[1:]]
        if overlap.empty:
            return buf
        pos = buf.index[buf["ts_ms"].isin(overlap.index)]
        if not len(pos):
            return buf
        known = buf.loc[pos].set_index("ts_ms")[_OHLCV[1:]]
        now_vals = overlap.loc[known.index]
        differ = ~np.all(known.to_numpy() == now_vals.to_numpy(), axis=1)
        if not differ.any():
            return buf
        out = buf.copy()
        for ts in known.index[differ]:
            row = int(np.flatnonzero(out["ts_ms"].to_numpy() == ts)[0])
            before = {c: float(out[c].to_numpy()[row]) for c in _OHLCV[1:]}
            after = {c: float(now_vals[c].to_numpy()[known.index.get_loc(ts)]) for c in _OHLCV[1:]}
            for c in _OHLCV[1:]:
                col = out[c].to_numpy(dtype=np.float64, copy=True)
                col[row] = after[c]
                out[c] = col
            rev = {"what": "candle_revised", "symbol": self.symbol, "timeframe": self.timeframe,
                   "bar_ts_ms": int(ts), "server_time_ms": int(server_ms), "before": before,
                   "after": after, "resolution": "replaced with the exchange's candle; "
                   "features re-derived"}
            self._revisions.append(rev)
            self.revisions_total += 1
            logger.warning("candle revised by the exchange symbol=%s bar_ts_ms=%d close %.10g -> "
                           "%.10g: replaced, features re-derived", self.symbol, int(ts),
                           before["close"], after["close"])
        return out

    def update(self) -> LiveData:
        """Fetch the newest closed candles, extend the buffer, and feature it.

        Returns:
            The :class:`LiveData` snapshot.

        Raises:
            DataError: a gap in the candles, too few candles for the warm-up, or (with
                ``max_stale_bars``) stale data. A closed candle the exchange revised is
                replaced (see :meth:`_revise`), not an error.
            ExchangeError: the exchange failed (temporary errors are retried first).
        """
        if self._buf is None:
            fresh = self._fetch(self.history_bars)
            server_ms = int(fresh.attrs["server_time_ms"])
            self._check(fresh, "history")
            buf = fresh[_OHLCV].reset_index(drop=True)
        else:
            buf = self._buf
            last = int(buf["ts_ms"].iloc[-1])
            probe = self._fetch(8)
            server_ms = int(probe.attrs["server_time_ms"])
            newest = int(probe["ts_ms"].iloc[-1])
            missing = (newest - last) // self.bar_ms
            fresh = probe if missing < len(probe) else self._fetch(int(missing) + 2)
            fresh = fresh[_OHLCV]
            buf = self._revise(buf, fresh, server_ms)
            new = fresh[fresh["ts_ms"] > last]
            if len(new):
                joined = pd.concat([buf.iloc[-1:], new], ignore_index=True)
                self._check(joined, "update")
                buf = pd.concat([buf, new], ignore_index=True)
                if len(buf) > self.max_bars:
                    buf = buf.iloc[len(buf) - self.max_bars:].reset_index(drop=True)
        buf.attrs = {"symbol": self.symbol, "timeframe": self.timeframe,
                     "exchange": self.client.exchange_id}
        self._buf = buf
        self._server_ms = server_ms
        snap = self._snapshot(buf, server_ms)
        market = snap.market
        if self.max_stale_bars is not None and snap.stale_bars > self.max_stale_bars:
            raise DataError(
                f"stale candles: the newest closed {self.timeframe} bar of {self.symbol} closed "
                f"at ts_ms={snap.last_close_ms}, {snap.stale_bars:.2f} bars before the exchange's "
                f"time {server_ms} (limit {self.max_stale_bars}); do not trade on it"
            )
        logger.debug("live data symbol=%s rows=%d last_bar_ts_ms=%d stale_bars=%.3f", self.symbol,
                     len(market), snap.last_bar_ts_ms, snap.stale_bars)
        return snap


def public_client(
    exchange: str = "binance",
    *,
    exchange_url: str | None = None,
    config: Mapping[str, Any] | None = None,
    max_retries: int = 5,
) -> ExchangeClient:
    """An exchange client without keys, markets loaded: market data only (paper trading).

    Raises:
        ConfigError: unknown exchange id.
        ExchangeError: the exchange does not answer (after the retries).
    """
    settings: dict[str, Any] = {"enableRateLimit": True, "timeout": 10_000}
    settings.update(dict(config or {}))
    settings["verbose"] = False
    raw = create_exchange(exchange, exchange_url=exchange_url, config=settings)
    call_exchange(raw.load_markets, "load_markets", client=raw, max_retries=max_retries)
    logger.info("public exchange client exchange=%s url=%s markets=%d", exchange,
                exchange_url or "default", len(raw.markets or {}))
    return ExchangeClient(raw, exchange=exchange, max_retries=max_retries)


def get_live_data(
    symbol: str,
    interval: str,
    *,
    client: ExchangeClient,
    spec: FeatureSpec,
    normaliser: Normaliser,
    window: int = 1,
    history_bars: int | None = None,
    max_stale_bars: float = 1.0,
) -> MarketData:
    """Closed candles of ``symbol`` featured with a bundle's spec and normaliser (one shot).

    Args:
        symbol: unified symbol (``"BTC/USDT"``).
        interval: timeframe (``"1h"``).
        client: the exchange client.
        spec, normaliser: from the model bundle (``TrainedAgent.feature_spec/normaliser``).
        window: the policy's observation window.
        history_bars: closed candles to load (default :data:`DEFAULT_HISTORY_BARS`).
        max_stale_bars: refuse data whose newest candle closed more than this many bars ago.

    Returns:
        MarketData whose last row is the newest closed bar.

    Raises:
        DataError: gaps, too few candles, or stale data.
    """
    feed = LiveDataFeed(client, symbol, interval, spec=spec, normaliser=normaliser, window=window,
                        history_bars=history_bars, max_stale_bars=max_stale_bars)
    return feed.update().market


__all__ = ["MAX_FETCH_BARS", "LiveData", "LiveDataFeed", "get_live_data", "public_client"]
