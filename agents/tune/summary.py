"""What a study holds: trial counts against the budget, the best trial, pruning and compute
figures (:class:`StudySummary`), and the running figures of a study in progress
(:class:`TuneProgress`)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..metrics import json_safe
from .config import MEMORY
from .storage import redact_url

if TYPE_CHECKING:
    import optuna


def retried_numbers(trials: Sequence[optuna.trial.FrozenTrial]) -> set[int]:
    """Numbers of trials that were re-queued after their worker died (superseded by a copy)."""
    out: set[int] = set()
    for t in trials:
        out.update(int(n) for n in t.system_attrs.get("retry_history", []))
    return out


def logical_trial_count(trials: Sequence[optuna.trial.FrozenTrial]) -> int:
    """Trials counted against the budget: every trial except those superseded by a retry."""
    superseded = retried_numbers(trials)
    return sum(1 for t in trials if t.number not in superseded)


@dataclass(frozen=True)
class StudySummary:
    """What a study holds.

    Attributes:
        study_name: the study.
        storage: its storage URL (password masked).
        n_trials: trials counted against the budget (re-queued trials once).
        states: trials per state (``COMPLETE``, ``PRUNED``, ``FAIL``, ``RUNNING``, ``WAITING``),
            re-queued attempts included.
        best_number, best_value, best_params: the best complete trial (None without one).
        pruned_fraction: pruned / (complete + pruned).
        compute_saved_fraction: env steps pruning saved / env steps without pruning (of the
            complete and pruned trials: pruned trials' unspent budget over all steps spent plus
            that).
        env_steps_used: env steps trained over all trials.
        workers: distinct worker processes that ran trials.
        failed_errors: ``{trial number: error}`` of the failed trials.
    """

    study_name: str
    storage: str
    n_trials: int
    states: dict[str, int]
    best_number: int | None
    best_value: float | None
    best_params: dict[str, Any]
    pruned_fraction: float
    compute_saved_fraction: float
    env_steps_used: int
    workers: int
    failed_errors: dict[int, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe plain data."""
        return dict(json_safe(dataclasses.asdict(self)))


def summarize_study(study: optuna.Study, storage_url: str = MEMORY) -> StudySummary:
    """Counts, best trial, pruning and compute figures of a study."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    done = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    pruned = [t for t in done if t.state == TrialState.PRUNED]
    used = sum(int(t.user_attrs.get("env_steps_used", 0)) for t in trials)
    saved = sum(
        max(
            0,
            int(t.user_attrs.get("env_steps_budget", 0))
            - int(t.user_attrs.get("env_steps_used", 0)),
        )
        for t in pruned
    )
    done_used = sum(int(t.user_attrs.get("env_steps_used", 0)) for t in done)
    best = _best(trials)
    return StudySummary(
        study_name=study.study_name,
        storage=redact_url(storage_url),
        n_trials=logical_trial_count(trials),
        states=states,
        best_number=None if best is None else best.number,
        best_value=None if best is None else best.value,
        best_params={} if best is None else dict(best.params),
        pruned_fraction=len(pruned) / len(done) if done else 0.0,
        compute_saved_fraction=saved / (done_used + saved) if (done_used + saved) > 0 else 0.0,
        env_steps_used=used,
        workers=len({t.user_attrs.get("worker") for t in trials if t.user_attrs.get("worker")}),
        failed_errors={
            t.number: str(t.user_attrs["error"])
            for t in trials
            if t.state == TrialState.FAIL and "error" in t.user_attrs
        },
    )


@dataclass(frozen=True)
class TuneProgress:
    """Where a running study stands (what the CLI's progress line shows).

    Attributes:
        done: finished trials counted against the budget (complete, pruned, failed).
        budget: the study's trial budget.
        complete, pruned, failed, running: trials per state (re-queued attempts once).
        best_number, best_value: the best complete trial so far (None without one).
    """

    done: int
    budget: int
    complete: int
    pruned: int
    failed: int
    running: int
    best_number: int | None
    best_value: float | None

    def line(self) -> str:
        """``trials 3/10 · best 0.0123 (trial 2) · pruned 1 · failed 0 · running 2``."""
        best = (
            "no complete trial yet"
            if self.best_value is None
            else f"best {self.best_value:.4g} (trial {self.best_number})"
        )
        return (
            f"trials {self.done}/{self.budget} · {best} · pruned {self.pruned} · "
            f"failed {self.failed} · running {self.running}"
        )


def progress_of(trials: Sequence[optuna.trial.FrozenTrial], budget: int) -> TuneProgress:
    """The :class:`TuneProgress` of a study's ``trials`` against ``budget``."""
    from optuna.trial import TrialState

    superseded = retried_numbers(trials)
    live = [t for t in trials if t.number not in superseded]
    by_state: dict[TrialState, int] = {}
    for t in live:
        by_state[t.state] = by_state.get(t.state, 0) + 1
    best = _best(trials)
    finished = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    return TuneProgress(
        done=sum(by_state.get(s, 0) for s in finished),
        budget=budget,
        complete=by_state.get(TrialState.COMPLETE, 0),
        pruned=by_state.get(TrialState.PRUNED, 0),
        failed=by_state.get(TrialState.FAIL, 0),
        running=by_state.get(TrialState.RUNNING, 0),
        best_number=None if best is None else best.number,
        best_value=None if best is None else best.value,
    )


def _best(trials: Sequence[optuna.trial.FrozenTrial]) -> optuna.trial.FrozenTrial | None:
    from optuna.trial import TrialState

    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        return None
    return max(complete, key=lambda t: float(t.value if t.value is not None else -math.inf))
