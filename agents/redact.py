"""Secrets never leave the process: scrub them from anything written to a bundle, W&B or a log.

A key is secret when its name contains ``key``, ``secret``, ``token``, ``password`` (also
``passphrase``, ``credential``, ``auth``), case-insensitive, in any nesting of mappings and
lists. Such entries are dropped, not masked: a bundle or run config then simply lacks them, and
the live stage reads credentials from the environment, never from a saved config.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

SECRET_KEY_RE = re.compile(r"key|secret|token|passw(or)?d|passphrase|credential|auth", re.IGNORECASE)
"""Names of keys whose values are secret."""


def is_secret_key(name: object) -> bool:
    """True when ``name`` looks like the name of a secret (``api_key``, ``apiSecret``, ...)."""
    return isinstance(name, str) and SECRET_KEY_RE.search(name) is not None


def scrub_secrets(obj: Any) -> Any:
    """A deep copy of ``obj`` without any mapping entry whose key names a secret.

    Example:
        >>> scrub_secrets({"exchange": {"name": "binance", "api_key": "abc"}, "seed": 1})
        {'exchange': {'name': 'binance'}, 'seed': 1}
    """
    if isinstance(obj, Mapping):
        return {k: scrub_secrets(v) for k, v in obj.items() if not is_secret_key(k)}
    if isinstance(obj, list | tuple):
        return [scrub_secrets(v) for v in obj]
    return obj


def secret_paths(obj: Any, prefix: str = "") -> list[str]:
    """Dotted paths of the secret entries in ``obj`` (for warnings; values are never shown)."""
    out: list[str] = []
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            path = f"{prefix}.{k}" if prefix else str(k)
            if is_secret_key(k):
                out.append(path)
            else:
                out.extend(secret_paths(v, path))
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            out.extend(secret_paths(v, f"{prefix}[{i}]"))
    return out


__all__ = ["SECRET_KEY_RE", "is_secret_key", "scrub_secrets", "secret_paths"]
