"""Bybit v5's record shapes for the emulator's orders, fills, funding, positions and wallet.

Pure formatting over the shared :class:`~.matching.MatchingEngine` (used by
:mod:`.bybit_signed`). Every fee is charged in the quote (settle) coin, as the env charges it;
``feeCoin`` says so, and it is the field ccxt reads before guessing from the side.
"""

from __future__ import annotations

from typing import Any

from coinrl.envs.domain import OrderType, Side

from .binance_api import fmt_decimal
from .market import EmulatedMarkets
from .matching import EmulatedOrder, EmulatedTrade, MatchingEngine
from .perps import FundingPayment, PerpLedger, PerpPosition, mark_price


def _side(side: Side) -> str:
    return "Buy" if side is Side.BUY else "Sell"


def order_status(o: EmulatedOrder, spot: bool) -> str:
    """Bybit's ``orderStatus`` of an order (``PartiallyFilledCanceled`` is spot only)."""
    if o.status == "NEW":
        return "New"
    if o.status == "PARTIALLY_FILLED":
        return "PartiallyFilled"
    if o.status == "FILLED":
        return "Filled"
    if o.status == "EXPIRED" and o.executed_base > 0.0 and spot:  # a market order's unfillable rest
        return "PartiallyFilledCanceled"
    return "Cancelled"


def order_json(markets: EmulatedMarkets, engine: MatchingEngine, o: EmulatedOrder) -> dict[str, Any]:
    """Bybit's order object (``order/realtime``, ``order/history``)."""
    spec = markets.specs[o.symbol]
    fee = sum(t.fee_quote for t in engine.trades(o.api_key, o.symbol, o.order_id))
    avg = o.cum_quote / o.executed_base if o.executed_base > 0 else 0.0
    leaves = o.remaining_base if o.is_open else 0.0
    out: dict[str, Any] = {
        "orderId": str(o.order_id), "orderLinkId": o.client_order_id, "blockTradeId": "",
        "symbol": spec.market_id, "price": fmt_decimal(o.limit_price_quote or 0.0),
        "qty": fmt_decimal(o.qty_base), "side": _side(o.side), "isLeverage": "0",
        "positionIdx": 0, "orderStatus": order_status(o, spec.kind == "spot"),
        "cancelType": "UNKNOWN", "rejectReason": "EC_NoError",
        "avgPrice": fmt_decimal(avg) if avg else "", "leavesQty": fmt_decimal(leaves),
        "leavesValue": fmt_decimal(leaves * (o.limit_price_quote or 0.0)),
        "cumExecQty": fmt_decimal(o.executed_base), "cumExecValue": fmt_decimal(o.cum_quote),
        "cumExecFee": fmt_decimal(fee), "timeInForce": o.time_in_force or "IOC",
        "orderType": "Limit" if o.order_type is OrderType.LIMIT else "Market",
        "stopOrderType": "", "orderIv": "", "triggerPrice": "0", "takeProfit": "0",
        "stopLoss": "0", "triggerDirection": 0, "triggerBy": "", "lastPriceOnCreated": "",
        "reduceOnly": False, "closeOnTrigger": False, "smpType": "None", "smpGroup": 0,
        "smpOrderId": "", "placeType": "", "createdTime": str(o.submit_ms),
        "updatedTime": str(o.update_ms),
    }
    if o.order_type is OrderType.MARKET and spec.kind == "spot":
        out["marketUnit"] = "baseCoin"
    if fee:
        out["cumFeeDetail"] = {spec.quote: fmt_decimal(fee)}
    return out


def execution_json(markets: EmulatedMarkets, engine: MatchingEngine, t: EmulatedTrade) -> dict[str, Any]:
    """Bybit's ``execution/list`` row of a fill (``execType=Trade``)."""
    spec = markets.specs[t.symbol]
    order = engine.find(t.api_key, t.symbol, order_id=t.order_id)
    fee_rate = t.fee_quote / t.quote_qty if t.quote_qty else 0.0
    return {
        "symbol": spec.market_id, "orderId": str(t.order_id), "orderLinkId": t.client_order_id,
        "side": _side(t.side), "orderPrice": fmt_decimal(order.limit_price_quote or 0.0),
        "orderQty": fmt_decimal(order.qty_base), "leavesQty": fmt_decimal(order.remaining_base),
        "createType": "CreateByUser",
        "orderType": "Limit" if order.order_type is OrderType.LIMIT else "Market",
        "stopOrderType": "", "execFee": fmt_decimal(t.fee_quote), "execId": str(t.trade_id),
        "execPrice": fmt_decimal(t.price_quote), "execQty": fmt_decimal(t.qty_base),
        "execType": "Trade", "execValue": fmt_decimal(t.quote_qty), "execTime": str(t.ts_ms),
        "feeCurrency": t.fee_asset, "feeCoin": t.fee_asset, "isMaker": t.is_maker,
        "feeRate": fmt_decimal(fee_rate), "tradeIv": "", "markIv": "", "markPrice": "",
        "indexPrice": "", "underlyingPrice": "", "blockTradeId": "", "closedSize": "",
        "seq": t.trade_id,
    }


def funding_json(markets: EmulatedMarkets, f: FundingPayment, exec_id: str) -> dict[str, Any]:
    """Bybit's ``execution/list`` row of a funding settlement (``execType=Funding``):
    ``execFee`` is what the account paid (negative: received), ``feeRate`` the rate."""
    spec = markets.specs[f.symbol]
    return {
        "symbol": spec.market_id, "orderId": "", "orderLinkId": "",
        "side": "Buy" if f.size_base > 0 else "Sell", "orderPrice": "0",
        "orderQty": "0", "leavesQty": "0", "createType": "", "orderType": "UNKNOWN",
        "stopOrderType": "", "execFee": fmt_decimal(f.payment_quote), "execId": exec_id,
        "execPrice": fmt_decimal(f.mark_price_quote), "execQty": fmt_decimal(abs(f.size_base)),
        "execType": "Funding", "execValue": fmt_decimal(abs(f.size_base) * f.mark_price_quote),
        "execTime": str(f.ts_ms), "feeCurrency": spec.quote, "feeCoin": spec.quote,
        "isMaker": False, "feeRate": fmt_decimal(f.rate), "tradeIv": "", "markIv": "",
        "markPrice": fmt_decimal(f.mark_price_quote), "indexPrice": "", "underlyingPrice": "",
        "blockTradeId": "", "closedSize": "", "seq": 0,
    }


def position_json(
    markets: EmulatedMarkets, perps: PerpLedger, symbol: str, p: PerpPosition, now_ms: int,
) -> dict[str, Any]:
    """Bybit's ``position/list`` row (one-way mode, cross margin)."""
    mark = mark_price(markets.series[symbol], now_ms)
    value = abs(p.size_base) * mark
    return {
        "positionIdx": 0, "riskId": 1, "riskLimitValue": "2000000",
        "symbol": markets.specs[symbol].market_id,
        "side": "Buy" if p.size_base > 0 else "Sell" if p.size_base < 0 else "",
        "size": fmt_decimal(abs(p.size_base)), "avgPrice": fmt_decimal(p.entry_price_quote),
        "positionValue": fmt_decimal(abs(p.size_base) * p.entry_price_quote), "tradeMode": 0,
        "positionStatus": "Normal", "autoAddMargin": 0, "adlRankIndicator": 2,
        "leverage": fmt_decimal(perps.leverage), "positionBalance": fmt_decimal(value / perps.leverage),
        "markPrice": fmt_decimal(mark), "liqPrice": "", "bustPrice": "",
        "positionIM": fmt_decimal(value / perps.leverage), "positionMM": "0", "tpslMode": "Full",
        "takeProfit": "0", "stopLoss": "0", "trailingStop": "0",
        "unrealisedPnl": fmt_decimal(p.size_base * (mark - p.entry_price_quote)),
        "curRealisedPnl": fmt_decimal(p.realised_quote - p.fees_quote - p.funding_quote),
        "cumRealisedPnl": fmt_decimal(p.realised_quote - p.fees_quote - p.funding_quote),
        "seq": 0, "isReduceOnly": False, "mmrSysUpdatedTime": "", "leverageSysUpdatedTime": "",
        "sessionAvgPrice": "", "createdTime": str(p.created_ms), "updatedTime": str(p.update_ms),
    }


def wallet_json(markets: EmulatedMarkets, engine: MatchingEngine, api_key: str, now_ms: int) -> dict[str, Any]:
    """``account/wallet-balance``'s unified wallet: per coin the wallet balance (realised),
    ``locked`` by spot orders, ``totalOrderIM`` by perpetual orders, ``totalPositionIM`` and
    the unrealised PnL of the positions settled in it (cross margin)."""
    order_im: dict[str, float] = {}
    for o in engine.open_orders(api_key):
        if markets.specs[o.symbol].kind == "linear":
            order_im[o.lock_asset] = order_im.get(o.lock_asset, 0.0) + o.lock_amount
    coins = []
    for asset, (free, locked) in engine.balances(api_key).items():
        wallet, o_im = free + locked, order_im.get(asset, 0.0)
        upnl = engine.perps.unrealised(api_key, asset, now_ms)
        p_im = engine.perps.initial_margin(api_key, asset, now_ms)
        coins.append({
            "coin": asset, "equity": fmt_decimal(wallet + upnl), "usdValue": "",
            "walletBalance": fmt_decimal(wallet), "locked": fmt_decimal(locked - o_im),
            "totalOrderIM": fmt_decimal(o_im), "totalPositionIM": fmt_decimal(p_im),
            "totalPositionMM": "0", "unrealisedPnl": fmt_decimal(upnl), "cumRealisedPnl": "0",
            "borrowAmount": "0", "accruedInterest": "0", "bonus": "0", "collateralSwitch": True,
            "marginCollateral": True, "spotHedgingQty": "0",
        })
    return {"list": [{"accountType": "UNIFIED", "totalEquity": "", "totalWalletBalance": "",
                      "totalMarginBalance": "", "totalAvailableBalance": "", "totalPerpUPL": "0",
                      "totalInitialMargin": "0", "totalMaintenanceMargin": "0",
                      "accountIMRate": "0", "accountMMRate": "0", "accountLTV": "0",
                      "coin": coins}]}


__all__ = ["execution_json", "funding_json", "order_json", "order_status", "position_json",
           "wallet_json"]
