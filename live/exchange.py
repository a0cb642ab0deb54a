"""The live exchange boundary: the only modules in ``coinrl.live`` that talk to ccxt.

:func:`connect_to_exchange` builds a signed ccxt client for any ccxt exchange id and checks,
before anything trades, that the exchange answers, that the local clock agrees with the
exchange's, that the markets load and the asked-for symbols exist (close matches suggested), and
that the keys work (a balance call). :class:`ExchangeClient` is what the brokers use; every name
of the boundary is importable from here. Its modules, one job each:

* :mod:`.exchange_records`: what the exchange reports (:class:`Balance`,
  :class:`ExchangeOrder`, :class:`ExchangeTrade`) and our client order ids.
* :mod:`.exchange_calls`: how a call is made (error translation, retries, ``Retry-After`` up
  to the decision deadline, secrets kept out of ccxt's log).
* :mod:`.exchange_market`: markets, clock, balances, rounding and order limits, closed candles.
* :mod:`.exchange_orders`: :class:`ExchangeClient`, the order calls.
* this module: :func:`connect_to_exchange` (client construction and the checks before trading).

Rules:

* Every ccxt error is translated into :mod:`coinrl.pipeline.errors` here (``raise ... from e``)
  and only :class:`~coinrl.pipeline.errors.TemporaryExchangeError` is retried (capped exponential
  backoff with jitter, honouring ``Retry-After``: :func:`coinrl.pipeline.exchange_client.call_exchange`).
* Orders are idempotent through client order ids: after a timeout, a dropped connection or a
  5xx the order is LOOKED UP by its client order id before anything is re-sent, and it is re-sent
  (with the same id, so the exchange itself refuses a duplicate) only when the exchange says it
  does not have it. An order is never blindly re-sent.
* Quantities are rounded down to the lot step and prices to the tick before sending, and checked
  against the market's minimum quantity and notional; a violation is an
  :class:`~coinrl.pipeline.errors.InvalidOrder` that gives the numbers.
* Secrets never reach a log line: ccxt's verbose mode is forced off and ccxt's own debug log
  (which prints request headers, hence the API key) goes through a filter that masks the key and
  the secret.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from coinrl.pipeline.errors import ConfigError, ExchangeError
from coinrl.pipeline.exchange_client import create_exchange

from .exchange_calls import _CCXT_LOGGER, _REDACT, BOUNDARY_LOGGER, RetryAfterBeyondDeadline
from .exchange_orders import ExchangeClient
from .exchange_records import (
    CLIENT_ORDER_ID_PATTERN,
    Balance,
    ExchangeOrder,
    ExchangeTrade,
    OrderStatusName,
    new_client_order_id,
)
from .keys import Credentials, credential_hint, load_credentials

logger = logging.getLogger(BOUNDARY_LOGGER)

DEFAULT_MAX_CLOCK_SKEW_MS = 1000.0
"""Largest accepted difference between the exchange's clock and this machine's, ms (Binance
rejects requests more than 1000 ms ahead of its clock)."""


def connect_to_exchange(
    api_key: str | None = None,
    secret_key: str | None = None,
    *,
    exchange: str = "binance",
    exchange_url: str | None = None,
    credentials: Credentials | None = None,
    key_file: str | Path | None = None,
    symbols: Sequence[str] = (),
    max_clock_skew_ms: float | None = DEFAULT_MAX_CLOCK_SKEW_MS,
    max_retries: int = 5,
    timeout_ms: int = 10_000,
    config: Mapping[str, Any] | None = None,
) -> ExchangeClient:
    """Connect to any ccxt exchange with API keys, checking everything before trading.

    Checks, in order: the markets load (the exchange answers); the clock skew (exchange time vs
    local) is within ``max_clock_skew_ms``; the keys work (a balance call); every symbol in
    ``symbols`` is listed.

    Args:
        api_key, secret_key: the credentials; when omitted, ``credentials`` or
            :func:`coinrl.live.keys.load_credentials` (environment variables, key file).
        exchange: ccxt exchange id.
        exchange_url: send every request to this base URL (the emulator).
        credentials: a :class:`~coinrl.live.keys.Credentials` (instead of the two strings).
        key_file: a key file for :func:`~coinrl.live.keys.load_credentials`.
        symbols: symbols the caller will trade (unknown ones fail now, with close matches).
        max_clock_skew_ms: largest accepted |exchange time - local time|, ms; None skips the
            check (an emulator replaying history runs on a clock far from the local one).
        max_retries: retries of temporary failures per call.
        timeout_ms: HTTP timeout per request, ms.
        config: extra ccxt settings (``{"enableRateLimit": False}``, ``{"options": {...}}``);
            ``verbose`` is always forced off.

    Returns:
        A connected :class:`ExchangeClient`.

    Raises:
        ConfigError: no credentials, a half-given pair, an unknown exchange id.
        AuthenticationError: the exchange rejected the key or secret (not retried).
        ExchangeError: the clock skew is over ``max_clock_skew_ms``.
        BadSymbol: a symbol in ``symbols`` is not listed (close matches in the message).
        TemporaryExchangeError: the exchange could not be reached after the retries.
    """
    if (api_key is None) != (secret_key is None):
        raise ConfigError("give both api_key and secret_key, or neither (then "
                          f"{credential_hint(exchange)} are used)")
    if api_key is not None and secret_key is not None:
        creds = Credentials(api_key, secret_key, source="argument")
    elif credentials is not None:
        creds = credentials
    else:
        creds = load_credentials(exchange, key_file=key_file)
    _REDACT.add(creds.api_key, creds.reveal_secret())
    settings: dict[str, Any] = {"enableRateLimit": True, "timeout": int(timeout_ms)}
    settings.update(dict(config or {}))
    if settings.get("verbose"):
        logger.warning("ccxt verbose mode requested; it is forced off (it would log API keys)")
    settings.update(apiKey=creds.api_key, secret=creds.reveal_secret(), verbose=False)
    client = create_exchange(exchange, exchange_url=exchange_url, config=settings)
    client.logger = _CCXT_LOGGER
    fetch_open = client.options.get("fetchOpenOrders") if isinstance(client.options, dict) else None
    if isinstance(fetch_open, dict):
        fetch_open["warnWithoutSymbol"] = False  # open_orders(None) is a deliberate choice
    ex = ExchangeClient(client, exchange=exchange, max_retries=max_retries,
                        credentials_hint=credential_hint(exchange), masked_key=creds.masked_key)
    try:
        ex._call(client.load_markets, "load_markets")
        if max_clock_skew_ms is not None:
            skew = ex.measure_clock_skew_ms()
            if abs(skew) > max_clock_skew_ms:
                raise ExchangeError(
                    f"{exchange}: this machine's clock is {abs(skew):.0f} ms "
                    f"{'behind' if skew > 0 else 'ahead of'} the exchange's (more than "
                    f"max_clock_skew_ms={max_clock_skew_ms:g}); signed requests would be "
                    "rejected: sync the clock (NTP), or pass max_clock_skew_ms=None for an "
                    "emulator replaying history"
                )
        ex.balances()
        for symbol in symbols:
            ex.market(symbol)
    except BaseException:
        ex.close()
        raise
    logger.info(
        "connected exchange=%s url=%s markets=%d key=%s source=%s clock_skew_ms=%s",
        exchange, exchange_url or "default", len(client.markets or {}), creds.masked_key,
        creds.source, "unchecked" if ex.clock_skew_ms is None else f"{ex.clock_skew_ms:.0f}",
    )
    return ex


__all__ = [
    "CLIENT_ORDER_ID_PATTERN",
    "DEFAULT_MAX_CLOCK_SKEW_MS",
    "Balance",
    "ExchangeClient",
    "ExchangeOrder",
    "ExchangeTrade",
    "OrderStatusName",
    "RetryAfterBeyondDeadline",
    "connect_to_exchange",
    "new_client_order_id",
]
