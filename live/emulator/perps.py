"""Linear perpetual positions on the emulator: cross margin over every symbol, funding at
funding times. Used by :class:`~.matching.MatchingEngine` (both dialects share it).

Accounting (USDⓈ-M / Bybit unified-account style, one wallet per settle coin):

* A position is ``size_base`` (signed: > 0 long, < 0 short) at ``entry_price_quote`` (the
  average price of the open quantity). A fill that reduces it realises
  ``closed * (price - entry) * sign`` into the wallet; every fill pays its fee from the wallet.
  The wallet (the account's total of the settle coin, shared with spot trading) therefore moves
  by realised PnL, fees and funding only, never by notional.
* Mark price: the emulator's reference price (the open of the bar in progress, else the last
  close), the same one orders are checked at.
* Cross margin: what an account may still commit in a settle coin is
  ``wallet + unrealised PnL - position initial margin - locked by open orders``, over ALL its
  perpetuals (and its spot orders, which lock the same coin). Initial margin is
  ``|size| * mark / leverage``; an order locks the margin of the part that does not reduce the
  position, plus its worst-case fee.
* Funding: at each stored funding time ``t`` of a symbol, every open position in it pays
  ``size * mark(t) * rate`` (a long pays a positive rate, a short receives it), in time order
  with the fills (a funding at the same time as a fill is applied first: it is owed on the
  position held up to then). Each payment is recorded (:class:`FundingPayment`).

Liquidation is not emulated: a test that needs it has a configuration problem.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .accounts import Account, mask
from .market import CandleSeries, EmulatedMarkets

logger = logging.getLogger(__name__)

DEFAULT_LEVERAGE = 10.0
"""Leverage of every perpetual position (initial margin = notional / leverage)."""


@dataclass
class PerpPosition:
    """One account's position in one linear perpetual (mutated under the engine's lock).

    Attributes:
        size_base: signed quantity, base units (> 0 long, < 0 short).
        entry_price_quote: average entry price of the open quantity (0 when flat).
        realised_quote: cumulative realised PnL of closed quantity, quote (before fees).
        fees_quote: cumulative trading fees paid, quote.
        funding_quote: cumulative funding paid (negative: received), quote.
        created_ms, update_ms: first and last change, UTC ms.
    """

    size_base: float = 0.0
    entry_price_quote: float = 0.0
    realised_quote: float = 0.0
    fees_quote: float = 0.0
    funding_quote: float = 0.0
    created_ms: int = 0
    update_ms: int = 0


@dataclass(frozen=True)
class FundingPayment:
    """One funding settlement of one position.

    Attributes:
        api_key, symbol: whose position, in which perpetual.
        ts_ms: the funding time, UTC ms.
        rate: the funding rate (fraction).
        mark_price_quote: the mark price it was settled at.
        size_base: the signed position it was owed on.
        payment_quote: what the account paid (negative: received), ``size * mark * rate``.
    """

    api_key: str
    symbol: str
    ts_ms: int
    rate: float
    mark_price_quote: float
    size_base: float
    payment_quote: float


def mark_price(series: CandleSeries, ts_ms: int) -> float:
    """The mark price at ``ts_ms``: the open of the bar in progress, else the last close."""
    p = series.price_at(ts_ms)
    if p is not None:
        return p
    i = int(np.searchsorted(series.ts_ms, ts_ms, side="right")) - 1
    return float(series.close[i]) if i >= 0 else float(series.open[0])


class PerpLedger:
    """Positions, margin and funding of every account's linear perpetuals.

    Args:
        markets: the listed markets (their candles give mark prices, their funding series the
            funding events).
        leverage: initial margin = notional / leverage.
    """

    def __init__(self, markets: EmulatedMarkets, leverage: float = DEFAULT_LEVERAGE) -> None:
        self.markets = markets
        self.leverage = float(leverage)
        self.positions: dict[tuple[str, str], PerpPosition] = {}
        self.payments: list[FundingPayment] = []
        self.realised_by_trade: dict[int, float] = {}  # trade id -> PnL that fill realised
        # index of each perpetual's next funding event not yet settled
        self._next_funding: dict[str, int] = {s: 0 for s in markets.funding}

    # -- margin -----------------------------------------------------------------------------
    def of(self, api_key: str, settle: str | None = None) -> list[tuple[str, PerpPosition]]:
        """``(symbol, position)`` of an account's open positions (settled in ``settle``)."""
        return [
            (s, p) for (k, s), p in self.positions.items()
            if k == api_key and p.size_base != 0.0
            and (settle is None or self.markets.specs[s].quote == settle)
        ]

    def unrealised(self, api_key: str, settle: str, now_ms: int) -> float:
        """Unrealised PnL of the account's positions settled in ``settle`` at mark, quote."""
        return sum(
            p.size_base * (mark_price(self.markets.series[s], now_ms) - p.entry_price_quote)
            for s, p in self.of(api_key, settle)
        )

    def initial_margin(self, api_key: str, settle: str, now_ms: int) -> float:
        """Initial margin of the account's positions settled in ``settle``, quote."""
        return sum(
            abs(p.size_base) * mark_price(self.markets.series[s], now_ms) / self.leverage
            for s, p in self.of(api_key, settle)
        )

    def margin_adjustment(self, api_key: str, settle: str, now_ms: int) -> float:
        """What cross margin adds to a wallet's free amount: unrealised PnL - initial margin."""
        return self.unrealised(api_key, settle, now_ms) - self.initial_margin(api_key, settle, now_ms)

    def reducible(self, api_key: str, symbol: str, buy: bool) -> float:
        """How much of an order on ``buy``'s side would reduce the current position, base."""
        p = self.positions.get((api_key, symbol))
        if p is None:
            return 0.0
        return max(0.0, -p.size_base) if buy else max(0.0, p.size_base)

    # -- bookings ---------------------------------------------------------------------------
    def book_fill(
        self, account: Account, symbol: str, signed_qty: float, price: float, fee: float, ts_ms: int,
    ) -> float:
        """Apply one fill to the position and the wallet; return the PnL it realised (quote)."""
        spec = self.markets.specs[symbol]
        p = self.positions.setdefault((account.api_key, symbol), PerpPosition(created_ms=ts_ms))
        realised = 0.0
        size = p.size_base
        if size == 0.0 or (size > 0) == (signed_qty > 0):  # opening or adding
            new = size + signed_qty
            p.entry_price_quote = (size * p.entry_price_quote + signed_qty * price) / new
            p.size_base = new
        else:
            closed = min(abs(size), abs(signed_qty))
            realised = closed * (price - p.entry_price_quote) * (1.0 if size > 0 else -1.0)
            new = size + signed_qty
            if abs(signed_qty) <= abs(size):
                p.size_base = 0.0 if abs(signed_qty) == abs(size) else new
                if p.size_base == 0.0:
                    p.entry_price_quote = 0.0
            else:  # flipped: the rest opens at the fill price
                p.size_base, p.entry_price_quote = new, price
        p.realised_quote += realised
        p.fees_quote += fee
        p.update_ms = ts_ms
        account.totals[spec.quote] = account.total(spec.quote) + realised - fee
        account.update_ms = ts_ms
        return realised

    def next_funding_ms(self, now_ms: int) -> tuple[int, str] | None:
        """``(time, symbol)`` of the earliest unsettled funding event at or before ``now_ms``."""
        best: tuple[int, str] | None = None
        for symbol, i in self._next_funding.items():
            series = self.markets.funding[symbol]
            if i < len(series.ts_ms) and int(series.ts_ms[i]) <= now_ms:
                event = (int(series.ts_ms[i]), symbol)
                if best is None or event < best:
                    best = event
        return best

    def settle_funding(self, symbol: str, accounts: dict[str, Account]) -> list[FundingPayment]:
        """Settle ``symbol``'s next funding event on every open position in it."""
        series = self.markets.funding[symbol]
        i = self._next_funding[symbol]
        self._next_funding[symbol] = i + 1
        ts, rate = int(series.ts_ms[i]), float(series.rate[i])
        mark = mark_price(self.markets.series[symbol], ts)
        quote = self.markets.specs[symbol].quote
        made: list[FundingPayment] = []
        for (key, s), p in self.positions.items():
            account = accounts.get(key)
            if s != symbol or p.size_base == 0.0 or account is None:
                continue
            pay = p.size_base * mark * rate
            account.totals[quote] = account.total(quote) - pay
            account.update_ms = ts
            p.funding_quote += pay
            p.update_ms = ts
            made.append(FundingPayment(key, symbol, ts, rate, mark, p.size_base, pay))
            logger.debug("funding symbol=%s key=%s ts_ms=%d rate=%r mark=%r size=%r paid=%r",
                         symbol, mask(key), ts, rate, mark, p.size_base, pay)
        self.payments.extend(made)
        return made


__all__ = ["DEFAULT_LEVERAGE", "FundingPayment", "PerpLedger", "PerpPosition", "mark_price"]
