"""Training progress that never runs past its end.

SB3 trains whole rollouts, so a run asked for 30,000 steps with rollouts of 1,024 ends at
30,720; SB3's own progress bar then shows 30,720/30,000. :func:`planned_timesteps` is where
a run really ends, and :func:`progress_callback` reports ``(done, planned)`` with ``done``
never past ``planned``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .config import TrainConfig

ProgressFn = Callable[[int, int], None]
"""``(env steps done, env steps the run will end at)``."""


def planned_timesteps(train: TrainConfig, done: int = 0) -> int:
    """The step count a run from ``done`` steps ends at (without an early stop).

    SB3 trains whole rollouts (``n_steps * n_envs`` for PPO/A2C) and whole collections
    (``train_freq * n_envs`` for DQN/SAC), so ``total_timesteps`` is rounded up to the next whole one.
    """
    remaining = train.total_timesteps - done
    if remaining <= 0:
        return done
    if train.is_on_policy:
        p = train.recurrent_ppo if train.algo == "recurrent_ppo" else train.ppo
        chunk = (train.a2c.n_steps if train.algo == "a2c" else p.n_steps) * train.n_envs
    else:  # train_freq vector steps of n_envs transitions each
        chunk = (train.dqn.train_freq if train.algo == "dqn" else train.sac.train_freq) * train.n_envs
    return done + -(-remaining // chunk) * chunk


def rich_progress() -> tuple[ProgressFn, Callable[[], None]]:
    """A rich progress bar on stderr: ``(update, close)``."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        "[bold]train", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
        console=Console(stderr=True),
    )
    task = bar.add_task("train", total=None)
    bar.start()

    def update(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    return update, bar.stop


def progress_callback(report: ProgressFn, start: int, total: int) -> Any:
    """An SB3 callback reporting ``(num_timesteps, total)``; ``total`` is never exceeded."""
    from stable_baselines3.common.callbacks import BaseCallback

    class _Progress(BaseCallback):
        def _on_training_start(self) -> None:
            report(min(start, total), total)

        def _on_step(self) -> bool:
            report(min(int(self.num_timesteps), total), total)
            return True

    return _Progress()


__all__ = ["ProgressFn", "planned_timesteps", "progress_callback", "rich_progress"]
