"""How the live exchange boundary calls ccxt: error translation, retries and rate limits.

:class:`ExchangeCalls` runs every ccxt call of :class:`~coinrl.live.exchange.ExchangeClient`:
ccxt's errors become :mod:`coinrl.pipeline.errors` (refusals typed once, from the quirks table
in :mod:`coinrl.live.orders`), only temporary failures are retried
(:func:`coinrl.pipeline.exchange_client.call_exchange`), and a ``Retry-After`` longer than the
retry loop waits is waited only when it ends before the decision's deadline, else
:class:`RetryAfterBeyondDeadline`. ccxt's own debug log goes through a filter that masks the
API key and secret.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from types import TracebackType
from typing import Self, TypeVar

import ccxt

from coinrl.pipeline.errors import AuthenticationError, ExchangeError
from coinrl.pipeline.exchange_client import RETRY_AFTER_MAX_S, RateLimitedError, call_exchange

from .keys import credential_hint
from .orders import (
    DuplicateClientOrderId,
    ExchangeQuirks,
    FilterFailure,
    OrderInsufficientFunds,
    classify_refusal,
    quirks_for,
)

BOUNDARY_LOGGER = "coinrl.live.exchange"
"""The one logger name of the exchange boundary (all its modules log under it)."""

logger = logging.getLogger(BOUNDARY_LOGGER)

T = TypeVar("T")


# -- keeping secrets out of ccxt's debug log ---------------------------------------------------
class _RedactSecrets(logging.Filter):
    """Masks registered strings (API keys, secrets) in every record of the logger it sits on."""

    def __init__(self) -> None:
        super().__init__()
        self._values: set[str] = set()

    def add(self, *values: str) -> None:
        self._values.update(v for v in values if v)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._values:
            return True
        try:
            text = record.getMessage()
        except Exception:  # a malformed record: leave it to the handler to report
            return True
        clean = text
        for value in self._values:
            clean = clean.replace(value, "***")
        if clean != text:
            record.msg, record.args = clean, None
        return True


_CCXT_LOGGER = logging.getLogger(f"{BOUNDARY_LOGGER}.ccxt")
_REDACT = _RedactSecrets()
_CCXT_LOGGER.addFilter(_REDACT)


class RetryAfterBeyondDeadline(RateLimitedError):
    """The exchange asked to wait (``Retry-After``) past the next decision's deadline: the
    decision cannot be taken in time and is skipped explicitly (journalled); nothing is sent
    before ``until_ms``.

    Attributes:
        retry_after_s: what the exchange asked, seconds.
        until_ms: the exchange time before which nothing may be asked, UTC ms.
        deadline_ms: the decision's deadline, UTC ms (None when none was set).
    """

    def __init__(self, message: str, retry_after_s: float, until_ms: int, deadline_ms: int | None) -> None:
        super().__init__(message, retry_after_s)
        self.until_ms = until_ms
        self.deadline_ms = deadline_ms


def _short(err: BaseException, n: int = 300) -> str:
    return f"{type(err).__name__}: {str(err)[:n]}"


def _fmt(x: float) -> str:
    return f"{x:.10g}"


class ExchangeCalls:
    """How every exchange call is made: ccxt's errors translated (typed refusals from the quirks
    table), temporary failures retried, a long ``Retry-After`` waited up to the decision
    deadline. The base of :class:`~coinrl.live.exchange.ExchangeClient`, which holds the state
    set here (build it with :func:`~coinrl.live.exchange.connect_to_exchange`).

    Args:
        client: a ccxt client with keys, markets loaded.
        exchange: its ccxt id.
        max_retries: retries of temporary failures per call.
        credentials_hint: what to check when the keys are rejected (for messages).
    """

    def __init__(
        self,
        client: ccxt.Exchange,
        *,
        exchange: str,
        max_retries: int = 5,
        credentials_hint: str = "",
        masked_key: str = "",
    ) -> None:
        self._client = client
        self.exchange_id = exchange
        self.max_retries = max_retries
        self._hint = credentials_hint or credential_hint(exchange)
        self._masked_key = masked_key
        self._symbol_of: dict[str, str] = {}  # client order id -> symbol
        self._cid_of: dict[str, str] = {}  # exchange order id -> client order id
        self.clock_skew_ms: float | None = None
        self.decision_deadline_ms: int | None = None
        """Exchange time (UTC ms) by which the current decision must be taken: a longer
        ``Retry-After`` than :data:`RETRY_AFTER_MAX_S` is waited for when it ends before this,
        else :class:`RetryAfterBeyondDeadline` is raised (None: never waited)."""
        self.sleep: Callable[[float], None] = time.sleep
        """How a Retry-After is waited for, seconds (tests record it instead)."""
        self._last_server_ms: tuple[int, float] | None = None  # (server ms, local monotonic s)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(exchange={self.exchange_id!r}, api_key={self._masked_key!r})"

    # -- plumbing ---------------------------------------------------------------------------
    def _now_estimate_ms(self) -> int | None:
        """The exchange's clock now, from the last time it was read (None: never read)."""
        if self._last_server_ms is None:
            return None
        ms, t = self._last_server_ms
        return ms + int((time.monotonic() - t) * 1000.0)

    def _call(self, fn: Callable[[], T], what: str, *, max_retries: int | None = None) -> T:
        """:meth:`_call_once`, honouring a long ``Retry-After`` up to the decision deadline.

        ``Retry-After`` up to :data:`RETRY_AFTER_MAX_S` is waited by the retry loop; a longer
        one is waited (once) when it ends before :attr:`decision_deadline_ms`, else the call
        fails with :class:`RetryAfterBeyondDeadline` (the runner skips the decision explicitly).
        """
        waited = False
        while True:
            try:
                return self._call_once(fn, what, max_retries=max_retries)
            except RateLimitedError as e:
                ra = e.retry_after_s
                if ra is None or ra <= RETRY_AFTER_MAX_S or isinstance(e, RetryAfterBeyondDeadline):
                    raise
                now = self._now_estimate_ms()
                until = (now if now is not None else time.time_ns() // 1_000_000) + int(ra * 1000)
                deadline = self.decision_deadline_ms
                if not waited and deadline is not None and until < deadline:
                    logger.warning("rate limited: waiting Retry-After %.0f s (before the decision "
                                   "deadline ts_ms=%d) what=%s", ra, deadline, what)
                    self.sleep(float(ra))
                    waited = True
                    continue
                raise RetryAfterBeyondDeadline(
                    f"{e}; the exchange asks to wait {ra:g} s, past the decision deadline "
                    f"ts_ms={deadline}: the decision is skipped, nothing is sent before "
                    f"ts_ms={until}", float(ra), until, deadline,
                ) from e

    def _call_once(self, fn: Callable[[], T], what: str, *, max_retries: int | None = None) -> T:
        """Run one ccxt call: translate its errors (with our hints) and retry temporary ones."""
        def attempt() -> T:
            try:
                return fn()
            except ccxt.InvalidNonce as e:
                raise ExchangeError(
                    f"{self.exchange_id}: {what} failed: the exchange rejected the request "
                    f"timestamp ({_short(e)}); this machine's clock differs from the exchange's "
                    "by more than the receive window: sync it (NTP)"
                ) from e
            except ccxt.AuthenticationError as e:
                raise AuthenticationError(
                    f"{self.exchange_id}: {what} failed: the exchange rejected the API key: "
                    f"check {self._hint}; and that the key is enabled with the permissions "
                    f"needed (reading, spot trading) and its IP whitelist. Exchange said: "
                    f"{_short(e)}"
                ) from e
            except ccxt.ExchangeError as e:
                typed = self._typed_refusal(e, what)
                if typed is not None:
                    raise typed from e
                raise

        return call_exchange(
            attempt, what, client=self._client,
            max_retries=self.max_retries if max_retries is None else max_retries,
        )

    @property
    def quirks(self) -> ExchangeQuirks:
        """What this exchange's answers mean (:data:`coinrl.live.orders.QUIRKS`)."""
        return quirks_for(self.exchange_id)

    def _typed_refusal(self, e: BaseException, what: str) -> ExchangeError | None:
        """The typed error a refusal means (per the quirks table), or None. The one place an
        exchange's message text is read."""
        kind = classify_refusal(self.exchange_id, str(e))
        if kind is DuplicateClientOrderId:
            return DuplicateClientOrderId(
                f"{self.exchange_id}: {what}: the client order id is already used by an open order "
                f"on the exchange ({_short(e)}); look it up, or send a new order with a new id"
            )
        if kind is FilterFailure:
            return FilterFailure(
                f"{self.exchange_id}: {what} was rejected by the exchange's filters: "
                f"{_short(e)}; round the quantity to the lot step and the price to the "
                "tick, and keep the notional above the minimum (see ExchangeClient.market)"
            )
        if kind is OrderInsufficientFunds:
            return OrderInsufficientFunds(
                f"{self.exchange_id}: {what}: the account cannot pay for it ({_short(e)})"
            )
        return None

    def close(self) -> None:
        """Close the HTTP session."""
        session = getattr(self._client, "session", None)
        if session is not None:
            try:
                session.close()
            except Exception:  # closing is best effort
                logger.debug("closing the exchange session failed", exc_info=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


__all__ = ["ExchangeCalls", "RetryAfterBeyondDeadline"]
