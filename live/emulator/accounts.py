"""The emulator's accounts: API key -> secret, permissions and balances.

Accounts are configured when the server is built
(``EmulatorServer(..., accounts={"KEY": ("SECRET", {"USDT": 10_000.0})})``) or later over
``POST /_emulator/accounts``. A balance here is the asset's *total* (free + locked); what is
locked is derived by the matching engine from the account's open orders, so the free amount is
always ``total - locked`` and returns to exactly ``total`` once no order is open.

Secrets never leave this module: they are masked in every ``repr`` and absent from every admin
answer; the signed API only asks :meth:`Accounts.secret_for` to verify a signature.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from coinrl.pipeline.errors import ConfigError

API_KEY_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
"""What the emulator accepts as an API key (Binance's are 64 letters and digits); anything else
in the ``X-MBX-APIKEY`` header is answered with ``-2014 API-key format invalid.``"""


def mask(text: str, keep: int = 4) -> str:
    """``text`` with all but its first ``keep`` characters hidden (``"abcd…"``), for logs."""
    if len(text) <= keep:
        return "…"
    return text[:keep] + "…"


@dataclass
class Account:
    """One emulated account. Mutated only under :attr:`Accounts.lock` by the matching engine.

    Attributes:
        api_key: its key.
        totals: asset -> total amount (free + locked), asset units.
        can_trade: whether it may place and cancel orders.
        uid: a numeric id (answered as ``uid`` by ``/api/v3/account``).
        update_ms: emulated time of the last balance change, UTC ms.
    """

    api_key: str
    _secret: str = field(repr=False)
    totals: dict[str, float] = field(default_factory=dict)
    can_trade: bool = True
    uid: int = 0
    update_ms: int = 0

    def __repr__(self) -> str:
        return f"Account(api_key={mask(self.api_key)!r}, secret='***', totals={self.totals})"

    __str__ = __repr__

    def total(self, asset: str) -> float:
        """Total balance of ``asset`` (0.0 when the account never held it)."""
        return self.totals.get(asset, 0.0)


_ACCOUNT_KEYS = frozenset({"api_key", "secret", "balances", "can_trade"})


def _check_balances(balances: Mapping[str, float], where: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for asset, amount in balances.items():
        if not re.fullmatch(r"[A-Z0-9]{1,20}", asset):
            raise ConfigError(f"{where}: asset {asset!r} must be an upper-case code like USDT")
        try:
            value = float(amount)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{where}: balance of {asset} must be a number, got {amount!r}") from e
        if not (math.isfinite(value) and value >= 0.0):
            raise ConfigError(f"{where}: balance of {asset} must be a finite amount >= 0, got {amount}")
        out[asset] = value
    return out


class Accounts:
    """Thread-safe registry of emulated accounts.

    Args:
        accounts: API key -> ``(secret, {asset: total})``, e.g.
            ``{"KEY": ("SECRET", {"USDT": 10_000.0})}``.

    Attributes:
        lock: the one lock under which balances and orders change (shared with the matching
            engine, so a fill updates both assets of an account atomically).
    """

    def __init__(
        self, accounts: Mapping[str, tuple[str, Mapping[str, float]]] | None = None
    ) -> None:
        self.lock = threading.RLock()
        self._by_key: dict[str, Account] = {}
        self._next_uid = 1000
        for key, value in (accounts or {}).items():
            if not (isinstance(value, tuple | list) and len(value) == 2):
                raise ConfigError(
                    f"accounts[{mask(str(key))!r}] must be (secret, {{asset: amount}}), "
                    f"got a {type(value).__name__}"
                )
            secret, balances = value
            self.add(key, secret, balances)

    def add(
        self,
        api_key: str,
        secret: str,
        balances: Mapping[str, float] | None = None,
        *,
        can_trade: bool = True,
        now_ms: int = 0,
    ) -> Account:
        """Create or replace the account of ``api_key`` (its orders, if any, are kept).

        Args:
            api_key: the key clients send in ``X-MBX-APIKEY`` (letters, digits, ``_``, ``-``).
            secret: the HMAC-SHA256 signing secret (non-empty; never logged or answered).
            balances: asset -> total amount (>= 0, asset units).
            can_trade: False: signed reads work, orders are refused with ``-2015`` (as for a
                Binance key without the trading permission).
            now_ms: emulated time of the change, UTC ms.

        Raises:
            ConfigError: a malformed key, an empty secret or a bad balance (the message never
                contains the secret).
        """
        if not isinstance(api_key, str) or not API_KEY_PATTERN.fullmatch(api_key):
            raise ConfigError(
                f"API key {mask(str(api_key))!r} is malformed: use 1-128 letters, digits, _ or -"
            )
        if not isinstance(secret, str) or not secret or not secret.isprintable():
            raise ConfigError(
                f"account {mask(api_key)}: the secret must be a non-empty printable string"
            )
        totals = _check_balances(balances or {}, f"account {mask(api_key)}")
        with self.lock:
            old = self._by_key.get(api_key)
            uid = old.uid if old is not None else self._next_uid
            if old is None:
                self._next_uid += 1
            account = Account(api_key, secret, totals, bool(can_trade), uid, now_ms)
            self._by_key[api_key] = account
        return account

    def configure(self, payload: Any, now_ms: int = 0) -> list[Account]:
        """Apply an admin payload: one account object or a list of them.

        Each object is ``{"api_key": ..., "secret": ..., "balances": {asset: amount},
        "can_trade": true}`` (``balances`` and ``can_trade`` optional). Every entry is checked
        before any is applied.

        Raises:
            ConfigError: a malformed entry (the message never contains a secret).
        """
        items = payload if isinstance(payload, list) else [payload]
        checked: list[tuple[str, str, dict[str, float], bool]] = []
        for i, item in enumerate(items):
            if not isinstance(item, Mapping):
                raise ConfigError(f"accounts[{i}] must be a JSON object, got {type(item).__name__}")
            unknown = set(item) - _ACCOUNT_KEYS
            missing = {"api_key", "secret"} - set(item)
            if unknown or missing:
                raise ConfigError(
                    f"accounts[{i}]: unknown keys {sorted(unknown)}, missing keys "
                    f"{sorted(missing)}; expected {sorted(_ACCOUNT_KEYS)}"
                )
            balances = item.get("balances") or {}
            if not isinstance(balances, Mapping):
                raise ConfigError(f"accounts[{i}].balances must map asset -> amount")
            key, secret = item["api_key"], item["secret"]
            if not isinstance(key, str) or not API_KEY_PATTERN.fullmatch(key):
                raise ConfigError(f"accounts[{i}].api_key is malformed: use 1-128 letters, digits, _ or -")
            if not isinstance(secret, str) or not secret or not secret.isprintable():
                raise ConfigError(f"accounts[{i}].secret must be a non-empty printable string")
            checked.append((key, secret, _check_balances(balances, f"accounts[{i}]"),
                            bool(item.get("can_trade", True))))
        return [self.add(k, s, b, can_trade=t, now_ms=now_ms) for k, s, b, t in checked]

    def get(self, api_key: str) -> Account | None:
        """The account of ``api_key``, or None."""
        with self.lock:
            return self._by_key.get(api_key)

    def secret_for(self, api_key: str) -> str | None:
        """The signing secret of ``api_key`` (None for an unknown key). Never log it."""
        with self.lock:
            account = self._by_key.get(api_key)
            return account._secret if account is not None else None

    def __contains__(self, api_key: object) -> bool:
        with self.lock:
            return api_key in self._by_key

    def __iter__(self) -> Iterator[Account]:
        with self.lock:
            return iter(list(self._by_key.values()))

    def __len__(self) -> int:
        with self.lock:
            return len(self._by_key)

    def __repr__(self) -> str:
        return f"Accounts({[mask(k) for k in self._by_key]})"


__all__ = ["API_KEY_PATTERN", "Account", "Accounts", "mask"]
