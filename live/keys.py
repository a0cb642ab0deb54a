"""Exchange API credentials: from environment variables or a private key file, never from config.

Where :func:`load_credentials` looks, first match wins:

1. ``COINRL_<EXCHANGE>_API_KEY`` and ``COINRL_<EXCHANGE>_API_SECRET`` (``COINRL_BINANCE_API_KEY``);
2. ``COINRL_API_KEY`` and ``COINRL_API_SECRET``;
3. a JSON key file: the ``key_file`` argument, else ``$COINRL_KEY_FILE``, else
   ``~/.config/coinrl/keys.json`` when it exists. It holds ``{"api_key": ..., "secret": ...}``
   or one such object per exchange id (``{"binance": {"api_key": ..., "secret": ...}}``) and
   must be readable by its owner only (mode 0600): a group- or world-readable file is refused
   with the ``chmod`` to run.

:class:`Credentials` keeps the secret out of every ``repr``/``str`` (masked), cannot be pickled,
and is deliberately not a pydantic model: no YAML config, W&B run config or saved bundle can
hold or load it.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

from coinrl.pipeline.errors import ConfigError

logger = logging.getLogger(__name__)

ENV_API_KEY = "COINRL_API_KEY"
ENV_API_SECRET = "COINRL_API_SECRET"  # noqa: S105 - a variable name, not a secret
ENV_KEY_FILE = "COINRL_KEY_FILE"
DEFAULT_KEY_FILE = Path("~/.config/coinrl/keys.json")


def exchange_env_names(exchange: str) -> tuple[str, str]:
    """Per-exchange variable names: ``("COINRL_BINANCE_API_KEY", "COINRL_BINANCE_API_SECRET")``."""
    tag = "".join(ch if ch.isalnum() else "_" for ch in exchange).upper()
    return f"COINRL_{tag}_API_KEY", f"COINRL_{tag}_API_SECRET"


def credential_hint(exchange: str) -> str:
    """Where credentials for ``exchange`` come from, for error messages."""
    key_var, secret_var = exchange_env_names(exchange)
    return (
        f"{ENV_API_KEY}/{ENV_API_SECRET} (or {key_var}/{secret_var}) or the mode-0600 key "
        f"file named by {ENV_KEY_FILE} (default {DEFAULT_KEY_FILE}, holding "
        '{"api_key": ..., "secret": ...})'
    )


class Credentials:
    """An API key and its secret. The secret never appears in ``repr``/``str``.

    Args:
        api_key: the exchange API key (sent to the exchange in a header).
        secret: the signing secret (never sent; read it with :meth:`reveal_secret`).
        source: where they came from (``"env:COINRL_API_KEY"``, ``"file:/path"``, ``"argument"``).

    Example:
        >>> c = Credentials("abcd1234", "s3cr3t-value")
        >>> c
        Credentials(api_key='abcd…', secret='***', source='argument')
        >>> "s3cr3t" in repr(c) + str(c)
        False
    """

    __slots__ = ("_api_key", "_secret", "_source")

    def __init__(self, api_key: str, secret: str, source: str = "argument") -> None:
        if not isinstance(api_key, str) or not api_key.strip():
            raise ConfigError(f"the API key from {source} is empty")
        if not isinstance(secret, str) or not secret.strip():
            raise ConfigError(f"the API secret from {source} is empty")
        self._api_key = api_key.strip()
        self._secret = secret.strip()
        self._source = source

    @property
    def api_key(self) -> str:
        """The API key (not secret on its own, but still masked in logs: use :attr:`masked_key`)."""
        return self._api_key

    @property
    def masked_key(self) -> str:
        """The key's first 4 characters and an ellipsis, for log lines."""
        return self._api_key[:4] + "…"

    @property
    def source(self) -> str:
        """Where the credentials were read from."""
        return self._source

    def reveal_secret(self) -> str:
        """The secret itself, for the one place that signs requests (the ccxt client)."""
        return self._secret

    def __repr__(self) -> str:
        return f"Credentials(api_key={self.masked_key!r}, secret='***', source={self._source!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Credentials):
            return NotImplemented
        return self._api_key == other._api_key and self._secret == other._secret

    def __hash__(self) -> int:
        return hash((self._api_key, self._secret))

    def __reduce__(self) -> NoReturn:
        raise TypeError(
            "Credentials cannot be pickled or saved: load them at run time with load_credentials()"
        )


def _from_env(env: Mapping[str, str], key_var: str, secret_var: str) -> Credentials | None:
    key, secret = env.get(key_var, ""), env.get(secret_var, "")
    if not key and not secret:
        return None
    if not key or not secret:
        have, missing = (key_var, secret_var) if key else (secret_var, key_var)
        raise ConfigError(f"{have} is set but {missing} is not; set both (or neither)")
    return Credentials(key, secret, source=f"env:{key_var}")


def check_key_file_mode(path: Path) -> None:
    """Refuse a key file that anyone but its owner can read or write.

    Raises:
        ConfigError: the file is group/world accessible, with the ``chmod`` that fixes it.
    """
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ConfigError(
            f"key file {path} has mode {mode:04o}: it is readable or writable by other users; "
            f"run: chmod 600 {path}"
        )


def read_key_file(path: str | Path, exchange: str = "binance") -> Credentials:
    """Credentials for ``exchange`` from a mode-0600 JSON key file.

    The file holds ``{"api_key": ..., "secret": ...}`` or ``{"<exchange>": {...}, ...}``.

    Raises:
        ConfigError: missing or unreadable file, wrong mode, bad JSON or missing fields (the
            message never contains the file's content).
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"key file {p} does not exist; set {credential_hint(exchange)}")
    check_key_file_mode(p)
    try:
        data: Any = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ConfigError(
            f"key file {p} is not readable JSON ({type(e).__name__}); it must hold "
            '{"api_key": ..., "secret": ...}'
        ) from None
    if isinstance(data, dict) and isinstance(data.get(exchange), dict):
        data = data[exchange]
    if not (isinstance(data, dict) and isinstance(data.get("api_key"), str)
            and isinstance(data.get("secret"), str)):
        raise ConfigError(
            f'key file {p} must hold {{"api_key": "...", "secret": "..."}} (strings), or such an '
            f'object under "{exchange}"'
        )
    return Credentials(data["api_key"], data["secret"], source=f"file:{p}")


def load_credentials(
    exchange: str = "binance",
    *,
    key_file: str | Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Credentials:
    """Find the API credentials for ``exchange`` (see the module docstring for the order).

    Args:
        exchange: ccxt exchange id; selects ``COINRL_<EXCHANGE>_API_KEY`` and the key file entry.
        key_file: a key file to read when no variable is set (default ``$COINRL_KEY_FILE``, then
            ``~/.config/coinrl/keys.json`` if it exists).
        env: the environment to read (default ``os.environ``).

    Raises:
        ConfigError: nothing found, a half-set pair, or a bad key file; the message says what
            to set.
    """
    environ = os.environ if env is None else env
    found = _from_env(environ, *exchange_env_names(exchange)) or _from_env(
        environ, ENV_API_KEY, ENV_API_SECRET
    )
    if found is None:
        path = key_file or environ.get(ENV_KEY_FILE)
        if path is None and DEFAULT_KEY_FILE.expanduser().is_file():
            path = DEFAULT_KEY_FILE
        if path is not None:
            found = read_key_file(path, exchange)
    if found is None:
        raise ConfigError(f"no API credentials for {exchange}: set {credential_hint(exchange)}")
    logger.info("credentials loaded exchange=%s key=%s source=%s", exchange, found.masked_key,
                found.source)
    return found


__all__ = [
    "DEFAULT_KEY_FILE",
    "ENV_API_KEY",
    "ENV_API_SECRET",
    "ENV_KEY_FILE",
    "Credentials",
    "check_key_file_mode",
    "credential_hint",
    "exchange_env_names",
    "load_credentials",
    "read_key_file",
]
