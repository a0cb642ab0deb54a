"""``TrainConfig`` and ``TrackingConfig``: how an agent is trained and where its metrics go.

Frozen pydantic models (unknown keys and out-of-range values fail at load time with the field
path, as :class:`~coinrl.pipeline.errors.ConfigError`). Each algorithm has its own block of
hyper-parameters (``ppo:``, ``dqn:``, ``a2c:``, ``sac:``, ``recurrent_ppo:``); only the block of
``algo`` is used. The defaults are tuned for throughput on the batched trading env (many envs,
big minibatches, few epochs) and are the ones the known-answer check passes with.

Units: steps are env steps summed over all envs (SB3's ``num_timesteps``); learning rates are
per optimiser step; ``gamma`` is the per-bar discount.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from coinrl.pipeline.config import Fraction, FrozenModel

Algo = Literal["ppo", "dqn", "a2c", "sac", "recurrent_ppo"]
EvalMetric = Literal["sharpe", "sortino", "total_return", "calmar", "mean_reward"]
TrackingMode = Literal["offline", "online", "disabled"]

PosInt = Annotated[int, Field(gt=0)]
LearningRate = Annotated[float, Field(gt=0.0, le=1.0)]
Discount = Annotated[float, Field(gt=0.0, le=1.0)]

ON_POLICY: frozenset[str] = frozenset({"ppo", "a2c", "recurrent_ppo"})
"""Algorithms that learn from rollouts (no replay buffer)."""
DISCRETE_ONLY: frozenset[str] = frozenset({"dqn"})
"""Algorithms that need a discrete action space."""
CONTINUOUS_ONLY: frozenset[str] = frozenset({"sac"})
"""Algorithms that need a continuous (Box) action space."""


class PPOParams(FrozenModel):
    """PPO hyper-parameters (``stable_baselines3.PPO``); also used by ``recurrent_ppo``.

    The rollout is ``n_steps`` per env times ``TrainConfig.n_envs`` envs; it is split into
    minibatches of ``batch_size`` and trained ``n_epochs`` times.
    """

    learning_rate: LearningRate = 3e-4
    n_steps: PosInt = 128
    batch_size: PosInt = 2048
    n_epochs: PosInt = 4
    gamma: Discount = 0.9
    gae_lambda: Fraction = 0.95
    clip_range: Annotated[float, Field(gt=0.0, le=1.0)] = 0.2
    ent_coef: Annotated[float, Field(ge=0.0)] = 0.01
    vf_coef: Annotated[float, Field(ge=0.0)] = 0.5
    max_grad_norm: Annotated[float, Field(gt=0.0)] = 0.5
    normalize_advantage: bool = True
    target_kl: Annotated[float, Field(gt=0.0)] | None = None
    lstm_hidden_size: PosInt = 64
    """``recurrent_ppo`` only: LSTM width."""

    def sb3_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for the SB3 constructor (the LSTM size goes to policy_kwargs)."""
        return self.model_dump(exclude={"lstm_hidden_size"})


class A2CParams(FrozenModel):
    """A2C hyper-parameters (``stable_baselines3.A2C``)."""

    learning_rate: LearningRate = 7e-4
    n_steps: PosInt = 8
    gamma: Discount = 0.9
    gae_lambda: Fraction = 1.0
    ent_coef: Annotated[float, Field(ge=0.0)] = 0.01
    vf_coef: Annotated[float, Field(ge=0.0)] = 0.5
    max_grad_norm: Annotated[float, Field(gt=0.0)] = 0.5
    use_rms_prop: bool = True
    normalize_advantage: bool = False

    def sb3_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for the SB3 constructor."""
        return self.model_dump()


class DQNParams(FrozenModel):
    """DQN hyper-parameters (``stable_baselines3.DQN``); needs a discrete action space.

    ``train_freq`` counts vector-env steps (each adds ``n_envs`` transitions).
    """

    learning_rate: LearningRate = 1e-4
    buffer_size: PosInt = 200_000
    learning_starts: Annotated[int, Field(ge=0)] = 5_000
    batch_size: PosInt = 256
    tau: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0
    gamma: Discount = 0.9
    train_freq: PosInt = 1
    gradient_steps: PosInt = 2
    target_update_interval: PosInt = 2_000
    exploration_fraction: Fraction = 0.2
    exploration_initial_eps: Fraction = 1.0
    exploration_final_eps: Fraction = 0.02
    max_grad_norm: Annotated[float, Field(gt=0.0)] = 10.0

    def sb3_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for the SB3 constructor."""
        return self.model_dump()


class SACParams(FrozenModel):
    """SAC hyper-parameters (``stable_baselines3.SAC``); needs a continuous action space."""

    learning_rate: LearningRate = 3e-4
    buffer_size: PosInt = 200_000
    learning_starts: Annotated[int, Field(ge=0)] = 5_000
    batch_size: PosInt = 256
    tau: Annotated[float, Field(gt=0.0, le=1.0)] = 0.005
    gamma: Discount = 0.9
    train_freq: PosInt = 1
    gradient_steps: PosInt = 1
    ent_coef: str | Annotated[float, Field(gt=0.0)] = "auto"

    @model_validator(mode="after")
    def _check_ent(self) -> SACParams:
        if isinstance(self.ent_coef, str) and not self.ent_coef.startswith("auto"):
            raise ValueError("ent_coef must be a number > 0, 'auto' or 'auto_<initial value>'")
        return self

    def sb3_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for the SB3 constructor."""
        return self.model_dump()


class TrainConfig(FrozenModel):
    """The ``train:`` section of an experiment: algorithm, budget, evaluation and checkpoints.

    Attributes:
        algo: ``ppo`` | ``dqn`` | ``a2c`` | ``sac`` | ``recurrent_ppo`` (the last needs the
            optional ``sb3-contrib`` package).
        total_timesteps: env steps to train for (summed over envs).
        n_envs: markets/episodes stepped together by the batched env.
        seed: seed of the policy, the envs and every RNG; ``None`` takes the experiment seed.
        net_arch: hidden layer sizes of the policy (and value) network.
        activation: hidden-layer activation.
        ppo, a2c, dqn, sac, recurrent_ppo: per-algorithm hyper-parameters.
        eval_every_steps: evaluate the deterministic policy on the whole validation split every
            this many steps (0 = never during training).
        eval_metric: the validation figure that picks the best model and drives early stopping.
        early_stopping_patience: stop after this many evaluations without improvement
            (``None`` = never stop early).
        min_improvement: an evaluation improves on the best only by more than this.
        use_best_model: return (and bundle) the best evaluated weights, not the last ones.
        min_select_steps: model-selection floor: an evaluation before this many env steps is
            recorded in the history but never becomes the best model and does not count
            towards ``early_stopping_patience``. ``None`` = a quarter of ``total_timesteps``:
            early in training a near-random network can score best on a short validation
            split by luck (a noise trader with a lucky Sharpe), and keeping it throws away
            three quarters of the training; the floor makes the kept model one that trained.
            ``0`` = any evaluation may be kept (the old rule).
        ent_coef_final: on-policy algorithms (``ppo``, ``a2c``, ``recurrent_ppo``): decay the
            entropy bonus linearly from the algorithm block's ``ent_coef`` at step 0 to this
            value at ``total_timesteps`` (set before each update from the steps done;
            :meth:`ent_coef_at`). ``None`` = constant ``ent_coef``. Exploring early and
            committing late keeps a policy from dithering between positions at the end.
        checkpoint_every_steps: write a resumable checkpoint every this many steps (0 = never).
        keep_checkpoints: how many of the latest checkpoints to keep on disk.
        save_replay_buffer: DQN/SAC only: also write the replay buffer into each checkpoint
            (``buffer_size`` transitions of two observations each: about 0.75 GB for DQN's
            default 200,000 on the default features). Off by default: a resumed run then
            refills an empty buffer (``learning_starts`` does not apply again).
        torch_threads: ``torch.set_num_threads`` for the run (small MLPs are fastest on 1-2).
        device: torch device; ``cpu`` is reproducible bit for bit.
        deterministic_torch: ``torch.use_deterministic_algorithms(True)`` during training.
        progress_bar: show SB3's rich/tqdm progress bar.
        log_every_steps: how often SB3's logger dumps its ``train/``/``rollout/`` metrics.
    """

    algo: Algo = "ppo"
    total_timesteps: PosInt = 300_000
    n_envs: PosInt = 64
    seed: int | None = None
    net_arch: tuple[PosInt, ...] = (64, 64)
    activation: Literal["tanh", "relu"] = "tanh"
    ppo: PPOParams = Field(default_factory=PPOParams)
    a2c: A2CParams = Field(default_factory=A2CParams)
    dqn: DQNParams = Field(default_factory=DQNParams)
    sac: SACParams = Field(default_factory=SACParams)
    recurrent_ppo: PPOParams = Field(default_factory=lambda: PPOParams(batch_size=1024))
    eval_every_steps: Annotated[int, Field(ge=0)] = 50_000
    eval_metric: EvalMetric = "sharpe"
    early_stopping_patience: PosInt | None = 4
    min_improvement: Annotated[float, Field(ge=0.0)] = 0.0
    use_best_model: bool = True
    min_select_steps: Annotated[int, Field(ge=0)] | None = None
    ent_coef_final: Annotated[float, Field(ge=0.0)] | None = None
    checkpoint_every_steps: Annotated[int, Field(ge=0)] = 100_000
    keep_checkpoints: PosInt = 2
    save_replay_buffer: bool = False
    torch_threads: PosInt = 1
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    deterministic_torch: bool = True
    progress_bar: bool = False
    log_every_steps: PosInt = 10_000

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.algo in ("ppo", "recurrent_ppo"):
            p = self.ppo if self.algo == "ppo" else self.recurrent_ppo
            rollout = p.n_steps * self.n_envs
            if rollout < 2:
                raise ValueError(
                    f"{self.algo}: n_steps * n_envs = {rollout}; PPO needs a rollout of at least 2"
                )
            if p.batch_size > rollout:
                raise ValueError(
                    f"{self.algo}.batch_size={p.batch_size} is larger than the rollout "
                    f"n_steps * n_envs = {p.n_steps} * {self.n_envs} = {rollout}; lower "
                    "batch_size or raise n_steps/n_envs"
                )
        if self.min_select_steps is not None and self.min_select_steps > self.total_timesteps:
            raise ValueError(
                f"min_select_steps={self.min_select_steps} is larger than total_timesteps="
                f"{self.total_timesteps}: no evaluation could ever be kept; lower it (or leave it "
                "unset for a quarter of total_timesteps)"
            )
        if self.ent_coef_final is not None and self.algo not in ON_POLICY:
            raise ValueError(
                f"ent_coef_final schedules the entropy bonus of ppo/a2c/recurrent_ppo; algo={self.algo} "
                "has none to schedule (SAC tunes its own with sac.ent_coef='auto'): remove ent_coef_final"
            )
        if self.algo == "dqn" and self.dqn.batch_size > self.dqn.buffer_size:
            raise ValueError("dqn.batch_size must not exceed dqn.buffer_size")
        if self.algo == "sac" and self.sac.batch_size > self.sac.buffer_size:
            raise ValueError("sac.batch_size must not exceed sac.buffer_size")
        return self

    @property
    def is_on_policy(self) -> bool:
        """True for PPO/A2C/RecurrentPPO (rollouts), False for DQN/SAC (replay buffer)."""
        return self.algo in ON_POLICY

    @property
    def select_floor(self) -> int:
        """Env steps before which no evaluation is kept as the best model (``min_select_steps``,
        or a quarter of ``total_timesteps`` when unset)."""
        return self.total_timesteps // 4 if self.min_select_steps is None else self.min_select_steps

    def ent_coef_at(self, steps: int) -> float:
        """The entropy coefficient for an update after ``steps`` env steps (summed over envs).

        Linear from the algorithm block's ``ent_coef`` at 0 to ``ent_coef_final`` at
        ``total_timesteps`` (clamped outside); constant when ``ent_coef_final`` is None.

        Raises:
            ValueError: ``algo`` has no scalar entropy coefficient (dqn, sac).
        """
        if self.algo == "a2c":
            start = self.a2c.ent_coef
        elif self.algo in ("ppo", "recurrent_ppo"):
            start = (self.ppo if self.algo == "ppo" else self.recurrent_ppo).ent_coef
        else:
            raise ValueError(f"algo={self.algo} has no scalar entropy coefficient")
        if self.ent_coef_final is None:
            return float(start)
        frac = min(max(steps / self.total_timesteps, 0.0), 1.0)
        return float(start + (self.ent_coef_final - start) * frac)

    def algo_kwargs(self) -> dict[str, Any]:
        """SB3 constructor keyword arguments of the selected algorithm's block."""
        if self.algo == "ppo":
            return self.ppo.sb3_kwargs()
        if self.algo == "recurrent_ppo":
            return self.recurrent_ppo.sb3_kwargs()
        if self.algo == "a2c":
            return self.a2c.sb3_kwargs()
        if self.algo == "dqn":
            return self.dqn.sb3_kwargs()
        return self.sac.sb3_kwargs()

    def with_seed(self, seed: int) -> TrainConfig:
        """A copy with ``seed`` filled in when it is None (the experiment seed)."""
        return self if self.seed is not None else self.model_copy(update={"seed": int(seed)})


class TrackingConfig(FrozenModel):
    """The ``tracking:`` section: Weights & Biases run settings.

    Attributes:
        mode: ``offline`` (files under ``dir``, sync later with ``wandb sync``), ``online``
            or ``disabled`` (no W&B at all; metrics still go to SB3's logger).
        project: W&B project name.
        entity: W&B entity (user or team); None = the account default.
        group: W&B run group (e.g. a sweep or a walk-forward study).
        tags: W&B run tags.
        dir: folder for W&B files; None = ``<out_dir>/wandb``.
        log_bundle: upload the model bundle as an artifact.
        log_plots: log the equity-curve plot.
    """

    mode: TrackingMode = "offline"
    project: str = Field(default="coinrl", min_length=1)
    entity: str | None = None
    group: str | None = None
    tags: tuple[str, ...] = ()
    dir: str | None = None
    log_bundle: bool = True
    log_plots: bool = True


__all__ = [
    "CONTINUOUS_ONLY",
    "DISCRETE_ONLY",
    "ON_POLICY",
    "A2CParams",
    "Algo",
    "DQNParams",
    "EvalMetric",
    "PPOParams",
    "SACParams",
    "TrackingConfig",
    "TrackingMode",
    "TrainConfig",
]
