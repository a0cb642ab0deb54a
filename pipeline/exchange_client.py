"""The pipeline's exchange boundary: building a ccxt client, retries, and error translation.

Everything ccxt raises is translated here into :mod:`coinrl.pipeline.errors` (``raise ... from
e``), and only :class:`~coinrl.pipeline.errors.TemporaryExchangeError` is retried, with capped
exponential backoff and full jitter (tenacity), waiting at least what a ``Retry-After`` header
asked for. ``coinrl.live.exchange`` can reuse the same helpers for its read-only calls.
"""

from __future__ import annotations

import difflib
import logging
import os
import random
from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import urlsplit

import ccxt
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from .errors import (
    AuthenticationError,
    BadSymbol,
    ConfigError,
    ExchangeError,
    InsufficientFunds,
    InvalidOrder,
    TemporaryExchangeError,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

RETRY_INITIAL_S = 0.5
"""First backoff ceiling, seconds (full jitter: the wait is uniform in [0, ceiling])."""
RETRY_MAX_S = 30.0
"""Largest backoff ceiling, seconds."""
RETRY_AFTER_MAX_S = 120.0
"""A ``Retry-After`` longer than this is not waited for: the error is raised instead."""


class RateLimitedError(TemporaryExchangeError):
    """The exchange said "too many requests" (HTTP 429/418); wait ``retry_after_s`` and retry.

    Attributes:
        retry_after_s: the server's ``Retry-After`` in seconds, or None when it sent none.
    """

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def override_api_urls(api: Any, base_url: str) -> Any:
    """Point every URL of a ccxt ``urls["api"]`` tree at ``base_url``, keeping each URL's path.

    ``https://fapi.binance.com/fapi/v1`` with ``http://127.0.0.1:8765`` becomes
    ``http://127.0.0.1:8765/fapi/v1``; a path in ``base_url`` is prepended. Hostname templates
    such as ``{hostname}`` are replaced too.

    Example:
        >>> override_api_urls({"public": "https://api.binance.com/api/v3"}, "http://127.0.0.1:9")
        {'public': 'http://127.0.0.1:9/api/v3'}
    """
    base = urlsplit(base_url)
    if not base.scheme or not base.netloc:
        raise ConfigError(
            f"exchange_url {base_url!r} must be an absolute URL like http://127.0.0.1:8765"
        )
    prefix = f"{base.scheme}://{base.netloc}{base.path.rstrip('/')}"
    if isinstance(api, str):
        return prefix + urlsplit(api).path
    if isinstance(api, Mapping):
        return {k: override_api_urls(v, base_url) for k, v in api.items()}
    return api


def create_exchange(
    exchange: str,
    *,
    exchange_url: str | None = None,
    config: Mapping[str, Any] | None = None,
    strict_json: bool = True,
) -> ccxt.Exchange:
    """A synchronous ccxt client with its rate limiter on.

    Args:
        exchange: ccxt exchange id (``"binance"``, ``"binanceusdm"``, ``"kraken"``, ...).
        exchange_url: send every API request to this base URL instead (the emulator, a proxy).
        config: extra ccxt constructor settings merged over ``{"enableRateLimit": True}``,
            e.g. ``{"timeout": 5000, "options": {"defaultType": "swap"}}``. Keys here never reach
            a log line.
        strict_json: treat an answer that is not valid JSON as an error (ccxt otherwise hands
            the raw text to its parsers, which turn garbage into empty or bogus results).

    Raises:
        ConfigError: unknown exchange id (with close matches) or bad settings.
    """
    if exchange not in ccxt.exchanges:
        close = difflib.get_close_matches(exchange, ccxt.exchanges, n=5)
        raise ConfigError(
            f"unknown exchange {exchange!r}; did you mean one of {close}? "
            f"(any id from ccxt.exchanges works, {len(ccxt.exchanges)} known)"
        )
    settings: dict[str, Any] = {"enableRateLimit": True}
    settings.update(dict(config or {}))
    try:
        client: ccxt.Exchange = getattr(ccxt, exchange)(settings)
    except ccxt.BaseError as e:
        raise ConfigError(f"cannot configure ccxt.{exchange}: {e}") from e
    if exchange_url:
        client.urls["api"] = override_api_urls(client.urls["api"], exchange_url)
    if strict_json:
        _require_json(client)
    logger.debug("exchange client exchange=%s url=%s", exchange, exchange_url or "default")
    return client


def _require_json(client: ccxt.Exchange) -> None:
    """Make every HTTP answer of ``client`` that is not JSON raise ``ccxt.BadResponse``.

    ccxt's ``fetch`` returns the decoded JSON, or the raw body as ``str`` when decoding failed;
    the REST APIs used here always answer JSON, so a ``str`` means a garbled answer.
    """
    raw_fetch = client.fetch

    def fetch(url: str, method: str = "GET", headers: Any = None, body: Any = None) -> Any:
        out = raw_fetch(url, method, headers, body)
        if isinstance(out, str | bytes):
            text = out if isinstance(out, str) else out.decode("utf-8", "replace")
            raise ccxt.BadResponse(f"{client.id} {method} {url}: answer is not JSON: {text[:120]!r}")
        return out

    client.fetch = fetch


def _retry_after_s(client: ccxt.Exchange | None) -> float | None:
    headers = getattr(client, "last_response_headers", None) if client is not None else None
    if not headers:
        return None
    raw = headers.get("Retry-After") or headers.get("retry-after")
    try:
        return float(raw) if raw is not None else None
    except ValueError:  # an HTTP date: not worth parsing, fall back to backoff
        return None


def translate_error(err: BaseException, what: str, client: ccxt.Exchange | None = None) -> ExchangeError:
    """Our taxonomy's error for a ccxt (or decoding) exception raised while doing ``what``.

    Temporary failures (network, timeouts, 429, 5xx, maintenance) become
    :class:`TemporaryExchangeError` (:class:`RateLimitedError` for rate limits); the rest keep
    their meaning (bad symbol, auth, funds, order) or become a plain :class:`ExchangeError`.
    """
    name = getattr(client, "id", "exchange")
    detail = f"{name}: {what} failed: {type(err).__name__}: {str(err)[:300]}"
    if isinstance(err, ccxt.DDoSProtection | ccxt.RateLimitExceeded):
        wait = _retry_after_s(client)
        hint = f" (Retry-After {wait:g} s)" if wait is not None else ""
        return RateLimitedError(f"{detail}{hint}; rate limited, will be retried", wait)
    if isinstance(err, ccxt.NetworkError):
        return TemporaryExchangeError(f"{detail}; a temporary failure, retry later")
    if isinstance(err, ccxt.OperationFailed) and not isinstance(err, ccxt.BadResponse):
        # e.g. Binance -1001 "Internal error; unable to process your request. Please try again."
        return TemporaryExchangeError(f"{detail}; the exchange failed internally, retry later")
    if isinstance(err, ccxt.BadSymbol):
        return BadSymbol(f"{detail}; check the symbol against the exchange's markets")
    if isinstance(err, ccxt.AuthenticationError):
        return AuthenticationError(f"{detail}; check the API key, secret and permissions")
    if isinstance(err, ccxt.InsufficientFunds):
        return InsufficientFunds(detail)
    if isinstance(err, ccxt.InvalidOrder):
        return InvalidOrder(detail)
    if isinstance(err, ccxt.BadResponse):
        return ExchangeError(f"{detail}; the exchange sent an answer that is not understood")
    if isinstance(err, ccxt.BaseError):
        return ExchangeError(detail)
    return ExchangeError(
        f"{detail}; the exchange's answer could not be decoded (malformed or unexpected JSON)"
    )


_JITTER = random.Random(int.from_bytes(os.urandom(16), "big"))  # noqa: S311 - jitter, not crypto
"""The jitter's own generator: never Python's global ``random``, which loading a bundle seeds
(every runner process would then back off in lockstep)."""


def _wait(retry_state: RetryCallState) -> float:
    ceiling = min(RETRY_MAX_S, RETRY_INITIAL_S * 2 ** max(0, retry_state.attempt_number - 1))
    backoff = _JITTER.uniform(0.0, ceiling)  # full jitter
    exc = retry_state.outcome.exception() if retry_state.outcome is not None else None
    after = exc.retry_after_s if isinstance(exc, RateLimitedError) else None
    return max(backoff, after or 0.0)


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, RateLimitedError) and (exc.retry_after_s or 0) > RETRY_AFTER_MAX_S:
        return False
    return isinstance(exc, TemporaryExchangeError)


def _log_retry(retry_state: RetryCallState) -> None:
    exc = retry_state.outcome.exception() if retry_state.outcome is not None else None
    sleep = retry_state.next_action.sleep if retry_state.next_action is not None else 0.0
    logger.warning(
        "retrying attempt=%d sleep_s=%.2f error=%s", retry_state.attempt_number, sleep, exc
    )


_DECODE_ERRORS: tuple[type[BaseException], ...] = (
    TypeError, ValueError, KeyError, IndexError, AttributeError,
)


def call_exchange(
    fn: Callable[[], T],
    what: str,
    *,
    client: ccxt.Exchange | None = None,
    max_retries: int = 5,
) -> T:
    """Run one exchange call, translating errors and retrying only temporary ones.

    Args:
        fn: the call (``lambda: client.fetch_ohlcv(...)``).
        what: what it does, for messages and logs (``"fetch_ohlcv BTC/USDT 1h since=..."``).
        client: the ccxt client (read for ``Retry-After`` and its id).
        max_retries: retries after the first attempt (0 = no retry).

    Raises:
        TemporaryExchangeError: still failing after ``max_retries`` retries.
        ExchangeError: a permanent failure (not retried), or an undecodable answer.
    """
    keep: tuple[type[BaseException], ...] = (ExchangeError, ConfigError)
    translate: tuple[type[BaseException], ...] = (ccxt.BaseError, *_DECODE_ERRORS)

    def attempt() -> T:
        try:
            return fn()
        except keep:
            raise
        except translate as e:
            raise translate_error(e, what, client) from e

    retrying = Retrying(
        retry=retry_if_exception(_retryable),
        stop=stop_after_attempt(max(0, max_retries) + 1),
        wait=_wait,
        before_sleep=_log_retry,
        reraise=True,
    )
    return retrying(attempt)


__all__ = [
    "RETRY_AFTER_MAX_S",
    "RETRY_INITIAL_S",
    "RETRY_MAX_S",
    "RateLimitedError",
    "call_exchange",
    "create_exchange",
    "override_api_urls",
    "translate_error",
]
