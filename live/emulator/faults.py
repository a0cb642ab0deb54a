"""Faults the emulator can inject, switchable at runtime (thread-safe).

A :class:`FaultPlan` is an ordered list of :class:`FaultRule`. For every request (admin paths
under ``/_emulator`` excepted) the plan decides, in rule order:

* every matching ``latency`` rule that fires adds its delay (they add up);
* the first matching non-latency rule that fires decides the answer: ``rate_limit`` (HTTP 429,
  ``Retry-After`` header, Binance's ``-1003`` body), ``server_error`` (a gateway's 502/503/504
  page, or 500 with Binance's ``-1001`` body), ``drop`` (the connection is closed without an
  answer) or ``garbage`` (HTTP 200 with a body that is not JSON). Later rules are not consulted, so their counts are not used up.

The order half adds:

* ``drop_after``: the request IS processed (an order is accepted and exists on the exchange),
  then the connection is closed before the answer is sent: the client never learns the outcome;
* ``reject``: an order is refused with Binance's ``-2010`` (HTTP 400) and ``message``;
* ``stale``: market data (klines, funding) stops advancing: answers are cut at the time the rule
  first fired while the clock runs on (orders still match on the running clock);
* ``clock_jump``: the request is answered normally, then the emulator's clock jumps forward by
  ``advance_ms`` (a bar boundary passing between two requests of one client, deterministically;
  the clock must have ``advance``: :class:`~.clock.FixedClock`, :class:`~.clock.ReplayClock`);
* ``partial_fill``: not a request fault. The matching engine asks :meth:`FaultPlan.decide_fill`
  at each fill of an order in ``symbol``; when the rule fires, only ``fill_fraction`` of the
  remaining quantity fills now (rounded down to the lot step) and the rest waits for the next
  bar. ``path_prefix`` and ``method`` do not apply to it.

``method`` restricts a request rule to one HTTP method (``"POST"``: order placement only).

A rule fires for the next ``count`` matching requests, or with ``probability`` per matching
request (drawn from the plan's seeded generator), or, with neither, on every matching request
until the plan is cleared. ``path_prefix`` restricts a rule to paths that start with it, and
``after`` lets that many matching requests through first ("fail the 3rd page": ``after=2``).

Tests use the Python methods; an emulator in another process is driven with
``POST /_emulator/faults`` and the same JSON (see :meth:`FaultPlan.configure`).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, model_validator

from coinrl.pipeline.config import Fraction, FrozenModel, validate_config
from coinrl.pipeline.errors import ConfigError

FaultKind = Literal[
    "latency", "rate_limit", "server_error", "drop", "garbage",
    "drop_after", "reject", "stale", "partial_fill", "clock_jump",
]

ENGINE_KINDS: frozenset[str] = frozenset({"partial_fill"})
"""Kinds consulted by the matching engine (:meth:`FaultPlan.decide_fill`), never per request."""

ORDER_PATH = "/api/v3/order"
"""Path of Binance spot order placement (the default target of order faults)."""

DEFAULT_REJECT_MESSAGE = "Order rejected by the exchange emulator (fault injection)."


def _count(count: int | None, probability: float | None) -> int | None:
    """The order-fault helpers default to ``count=1``; a probability replaces that default."""
    return None if probability is not None else count


class FaultRule(FrozenModel):
    """One fault.

    Attributes:
        kind: what happens (see the module docstring).
        count: fire for the next ``count`` matching requests, then retire.
        probability: fire with this probability (fraction) on each matching request.
        path_prefix: only requests whose path starts with this ("" = every path).
        after: let this many matching requests through before the rule starts firing.
        latency_ms: delay added before answering, milliseconds (``latency`` only).
        status: HTTP status of a ``server_error`` (502, 503 or 504; 500 also allowed).
        retry_after_s: value of the ``Retry-After`` header of a ``rate_limit``, seconds.
        method: only requests with this HTTP method ("" = any; request rules only).
        symbol: only fills in this unified symbol ("" = any; ``partial_fill`` only).
        fill_fraction: fraction of the remaining quantity a ``partial_fill`` fills (0 < f < 1).
        message: ``msg`` of the answer of a ``reject``.
        code: Binance error code of a ``reject`` (-2010 new order rejected; -2013 order does
            not exist, which makes a lookup report the order absent).
        advance_ms: how far a ``clock_jump`` moves the clock after answering, ms.
    """

    kind: FaultKind
    count: int | None = Field(default=None, gt=0)
    probability: Fraction | None = None
    path_prefix: str = ""
    after: int = Field(default=0, ge=0)
    latency_ms: float = Field(default=0.0, ge=0.0)
    status: Literal[500, 502, 503, 504] = 503
    retry_after_s: int = Field(default=1, ge=0)
    method: Literal["", "GET", "POST", "DELETE", "PUT"] = ""
    symbol: str = ""
    fill_fraction: float = Field(default=0.5, gt=0.0, lt=1.0)
    message: str = Field(default=DEFAULT_REJECT_MESSAGE, min_length=1)
    code: int = -2010
    advance_ms: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> FaultRule:
        if self.count is not None and self.probability is not None:
            raise ValueError("give count (next K requests) or probability, not both")
        if self.kind == "latency" and self.latency_ms <= 0:
            raise ValueError("a latency rule needs latency_ms > 0")
        if self.kind == "clock_jump" and self.advance_ms <= 0:
            raise ValueError("a clock_jump rule needs advance_ms > 0")
        return self


@dataclass(frozen=True)
class FaultDecision:
    """What the plan decided for one request: total added latency and the answer to fake."""

    latency_ms: float
    action: FaultRule | None


class FaultPlan:
    """A thread-safe, seeded, ordered list of fault rules.

    Args:
        seed: seed of the generator used by probability rules (same seed, same request order,
            same faults).

    Example:
        >>> plan = FaultPlan(seed=1)
        >>> _ = plan.rate_limit(retry_after_s=2, count=1, path_prefix="/api/v3/klines")
        >>> plan.decide("/api/v3/klines").action.kind
        'rate_limit'
        >>> plan.decide("/api/v3/klines").action is None
        True
    """

    def __init__(self, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(seed)  # noqa: S311 - fault injection, not cryptography
        self._rules: list[list[Any]] = []  # [rule, remaining count or None, still to let through]
        self._fired: dict[str, int] = {}

    # -- building -------------------------------------------------------------------------
    def add(self, rule: FaultRule) -> FaultRule:
        """Append ``rule`` to the plan and return it."""
        with self._lock:
            self._rules.append([rule, rule.count, rule.after])
        return rule

    def latency(
        self,
        latency_ms: float,
        *,
        count: int | None = None,
        probability: float | None = None,
        path_prefix: str = "",
        after: int = 0,
    ) -> FaultRule:
        """Delay matching requests by ``latency_ms`` milliseconds (every one unless limited)."""
        return self._add(
            kind="latency", latency_ms=latency_ms, count=count, probability=probability,
            path_prefix=path_prefix, after=after,
        )

    def rate_limit(
        self,
        *,
        retry_after_s: int = 1,
        count: int | None = 1,
        probability: float | None = None,
        path_prefix: str = "",
        after: int = 0,
    ) -> FaultRule:
        """Answer HTTP 429 with ``Retry-After: retry_after_s`` and Binance's ``-1003`` body."""
        return self._add(
            kind="rate_limit", retry_after_s=retry_after_s, count=count,
            probability=probability, path_prefix=path_prefix, after=after,
        )

    def server_error(
        self,
        status: int = 503,
        *,
        count: int | None = 1,
        probability: float | None = None,
        path_prefix: str = "",
        after: int = 0,
    ) -> FaultRule:
        """Answer HTTP ``status`` (500/502/503/504) instead of the real answer."""
        return self._add(
            kind="server_error", status=status, count=count, probability=probability,
            path_prefix=path_prefix, after=after,
        )

    def drop(
        self,
        *,
        count: int | None = 1,
        probability: float | None = None,
        path_prefix: str = "",
        after: int = 0,
    ) -> FaultRule:
        """Close the connection without answering."""
        return self._add(
            kind="drop", count=count, probability=probability, path_prefix=path_prefix,
            after=after,
        )

    def garbage(
        self,
        *,
        count: int | None = 1,
        probability: float | None = None,
        path_prefix: str = "",
        after: int = 0,
    ) -> FaultRule:
        """Answer HTTP 200 with a truncated body that is not valid JSON."""
        return self._add(
            kind="garbage", count=count, probability=probability, path_prefix=path_prefix,
            after=after,
        )

    def drop_after(
        self,
        *,
        count: int | None = 1,
        probability: float | None = None,
        path_prefix: str = ORDER_PATH,
        method: str = "POST",
        after: int = 0,
    ) -> FaultRule:
        """Process the request (the order is accepted), then close the connection unanswered."""
        return self._add(
            kind="drop_after", count=_count(count, probability), probability=probability, path_prefix=path_prefix,
            method=method, after=after,
        )

    def reject(
        self,
        *,
        message: str = DEFAULT_REJECT_MESSAGE,
        code: int = -2010,
        count: int | None = 1,
        probability: float | None = None,
        path_prefix: str = ORDER_PATH,
        method: str = "POST",
        after: int = 0,
    ) -> FaultRule:
        """Refuse matching requests with Binance's ``code`` (default ``-2010``) and ``message``
        (HTTP 400); ``code=-2013`` on ``GET`` makes an order lookup answer "does not exist"."""
        return self._add(
            kind="reject", message=message, code=code, count=_count(count, probability),
            probability=probability, path_prefix=path_prefix, method=method, after=after,
        )

    def clock_jump(
        self,
        advance_ms: int,
        *,
        count: int | None = 1,
        probability: float | None = None,
        path_prefix: str = "",
        method: str = "",
        after: int = 0,
    ) -> FaultRule:
        """Answer matching requests normally, then move the clock forward by ``advance_ms``."""
        return self._add(
            kind="clock_jump", advance_ms=advance_ms, count=_count(count, probability),
            probability=probability, path_prefix=path_prefix, method=method, after=after,
        )

    def stale(
        self,
        *,
        count: int | None = None,
        probability: float | None = None,
        path_prefix: str = "/api/v3/klines",
        after: int = 0,
    ) -> FaultRule:
        """Freeze market data at the time the rule first fires (every request until cleared)."""
        return self._add(
            kind="stale", count=_count(count, probability), probability=probability, path_prefix=path_prefix,
            after=after,
        )

    def partial_fill(
        self,
        fill_fraction: float = 0.5,
        *,
        symbol: str = "",
        count: int | None = 1,
        probability: float | None = None,
        after: int = 0,
    ) -> FaultRule:
        """Make the next fills (of ``symbol``, "" = any) fill only ``fill_fraction`` of what remains."""
        return self._add(
            kind="partial_fill", fill_fraction=fill_fraction, symbol=symbol, count=_count(count, probability),
            probability=probability, after=after,
        )

    def _add(self, **fields: Any) -> FaultRule:
        return self.add(validate_config(FaultRule, fields, source="fault rule"))

    def clear(self) -> None:
        """Remove every rule (counters of fired faults are kept)."""
        with self._lock:
            self._rules.clear()

    def reseed(self, seed: int) -> None:
        """Restart the probability generator from ``seed``."""
        with self._lock:
            self._rng = random.Random(seed)  # noqa: S311

    def configure(self, payload: Mapping[str, Any]) -> list[FaultRule]:
        """Apply an admin JSON payload: ``{"clear": bool, "seed": int, "rules": [rule, ...]}``.

        Every key is optional; ``clear`` runs first, then ``seed``, then the rules are appended.
        Raises :class:`~coinrl.pipeline.errors.ConfigError` (nothing applied) on a bad rule.
        """
        unknown = set(payload) - {"clear", "seed", "rules"}
        if unknown:
            raise ConfigError(
                f"unknown fault payload keys {sorted(unknown)}; use clear, seed and rules"
            )
        rules = [
            validate_config(FaultRule, r, source=f"rules[{i}]")
            for i, r in enumerate(payload.get("rules") or [])
        ]
        if payload.get("clear"):
            self.clear()
        if payload.get("seed") is not None:
            self.reseed(int(payload["seed"]))
        for r in rules:
            self.add(r)
        return rules

    # -- deciding -------------------------------------------------------------------------
    def decide(self, path: str, method: str = "") -> FaultDecision:
        """Decide the faults for one request to ``path`` (uses up counts of rules that fire).

        Args:
            path: URL path of the request.
            method: its HTTP method; rules with a ``method`` only match when it is given and equal.
        """
        def matches(rule: FaultRule) -> bool:
            return (
                rule.kind not in ENGINE_KINDS
                and path.startswith(rule.path_prefix)
                and (not rule.method or rule.method == method.upper())
            )

        latency_ms, action = self._decide(matches)
        return FaultDecision(latency_ms=latency_ms, action=action)

    def decide_fill(self, symbol: str) -> float | None:
        """The fraction of the remaining quantity to fill now (None = fill it all).

        Called by the matching engine once per fill of an order in ``symbol``; uses up counts
        of ``partial_fill`` rules the same way :meth:`decide` does for request rules.
        """
        def matches(rule: FaultRule) -> bool:
            return rule.kind == "partial_fill" and (not rule.symbol or rule.symbol == symbol)

        action = self._decide(matches)[1]
        return action.fill_fraction if action is not None else None

    def _decide(self, matches: Callable[[FaultRule], bool]) -> tuple[float, FaultRule | None]:
        latency_ms = 0.0
        action: FaultRule | None = None
        with self._lock:
            for entry in self._rules:
                rule, remaining, to_skip = entry
                if not matches(rule):
                    continue
                if rule.kind != "latency" and action is not None:
                    continue
                if to_skip > 0:
                    entry[2] = to_skip - 1
                    continue
                if remaining is not None:
                    if remaining <= 0:
                        continue
                    entry[1] = remaining - 1
                elif rule.probability is not None and self._rng.random() >= rule.probability:
                    continue
                self._fired[rule.kind] = self._fired.get(rule.kind, 0) + 1
                if rule.kind == "latency":
                    latency_ms += rule.latency_ms
                else:
                    action = rule
            self._rules = [e for e in self._rules if e[1] is None or e[1] > 0]
        return latency_ms, action

    def fired(self) -> dict[str, int]:
        """How many times each kind of fault fired since the plan was made."""
        with self._lock:
            return dict(self._fired)

    def rules(self) -> list[tuple[FaultRule, int | None]]:
        """The active rules with their remaining counts (None = unlimited)."""
        with self._lock:
            return [(e[0], e[1]) for e in self._rules]

    def to_json(self) -> dict[str, Any]:
        """The plan as JSON-ready data (what ``GET /_emulator/faults`` answers)."""
        return {
            "rules": [
                {**r.model_dump(), "remaining": n} for r, n in self.rules()
            ],
            "fired": self.fired(),
        }


__all__ = [
    "DEFAULT_REJECT_MESSAGE",
    "ENGINE_KINDS",
    "ORDER_PATH",
    "FaultDecision",
    "FaultKind",
    "FaultPlan",
    "FaultRule",
]
