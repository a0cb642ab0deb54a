"""Train SB3 agents on the batched trading env, with validation, early stopping and resume.

:func:`train_model` builds the SB3 VecEnv adapter over the batched env
(:class:`~coinrl.envs.sb3.TradingSB3VecEnv`: one numpy env stepping ``n_envs`` episodes, not
``n_envs`` Python env objects; for a portfolio :class:`~coinrl.envs.sb3.PortfolioSB3VecEnv`, see
:mod:`coinrl.agents.train_portfolio`) on the TRAINING split and runs the algorithm with:

* **validation** every ``eval_every_steps``: the deterministic policy trades the whole
  validation split (:func:`~coinrl.agents.rollout.rollout_policy`, or
  :func:`~coinrl.agents.portfolio_rollout.rollout_portfolio`); ``eval_metric`` scores it;
* **best model**: the best-scoring weights are kept (in memory and ``<run>/best/model.zip``)
  and returned when ``use_best_model``; evaluations before ``select_floor`` env steps
  (``min_select_steps``, default a quarter of the budget) are recorded but never kept;
* **entropy schedule** (``ent_coef_final``): the entropy bonus decays linearly over the budget;
* **early stopping** after ``early_stopping_patience`` evaluations without improvement;
* **checkpoints** every ``checkpoint_every_steps`` in ``<run>/checkpoints/step_<n>/``: the model
  (weights, optimiser, step counter), the replay buffer of off-policy algorithms only with
  ``save_replay_buffer`` (hundreds of MB each), the
  monitor's state (history, best score, patience) and the RNG states. ``resume=True`` continues
  from the latest one: the step counter, schedules and best-so-far carry on, and the remaining
  ``total_timesteps - num_timesteps`` steps are trained (SB3 cannot save a half-collected
  rollout, so checkpoints are taken between rollouts; the envs start fresh episodes, seeded
  from the run seed and the step, so a resumed run is itself reproducible);
* **one metrics sink**: SB3's logger with the fan-out of :mod:`coinrl.agents.tracking`
  (logging, ``progress.csv``, W&B); coinrl's own metrics are recorded as ``eval/...``;
* **reproducibility**: one seed for SB3 (python, numpy, torch, action space, envs),
  ``torch.set_num_threads(torch_threads)`` and ``torch.use_deterministic_algorithms`` while
  training, so the same config and seed give bit-identical weights on CPU;
* **plain data**: checkpoints and ``best/`` hold the model without pickled fields
  (:mod:`coinrl.agents.model_io`), the replay buffer as ``.npz`` and the RNG states as JSON, and
  resuming rebuilds the model from the config: nothing in a run folder is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from coinrl.envs.config import EnvConfig, env_config_from
from coinrl.pipeline.dataset import MarketData
from coinrl.pipeline.errors import ConfigError
from coinrl.pipeline.portfolio import PreparedPortfolio
from coinrl.pipeline.splits import PreparedData

from .agent import TrainedAgent, data_info
from .algos import make_algorithm
from .checkpoints import (
    BEST_DIR,
    CHECKPOINTS_DIR,
    MODEL_FILE,
    REPLAY_FILE,
    RNG_FILE,
    STATE_FILE,
    MonitorState,
    atomic_dir,
    key_defaults,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    rng_state,
)
from .config import TrainConfig
from .metrics import json_safe
from .model_io import read_policy_state, save_replay_buffer, write_model
from .progress import ProgressFn, planned_timesteps, progress_callback, rich_progress
from .rollout import evaluation_config, rollout_policy
from .tracking import Tracker, make_logger

if TYPE_CHECKING:
    from stable_baselines3.common.base_class import BaseAlgorithm
    from stable_baselines3.common.logger import Logger
    from stable_baselines3.common.vec_env import VecEnv

logger = logging.getLogger(__name__)

# Fields that may change between a checkpoint and its resumption (budget, cadence, display).
RESUMABLE_CHANGES = frozenset({
    "total_timesteps", "eval_every_steps", "early_stopping_patience", "min_improvement",
    "checkpoint_every_steps", "keep_checkpoints", "save_replay_buffer", "progress_bar", "log_every_steps",
    "use_best_model", "torch_threads", "min_select_steps",
})


# --------------------------------------------------------------------------- helpers


def make_vec_env(data: MarketData, env_config: EnvConfig, n_envs: int) -> VecEnv:
    """The SB3 VecEnv over the batched trading env (``n_envs`` episodes on ``data``)."""
    from coinrl.envs.sb3 import TradingSB3VecEnv

    return TradingSB3VecEnv(num_envs=n_envs, data=data, config=env_config)


@contextmanager
def torch_settings(threads: int, deterministic: bool) -> Iterator[None]:
    """Set torch's thread count and deterministic mode for a block, then restore them."""
    import torch

    prev_threads = torch.get_num_threads()
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(threads)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.set_num_threads(prev_threads)
        torch.use_deterministic_algorithms(prev_det, warn_only=prev_warn)


def weights_hash(model: BaseAlgorithm) -> str:
    """sha256 of the policy's parameters and buffers (names, shapes, bytes), in name order."""
    h = hashlib.sha256()
    state = model.policy.state_dict()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def _score(metric: str, metrics: Mapping[str, float], episode_reward: float) -> float:
    v = episode_reward if metric == "mean_reward" else float(metrics[metric])
    if not np.isfinite(v):  # an inf ratio (no downside at all) ranks above every finite one
        return 1e12 if v > 0 else -1e12
    return v


@dataclass
class TrainTarget:
    """What :func:`train_model` trains on, one asset or a portfolio alike.

    Attributes:
        env: the env config (a ``PortfolioEnvConfig`` for a portfolio).
        make_venv: ``n_envs -> VecEnv`` on the training split.
        validation: the validation split (None: no validation).
        evaluate: ``(model, validation) -> (metrics, episode_reward)``: the deterministic
            policy over the whole validation split.
        data_ids: the data's identity in the resume key (``data_fingerprint``,
            ``normaliser_fingerprint``).
        label: what is traded, for log lines.
        train_rows: bars in the training split.
        agent_fields: the :class:`TrainedAgent` fields that describe the data
            (``feature_spec``, ``normaliser``, ``data_info``, ``portfolio``).
    """

    env: EnvConfig
    make_venv: Callable[[int], VecEnv]
    validation: Any
    evaluate: Callable[[BaseAlgorithm, Any], tuple[dict[str, float], float]]
    data_ids: dict[str, str]
    label: str
    train_rows: int
    agent_fields: dict[str, Any] = field(default_factory=dict)


def _single_target(prepared: PreparedData, env_config: EnvConfig | Mapping[str, Any] | None) -> TrainTarget:
    env = env_config_from(env_config)
    eval_cfg = evaluation_config(env)

    def evaluate(model: BaseAlgorithm, validation: MarketData) -> tuple[dict[str, float], float]:
        ro = rollout_policy(model, validation, eval_cfg, deterministic=True)
        return ro.metrics(), float(ro.rewards.sum())

    return TrainTarget(
        env=env,
        make_venv=lambda n: make_vec_env(prepared.train, env, n),
        validation=prepared.validation,
        evaluate=evaluate,
        data_ids={"data_fingerprint": prepared.data_fingerprint,
                  "normaliser_fingerprint": prepared.normaliser.fingerprint()},
        label=f"symbol={prepared.train.symbol}",
        train_rows=len(prepared.train),
        agent_fields={"feature_spec": prepared.spec, "normaliser": prepared.normaliser,
                      "data_info": data_info(prepared)},
    )


def train_target(
    training_data: PreparedData | PreparedPortfolio, env_config: EnvConfig | Mapping[str, Any] | None
) -> TrainTarget:
    """The :class:`TrainTarget` of prepared data: one asset, or a portfolio
    (:func:`~coinrl.agents.train_portfolio.portfolio_target`)."""
    if isinstance(training_data, PreparedPortfolio):
        from .train_portfolio import portfolio_target

        return portfolio_target(training_data, env_config)
    return _single_target(training_data, env_config)


def _resume_key(train: TrainConfig, target: TrainTarget) -> dict[str, Any]:
    return {
        "train": {k: v for k, v in train.model_dump(mode="json").items() if k not in RESUMABLE_CHANGES},
        "env": target.env.model_dump(mode="json"),
        **target.data_ids,
    }


def check_trainable(
    training_data: PreparedData | PreparedPortfolio, env_config: EnvConfig | Mapping[str, Any] | None
) -> None:
    """Raise what :func:`train_model` would raise about its data, before anything is written.

    Builds (and closes) one training env on the train split, so a window or episode longer
    than the data fails here, with the env's own message, and not after a run folder, W&B run
    and ``progress.csv`` exist.

    Raises:
        DataError: the train split is too short for ``env.window`` + ``env.episode_length_bars``.
        ConfigError: an env config that does not fit the data (e.g. ``asset_costs`` naming
            an asset the portfolio does not hold).
    """
    venv = train_target(training_data, env_config).make_venv(1)
    venv.close()


# --------------------------------------------------------------------------- the monitor


def _monitor_callback(
    train: TrainConfig,
    target: TrainTarget,
    validation: Any,
    run_dir: Path | None,
    state: MonitorState,
    resume_key: Mapping[str, Any],
) -> Any:
    """The SB3 callback doing validation, best model, early stopping and checkpoints."""
    from stable_baselines3.common.callbacks import BaseCallback

    class _Monitor(BaseCallback):
        def __init__(self) -> None:
            super().__init__(verbose=0)
            self.state = state
            self.best_params: dict[str, Any] | None = None

        # -- evaluation
        def evaluate(self) -> None:
            if validation is None:
                return
            step = int(self.num_timesteps)
            metrics, reward = target.evaluate(self.model, validation)
            score = _score(train.eval_metric, metrics, reward)
            st = self.state
            # the selection floor: an evaluation of a barely-trained network is only recorded
            eligible = step >= train.select_floor
            improved = eligible and (st.best_score is None or score > st.best_score + train.min_improvement)
            if improved:
                st.best_score = score
                st.best_step = step
                st.evals_since_best = 0
                self.best_params = {
                    k: v.detach().clone() for k, v in self.model.policy.state_dict().items()
                }
                if run_dir is not None:
                    atomic_dir(run_dir / BEST_DIR, lambda d: write_model(self.model, d / MODEL_FILE))
            elif eligible:
                st.evals_since_best += 1
            st.last_eval_step = step
            record = {"step": step, "score": score, "episode_reward": reward, **metrics}
            st.history.append(dict(json_safe(record)))
            lg = self.logger
            for k, v in metrics.items():
                lg.record(f"eval/{k}", v)
            lg.record("eval/episode_reward", reward)
            lg.record("eval/score", score)
            lg.record("eval/best_score", st.best_score)
            lg.record("eval/evals_since_best", st.evals_since_best)
            lg.dump(step)
            patience = train.early_stopping_patience
            if patience is not None and st.evals_since_best >= patience:
                st.stopped_early = True
                logger.info(
                    "early stopping step=%d best_step=%s best_score=%.4f patience=%d",
                    step, st.best_step, st.best_score, patience,
                )

        # -- checkpoints
        def checkpoint(self) -> Path | None:
            if run_dir is None:
                return None
            step = int(self.num_timesteps)
            dest = run_dir / CHECKPOINTS_DIR / f"step_{step:012d}"
            model = self.model

            def build(d: Path) -> None:
                write_model(model, d / MODEL_FILE)
                if train.save_replay_buffer and getattr(model, "replay_buffer", None) is not None:
                    save_replay_buffer(model, d / REPLAY_FILE)
                (d / RNG_FILE).write_text(json.dumps(rng_state()), encoding="utf-8")
                payload = {"step": step, "monitor": self.state.to_dict(), "resume_key": resume_key}
                (d / STATE_FILE).write_text(json.dumps(payload, indent=1), encoding="utf-8")

            atomic_dir(dest, build)
            for old in list_checkpoints(run_dir)[: -train.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
            logger.info("checkpoint step=%d path=%s", step, dest)
            return dest

        # -- SB3 hooks
        def _on_rollout_start(self) -> None:
            st = self.state
            step = self.num_timesteps
            if train.eval_every_steps and step >= st.next_eval_step and step > 0:
                self.evaluate()
                while st.next_eval_step <= step:
                    st.next_eval_step += train.eval_every_steps
            if train.checkpoint_every_steps and step >= st.next_checkpoint_step and step > 0:
                while st.next_checkpoint_step <= step:
                    st.next_checkpoint_step += train.checkpoint_every_steps
                self.checkpoint()

        def _on_step(self) -> bool:
            return not self.state.stopped_early

    return _Monitor()


def _entropy_callback(train: TrainConfig) -> Any:
    """The SB3 callback setting the entropy coefficient before each update
    (:meth:`TrainConfig.ent_coef_at` of the steps done, the rollout just collected included)."""
    from stable_baselines3.common.callbacks import BaseCallback

    class _EntropySchedule(BaseCallback):
        def _set(self) -> None:
            coef = train.ent_coef_at(int(self.num_timesteps))
            self.model.ent_coef = coef  # type: ignore[attr-defined]
            self.logger.record("train/ent_coef", coef)

        def _on_training_start(self) -> None:
            self._set()

        def _on_rollout_end(self) -> None:
            self._set()

        def _on_step(self) -> bool:
            return True

    return _EntropySchedule()


# --------------------------------------------------------------------------- train


def train_model(
    training_data: PreparedData | PreparedPortfolio,
    config: TrainConfig | None = None,
    env_config: EnvConfig | Mapping[str, Any] | None = None,
    *,
    out_dir: str | Path | None = None,
    resume: bool = False,
    tracker: Tracker | None = None,
    experiment_config: Mapping[str, Any] | None = None,
    sink: Logger | None = None,
    progress: ProgressFn | None = None,
) -> TrainedAgent:
    """Train an agent on ``training_data.train``, validating on ``training_data.validation``.

    Args:
        training_data: the prepared splits (normaliser fitted on train) from
            :func:`~coinrl.pipeline.source.load_dataset` or ``prepare_data_for_model``; or a
            :class:`~coinrl.pipeline.portfolio.PreparedPortfolio` (one account over A assets:
            PPO, A2C or SAC on :class:`~coinrl.envs.sb3.PortfolioSB3VecEnv`, validated with
            :func:`~coinrl.agents.portfolio_rollout.rollout_portfolio`).
        config: the training config; a ``None`` seed means 0.
        env_config: the env config (costs, window, actions, reward); a
            ``PortfolioEnvConfig`` (or its mapping) for a portfolio.
        out_dir: run folder for checkpoints, the best model and ``progress.csv``; None keeps
            everything in memory (no checkpoints).
        resume: continue from the latest checkpoint in ``out_dir`` (starts fresh, with a
            warning, when there is none).
        tracker: W&B tracker for the metrics (None: no W&B).
        experiment_config: the full experiment config to store in the bundle (plain data).
        sink: an SB3 logger to use instead of :func:`~coinrl.agents.tracking.make_logger`.
        progress: called with ``(env steps done, steps the run ends at)`` as training goes
            (:func:`planned_timesteps`; never past it); default with ``train.progress_bar``: a
            rich bar on stderr.

    Returns:
        The :class:`~coinrl.agents.agent.TrainedAgent` (best validated weights when
        ``use_best_model``), with ``history`` (validation evaluations) and ``info``
        (``num_timesteps``, ``best_step``, ``best_score``, ``stopped_early``,
        ``weights_sha256``, ``resumed_from``).

    Raises:
        ConfigError: an algorithm that does not fit the action space (DQN on a portfolio),
            or a checkpoint from a different config or data.
    """
    train = (config or TrainConfig()).with_seed(0)
    seed = int(train.seed or 0)
    if isinstance(training_data, PreparedPortfolio) and train.algo == "recurrent_ppo":
        raise ConfigError("train.algo=recurrent_ppo is not supported for portfolios yet (its "
                          "validation rollout needs the LSTM state); use ppo, a2c or sac")
    target = train_target(training_data, env_config)
    env = target.env
    run_dir = Path(out_dir) if out_dir is not None else None
    if resume and run_dir is None:
        raise ConfigError("resume=True needs out_dir, the run folder holding the checkpoints")
    validation = target.validation
    if validation is None or len(validation) <= env.window:
        logger.warning(
            "validation split has %d bars (window=%d): no validation, no best model, no early stop",
            0 if validation is None else len(validation), env.window,
        )
        validation = None
    key = _resume_key(train, target)
    from stable_baselines3.common.utils import set_random_seed

    with torch_settings(train.torch_threads, train.deterministic_torch):
        venv = target.make_venv(train.n_envs)
        ckpt = latest_checkpoint(run_dir) if (resume and run_dir is not None) else None
        if resume and ckpt is None:
            logger.warning("resume: no checkpoint in %s; starting a fresh run", run_dir)
        if ckpt is not None:
            model, state = load_checkpoint(ckpt, train, venv, key, defaults=key_defaults(train, target.env))
        else:
            set_random_seed(seed)
            model = make_algorithm(train, venv, seed)
            state = MonitorState(
                next_eval_step=train.eval_every_steps,
                next_checkpoint_step=train.checkpoint_every_steps,
            )
        own_sink = sink is None
        out_logger = sink or make_logger(run_dir, tracker)
        model.set_logger(out_logger)
        monitor = _monitor_callback(train, target, validation, run_dir, state, key)
        callbacks: list[Any] = [monitor]
        if train.ent_coef_final is not None:
            callbacks.append(_entropy_callback(train))
        done = int(model.num_timesteps)
        planned = planned_timesteps(train, done)
        if planned > train.total_timesteps > done:
            logger.info(
                "total_timesteps=%d rounds up to %d: SB3 trains whole rollouts", train.total_timesteps, planned
            )
        close_bar: Callable[[], None] | None = None
        if progress is None and train.progress_bar:
            progress, close_bar = rich_progress()
        if progress is not None:
            callbacks.append(progress_callback(progress, done, planned))
        remaining = train.total_timesteps - done
        if train.is_on_policy:
            p = train.recurrent_ppo if train.algo == "recurrent_ppo" else train.ppo
            n_steps = train.a2c.n_steps if train.algo == "a2c" else p.n_steps
            log_interval = max(1, train.log_every_steps // (n_steps * train.n_envs))
        else:
            log_interval = max(1, train.n_envs)
        logger.info(
            "training algo=%s seed=%d n_envs=%d steps=%d remaining=%d %s train_rows=%d",
            train.algo, seed, train.n_envs, train.total_timesteps, remaining,
            target.label, target.train_rows,
        )
        try:
            if remaining > 0 and not state.stopped_early:
                model.learn(
                    total_timesteps=remaining,
                    callback=callbacks,
                    log_interval=log_interval,
                    reset_num_timesteps=ckpt is None,
                    progress_bar=False,
                )
        finally:
            if close_bar is not None:
                close_bar()
        # a last evaluation of the final weights, then the final checkpoint
        monitor.init_callback(model)
        # (after an early stop the weights are those of the last evaluation: nothing to do)
        if (
            validation is not None
            and not state.stopped_early
            and state.last_eval_step != model.num_timesteps
        ):
            monitor.evaluate()
        if run_dir is not None and train.checkpoint_every_steps:
            monitor.checkpoint()
        if train.use_best_model and monitor.best_params is not None:
            model.policy.load_state_dict(monitor.best_params)
        elif train.use_best_model and run_dir is not None and (run_dir / BEST_DIR / MODEL_FILE).is_file():
            model.policy.load_state_dict(read_policy_state(run_dir / BEST_DIR / MODEL_FILE, device=train.device))
        venv.close()
        if own_sink:
            out_logger.close()
    info = {
        "num_timesteps": int(model.num_timesteps),
        "best_step": state.best_step,
        "best_score": state.best_score,
        "eval_metric": train.eval_metric,
        "stopped_early": state.stopped_early,
        "weights_sha256": weights_hash(model),
        "resumed_from": str(ckpt) if ckpt is not None else None,
    }
    exp_cfg = dict(experiment_config or {})
    logger.info(
        "trained algo=%s steps=%d best_step=%s best_score=%s stopped_early=%s",
        train.algo, info["num_timesteps"], state.best_step, state.best_score, state.stopped_early,
    )
    return TrainedAgent(
        model=model,
        env_config=env,
        train_config=train,
        experiment_config=exp_cfg,
        history=list(state.history),
        info=info,
        **target.agent_fields,
    )


__all__ = [
    "BEST_DIR",
    "CHECKPOINTS_DIR",
    "MODEL_FILE",
    "REPLAY_FILE",
    "RESUMABLE_CHANGES",
    "RNG_FILE",
    "STATE_FILE",
    "MonitorState",
    "TrainTarget",
    "check_trainable",
    "latest_checkpoint",
    "list_checkpoints",
    "make_vec_env",
    "torch_settings",
    "train_model",
    "train_target",
    "weights_hash",
]
