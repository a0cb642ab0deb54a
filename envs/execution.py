"""Execution model: order sizing, exchange rules, fill price, fees and slippage.

How an order for a *target exposure* becomes a fill (the rules the books kernel, the backtester
and the paper broker share):

1. Sizing at the fill bar's open ``o`` (the reference price) with equity ``E = cash + qty * o``:
   target quantity ``x = exposure * E / o`` (exposure = position notional / equity).
2. Buying-power cap: after paying costs the position may not exceed ``max_leverage * equity``:
   ``x <= k * (E / o + qty * c)`` and, with shorting, ``x >= -k * (E / o - qty * c)``, with
   ``k = max_leverage / (1 + max_leverage * c) * (1 - 1e-12)`` and ``c`` the cost fraction
   (taker fee + slippage + impact). The ``1e-12`` shave keeps rounding from ever spending a
   cent more than the account has: a spot account's cash never goes below zero.
3. Exchange rules: the order ``dq = x - qty`` is rounded toward zero to ``lot_size_base`` (an
   order that would then flip the position although ``x`` is on its side, by float rounding of
   lot multiples, closes it exactly instead); an order below ``min_notional_quote`` or below
   ``rebalance_threshold * E`` is not sent, except a close to flat (a reduce-only close is always
   allowed, so no dust position is left).
4. Costs on the notional ``|dq| * o``: fee = notional * taker fee (every env order is a market
   order); slippage = notional * (slippage_bps / 1e4 + min(impact_coef * |dq| / volume,
   max_impact_frac)). The fill price is ``o * (1 + slip)`` for buys and ``o * (1 - slip)`` for
   sells; the books keep the reference price and book the slippage as a cost of its own.

The books kernel (:mod:`coinrl.envs.kernel`, :mod:`coinrl.envs.portfolio_bar`) is the one
implementation of rules 1-4 for the envs, the rollouts and the backtests (whose fills read the
kernel's running cost totals); the exchange broker sizes its orders with the kernel's
``_size_order_eq``. This module holds the constants of the rules (:class:`ExecutionModel`, which
:func:`coinrl.envs.kernel.make_params` reads) and the order -> fill path of the paper broker and
the exchange emulator (:meth:`ExecutionModel.market_fill`), held equal to the kernel's charges
by the tests; the numpy oracles of the sizing live in ``tests/envs/numpy_books.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from coinrl.pipeline.errors import InvalidOrder

from .config import EnvConfig
from .domain import Fill, Order, OrderType, Side

SHAVE = 1.0 - 1e-12
"""Factor on the buying-power cap that absorbs float rounding (see module docstring)."""

MIN_VOLUME_BASE = 1e-12
"""Volume floor in the impact term, so a zero-volume bar gives the capped impact, not inf."""


@dataclass(frozen=True, slots=True)
class ExecutionModel:
    """Constants of the fill rules, derived once from :class:`EnvConfig`.

    Attributes:
        taker_fee_rate, maker_fee_rate: fee fractions of notional.
        slippage_frac: fixed slippage fraction (``slippage_bps / 1e4``).
        impact_coef, max_impact_frac: volume-participation impact and its cap.
        min_notional_quote: smallest order notional the exchange accepts.
        lot_size_base: quantity step (0 = continuous).
        rebalance_threshold: smallest rebalance as a fraction of equity.
        max_leverage: cap on ``|position notional| / equity``.
        allow_short: whether the position may go negative.
    """

    taker_fee_rate: float
    maker_fee_rate: float
    slippage_frac: float
    impact_coef: float
    max_impact_frac: float
    min_notional_quote: float
    lot_size_base: float
    rebalance_threshold: float
    max_leverage: float
    allow_short: bool
    _cf: float = 0.0
    _k: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "_cf", self.base_cost_frac)
        object.__setattr__(self, "_k", self.cap_factor)

    @classmethod
    def from_config(cls, config: EnvConfig) -> ExecutionModel:
        """Take the execution fields of an :class:`EnvConfig`."""
        return cls(
            taker_fee_rate=config.taker_fee_rate,
            maker_fee_rate=config.maker_fee_rate,
            slippage_frac=config.slippage_frac,
            impact_coef=config.impact_coef,
            max_impact_frac=config.max_impact_frac,
            min_notional_quote=config.min_notional_quote,
            lot_size_base=config.lot_size_base,
            rebalance_threshold=config.rebalance_threshold,
            max_leverage=config.max_leverage,
            allow_short=config.allow_short,
        )

    # ------------------------------------------------------------------ derived constants
    @property
    def base_cost_frac(self) -> float:
        """Cost fraction of a market order before impact: taker fee + fixed slippage."""
        return self.taker_fee_rate + self.slippage_frac

    @property
    def cap_factor(self) -> float:
        """``k`` of the buying-power cap for the impact-free cost fraction."""
        lev = self.max_leverage
        return lev / (1.0 + lev * self.base_cost_frac) * SHAVE

    # ------------------------------------------------------------------ costs
    def costs(self, dq_base: float, price_quote: float, volume_base: float) -> tuple[float, float, float]:
        """``(notional_quote, fee_quote, slippage_quote)`` of a market order (scalar form)."""
        adq = abs(dq_base)
        notional = adq * price_quote
        fee = notional * self.taker_fee_rate
        if self.impact_coef > 0.0:
            sf = self.slippage_frac + min(
                self.impact_coef * (adq / max(volume_base, MIN_VOLUME_BASE)), self.max_impact_frac
            )
        else:
            sf = self.slippage_frac
        return notional, fee, notional * sf

    # ------------------------------------------------------------------ orders -> fills
    def check_order(self, order: Order, ref_price_quote: float) -> None:
        """Reject an order that breaks the exchange rules, as the exchange would.

        Raises:
            InvalidOrder: quantity not a multiple of the lot size, or notional below minimum.
        """
        if self.lot_size_base > 0.0:
            steps = order.qty_base / self.lot_size_base
            if abs(steps - round(steps)) > 1e-9:
                raise InvalidOrder(
                    f"order {order.order_id}: qty {order.qty_base} is not a multiple of the lot "
                    f"size {self.lot_size_base}; round it down with round_qty()"
                )
        notional = order.qty_base * ref_price_quote
        if notional < self.min_notional_quote and not order.reduce_only:
            raise InvalidOrder(
                f"order {order.order_id}: notional {notional:.8g} is below the minimum "
                f"{self.min_notional_quote}; send a larger order"
            )

    def round_qty(self, qty_base: float) -> float:
        """Round a quantity toward zero to the lot size."""
        if self.lot_size_base <= 0.0:
            return qty_base
        return math.trunc(qty_base / self.lot_size_base) * self.lot_size_base

    def market_fill(
        self, order: Order, ref_price_quote: float, volume_base: float, fill_id: str, ts_ms: int
    ) -> Fill:
        """Fill a market order against the reference price (paper broker, backtests).

        Args:
            order: a MARKET order.
            ref_price_quote: the price it executes against (the next bar's open).
            volume_base: that bar's volume, for the impact term.
            fill_id: unique id of the fill.
            ts_ms: fill time (epoch ms).

        Returns:
            A taker :class:`~coinrl.envs.domain.Fill` at the slipped price, with the same fee
            and slippage as the books kernel charges for the same quantity.

        Raises:
            InvalidOrder: a non-market order or one that breaks the exchange rules.
        """
        if order.order_type is not OrderType.MARKET:
            raise InvalidOrder(
                f"order {order.order_id} is {order.order_type.value}; market_fill fills market orders"
            )
        self.check_order(order, ref_price_quote)
        sign = 1.0 if order.side is Side.BUY else -1.0
        _, fee, slip = self.costs(sign * order.qty_base, ref_price_quote, volume_base)
        price = ref_price_quote + sign * slip / order.qty_base
        return Fill(
            fill_id=fill_id,
            order_id=order.order_id,
            symbol=order.symbol,
            side=order.side,
            qty_base=order.qty_base,
            price_quote=price,
            fee_quote=fee,
            ts_ms=ts_ms,
            slippage_quote=slip,
            liquidity="taker",
        )
