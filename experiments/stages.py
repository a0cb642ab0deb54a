"""Stage progress of the long commands (``backtest``, ``walkforward``, ``quickstart``).

The work functions report ``(stage, done, total)``; the CLI draws one progress bar per stage.
"""

from __future__ import annotations

from collections.abc import Callable

ProgressFn = Callable[[str, int, int], None]
"""``(stage, done, total)`` progress callback (the CLI draws it as progress bars)."""


def notify(progress: ProgressFn | None, stage: str, done: int, total: int) -> None:
    """Report ``(stage, done, total)`` to ``progress`` when there is one."""
    if progress is not None:
        progress(stage, done, total)


__all__ = ["ProgressFn", "notify"]
