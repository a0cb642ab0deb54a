"""The one error taxonomy of coinrl.

Every stage raises these (never bare ``ValueError`` for user input), so callers and the CLI can
tell bad configuration from bad data from a misbehaving exchange. Messages say what was wrong,
what was expected and what to do about it.

Hierarchy::

    CoinrlError
    ├── ConfigError                 bad YAML / bad value; message names the field path
    ├── DataError                   bad or unusable market data (empty, unsorted, gaps, NaNs, ...)
    │   └── UnknownFormatError      a file none of the readers recognise; lists the known formats
    └── ExchangeError               anything that went wrong talking to an exchange
        ├── TemporaryExchangeError  retryable: timeouts, 429, 5xx, dropped connections
        ├── AuthenticationError     bad keys, bad signature, missing permission
        ├── InsufficientFunds       the account cannot pay for the order
        ├── InvalidOrder            rejected by the exchange's rules (lot size, min notional, ...)
        └── BadSymbol               a symbol or timeframe the exchange does not list
"""

from __future__ import annotations


class CoinrlError(Exception):
    """Base class of every error coinrl raises on purpose."""


class ConfigError(CoinrlError):
    """Configuration is invalid. The message names the offending field path."""


class DataError(CoinrlError):
    """Market data is missing, malformed or unusable as given."""


class UnknownFormatError(DataError):
    """A file matched none of the known OHLCV formats."""


class ExchangeError(CoinrlError):
    """An exchange request failed."""


class TemporaryExchangeError(ExchangeError):
    """A retryable exchange failure (timeout, rate limit, 5xx, dropped connection)."""


class AuthenticationError(ExchangeError):
    """API keys were rejected or lack a needed permission."""


class InsufficientFunds(ExchangeError):
    """The account's balance cannot pay for the order."""


class InvalidOrder(ExchangeError):
    """The order breaks the exchange's rules (lot size, tick size, min notional, ...)."""


class BadSymbol(ExchangeError):
    """The exchange does not list the symbol, or does not support the timeframe."""


__all__ = [
    "AuthenticationError",
    "BadSymbol",
    "CoinrlError",
    "ConfigError",
    "DataError",
    "ExchangeError",
    "InsufficientFunds",
    "InvalidOrder",
    "TemporaryExchangeError",
    "UnknownFormatError",
]
