"""The emulator's notion of "now": fixed, real, or a replay of stored history at a chosen speed.

Every market-data answer is cut at ``clock.now_ms()``: candles that open later do not exist yet,
and the candle containing "now" is served as in progress. All clocks are thread-safe: tests move
them from the test thread while the server reads them from its own event-loop thread.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol, runtime_checkable

from coinrl.pipeline.errors import ConfigError


@runtime_checkable
class Clock(Protocol):
    """Anything that tells the emulator the current time in UTC epoch milliseconds."""

    def now_ms(self) -> int:
        """Current emulated time, int UTC epoch ms."""
        ...


class RealClock:
    """The machine's wall clock (UTC epoch ms)."""

    def now_ms(self) -> int:
        """Current wall-clock time in UTC epoch ms."""
        return time.time_ns() // 1_000_000

    def __repr__(self) -> str:
        return "RealClock()"


class FixedClock:
    """A clock that stands still until moved with :meth:`set` or :meth:`advance`.

    Args:
        now_ms: the initial time, int UTC epoch ms.
    """

    def __init__(self, now_ms: int) -> None:
        self._lock = threading.Lock()
        self._now_ms = int(now_ms)

    def now_ms(self) -> int:
        """The time last set, int UTC epoch ms."""
        with self._lock:
            return self._now_ms

    def set(self, now_ms: int) -> None:
        """Jump to ``now_ms`` (UTC epoch ms); moving backwards is allowed (a test may rewind)."""
        with self._lock:
            self._now_ms = int(now_ms)

    def advance(self, delta_ms: int) -> int:
        """Move forward by ``delta_ms`` (>= 0) milliseconds and return the new time."""
        if delta_ms < 0:
            raise ConfigError(f"advance({delta_ms}): delta_ms must be >= 0; use set() to rewind")
        with self._lock:
            self._now_ms += int(delta_ms)
            return self._now_ms

    def __repr__(self) -> str:
        return f"FixedClock(now_ms={self.now_ms()})"


class ReplayClock:
    """Replays history: starts at ``start_ms`` and runs ``speed`` times faster than the wall clock.

    Args:
        start_ms: emulated time at the moment the clock is created (or :meth:`restart`), UTC ms.
        speed: emulated milliseconds per wall-clock millisecond (1.0 = real time; 72_000 = one
            hourly bar per 50 ms of wall time). Must be > 0.

    Example:
        >>> clock = ReplayClock.bars(start_ms=1_600_000_000_000, bar_ms=3_600_000, wall_ms_per_bar=50)
    """

    def __init__(self, start_ms: int, speed: float = 1.0) -> None:
        if not speed > 0:
            raise ConfigError(f"ReplayClock speed must be > 0 emulated ms per wall ms, got {speed}")
        self._lock = threading.Lock()
        self._speed = float(speed)
        self._start_ms = int(start_ms)
        self._wall0_ns = time.monotonic_ns()

    @classmethod
    def bars(cls, start_ms: int, bar_ms: int, wall_ms_per_bar: float) -> ReplayClock:
        """A replay clock that advances one ``bar_ms`` bar every ``wall_ms_per_bar`` wall ms."""
        if not wall_ms_per_bar > 0:
            raise ConfigError(f"wall_ms_per_bar must be > 0, got {wall_ms_per_bar}")
        return cls(start_ms, speed=bar_ms / wall_ms_per_bar)

    @property
    def speed(self) -> float:
        """Emulated ms per wall-clock ms."""
        return self._speed

    def now_ms(self) -> int:
        """``start_ms + speed * wall ms elapsed``, int UTC epoch ms."""
        with self._lock:
            elapsed_ms = (time.monotonic_ns() - self._wall0_ns) / 1e6
            return self._start_ms + int(elapsed_ms * self._speed)

    def advance(self, delta_ms: int) -> int:
        """Jump forward by ``delta_ms`` (>= 0) ms (the replay goes on from there); the new time."""
        if delta_ms < 0:
            raise ConfigError(f"advance({delta_ms}): delta_ms must be >= 0; use restart() to rewind")
        with self._lock:
            self._start_ms += int(delta_ms)
        return self.now_ms()

    def restart(self, start_ms: int) -> None:
        """Restart the replay from ``start_ms`` (UTC epoch ms) at the current wall time."""
        with self._lock:
            self._start_ms = int(start_ms)
            self._wall0_ns = time.monotonic_ns()

    def __repr__(self) -> str:
        return f"ReplayClock(now_ms={self.now_ms()}, speed={self._speed})"


__all__ = ["Clock", "FixedClock", "RealClock", "ReplayClock"]
