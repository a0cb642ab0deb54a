"""Policies as plain callables for the rollouts: an SB3 model's ``predict`` with its state kept,
and fast batched forms that run its network directly (one model, or many stacked).

Split out of :mod:`coinrl.agents.rollout`, which still exports every name here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt


def sb3_policy(model: Any, deterministic: bool = True) -> Callable[[Any, bool], Any]:
    """Wrap an SB3 model as a stateful ``(obs, episode_start) -> action`` callable.

    Recurrent policies (sb3-contrib RecurrentPPO) keep their LSTM state between calls.
    """
    state: list[Any] = [None]

    def act(obs: Any, episode_start: bool) -> Any:
        action, new_state = model.predict(
            obs,
            state=state[0],
            episode_start=np.array([episode_start]),
            deterministic=deterministic,
        )
        state[0] = new_state
        return action

    return act


def torch_policy(model: Any, deterministic: bool = True) -> Callable[[Any], npt.NDArray[Any]] | None:
    """A batched ``obs -> actions`` of an SB3 model that runs its network directly.

    It performs the torch operations of ``model.predict`` (the same modules, in the same
    order, on the same float32 tensors) without its per-call checks and without building a
    torch distribution object, so for a batch of one observation its actions equal
    ``predict``'s bit for bit; for a batch of many, each row equals a one-row call up to
    the float rounding of a batched matrix product (``~1e-9`` on the logits).

    Args:
        model: an SB3 algorithm (anything with a ``policy`` holding ``_predict``).
        deterministic: the policy's mode (True for backtests); False samples through
            ``_predict``.

    Returns:
        The callable (observations ``(B, ...)`` in, actions ``(B, *action_shape)`` out), or
        None for a recurrent policy (its state needs :func:`sb3_policy`) or no SB3 model.
    """
    policy = getattr(model, "policy", None)
    if policy is None or not hasattr(policy, "_predict") or hasattr(policy, "lstm_actor"):
        return None
    import torch
    from gymnasium import spaces
    from stable_baselines3.common.distributions import (
        CategoricalDistribution,
        DiagGaussianDistribution,
    )
    from stable_baselines3.common.policies import ActorCriticPolicy, BaseModel

    policy.set_training_mode(False)
    space = policy.action_space
    shape = tuple(space.shape or ())
    is_box = isinstance(space, spaces.Box)
    squash = bool(getattr(policy, "squash_output", False))
    low = getattr(space, "low", None)
    high = getattr(space, "high", None)
    dict_obs = isinstance(policy.observation_space, spaces.Dict)
    forward: Callable[[Any], Any]
    if isinstance(policy, ActorCriticPolicy) and deterministic and not dict_obs:
        dist = policy.action_dist

        if type(dist) is CategoricalDistribution:

            def forward(t: Any) -> Any:
                features = BaseModel.extract_features(policy, t, policy.pi_features_extractor)
                logits = policy.action_net(policy.mlp_extractor.forward_actor(features))
                # torch's Categorical(logits=...).probs, then CategoricalDistribution.mode()
                norm = logits - logits.logsumexp(dim=-1, keepdim=True)
                return torch.argmax(torch.softmax(norm, dim=-1), dim=1)

        elif type(dist) is DiagGaussianDistribution:

            def forward(t: Any) -> Any:
                features = BaseModel.extract_features(policy, t, policy.pi_features_extractor)
                return policy.action_net(policy.mlp_extractor.forward_actor(features))

        else:

            def forward(t: Any) -> Any:
                return policy._predict(t, deterministic=deterministic)

    else:

        def forward(t: Any) -> Any:
            return policy._predict(t, deterministic=deterministic)

    def act(obs: Any) -> npt.NDArray[Any]:
        if dict_obs:
            t, _ = policy.obs_to_tensor(obs)
        else:
            t = torch.as_tensor(np.asarray(obs), device=policy.device)
        with torch.no_grad():
            out = forward(t)
        a = out.cpu().numpy().reshape((-1, *shape))
        if is_box:
            a = policy.unscale_action(a) if squash else np.clip(a, low, high)
        return np.asarray(a)

    return act


def _mlp_layers(model: Any) -> tuple[list[Any], str] | None:
    """The layers ``[Linear, act, Linear, ..., Linear]`` from a flat observation to the action
    head of an SB3 MLP policy, and the head kind (``categorical``, ``gaussian``, ``q``);
    None when the policy is not such a plain MLP."""
    import torch
    from stable_baselines3.common.distributions import (
        CategoricalDistribution,
        DiagGaussianDistribution,
    )
    from stable_baselines3.common.policies import ActorCriticPolicy
    from stable_baselines3.common.torch_layers import FlattenExtractor

    policy = getattr(model, "policy", None)
    if isinstance(policy, ActorCriticPolicy):
        if not isinstance(policy.pi_features_extractor, FlattenExtractor) or policy.squash_output:
            return None
        dist = policy.action_dist
        kind = {CategoricalDistribution: "categorical", DiagGaussianDistribution: "gaussian"}.get(type(dist))
        if kind is None:
            return None
        layers = [*policy.mlp_extractor.policy_net, policy.action_net]
    else:
        q = getattr(policy, "q_net", None)
        if q is None or not isinstance(getattr(q, "features_extractor", None), FlattenExtractor):
            return None
        layers = list(q.q_net)
        kind = "q"
    if not layers or not isinstance(layers[-1], torch.nn.Linear):
        return None
    for layer in layers:
        if not isinstance(layer, torch.nn.Linear) and any(True for _ in layer.parameters()):
            return None  # only parameter-free activations between the linear layers
    return layers, kind


def stacked_torch_policy(models: Sequence[Any], group: npt.ArrayLike) -> Callable[[Any], npt.NDArray[Any]] | None:
    """One batched ``obs -> actions`` for accounts driven by DIFFERENT models of one MLP shape.

    The weights of the ``M`` models are stacked, so each layer is one batched matrix product
    (``torch.baddbmm``) over all models at once instead of ``M`` separate network calls: the
    walk-forward case, where every fold x seed has its own policy. Deterministic actions
    only; they agree with :func:`torch_policy` up to the float rounding of a batched product
    (``~1e-9`` on the logits: discrete actions match except at exact ties).

    Args:
        models: ``M`` SB3 models (PPO/A2C with categorical or Gaussian heads, DQN) with the
            same layer sizes and activations and a flat box observation.
        group: ``(N,)`` model index of each account (row of the observations).

    Returns:
        The callable, or None when the models cannot be stacked (other policies, different
        shapes); then call each model on its own rows.
    """
    import torch

    g = np.asarray(group, dtype=np.int64)
    parsed = [_mlp_layers(m) for m in models]
    if not models or any(p is None for p in parsed):
        return None
    first_layers, kind = parsed[0]  # type: ignore[misc]
    sig = [(type(x).__name__, tuple(getattr(x, "weight", torch.empty(0)).shape), repr(x)) for x in first_layers]
    for p in parsed[1:]:
        layers, k = p  # type: ignore[misc]
        if k != kind or [(type(x).__name__, tuple(getattr(x, "weight", torch.empty(0)).shape), repr(x)) for x in layers] != sig:
            return None
    m = len(models)
    for mod in models:
        mod.policy.set_training_mode(False)
    with torch.no_grad():
        stack: list[tuple[Any, Any] | Any] = []
        for j, layer in enumerate(first_layers):
            if isinstance(layer, torch.nn.Linear):
                w = torch.stack([p[0][j].weight.detach().T for p in parsed])  # type: ignore[index]
                b = torch.stack([p[0][j].bias.detach()[None, :] for p in parsed])  # type: ignore[index]
                stack.append((w.contiguous(), b.contiguous()))
            else:
                stack.append(layer)
    counts = np.bincount(g, minlength=m)
    width = int(counts.max())
    # rows of each model, padded by repeating its first row: (M, width) gather indices
    rows = np.zeros((m, width), dtype=np.int64)
    valid = np.zeros((m, width), dtype=bool)
    for j in range(m):
        idx = np.flatnonzero(g == j)
        rows[j, : len(idx)] = idx
        rows[j, len(idx):] = idx[0] if len(idx) else 0
        valid[j, : len(idx)] = True
    flat_rows = rows[valid]
    space = models[0].policy.action_space
    low = getattr(space, "low", None)
    high = getattr(space, "high", None)
    shape = tuple(space.shape or ())

    def act(obs: Any) -> npt.NDArray[Any]:
        x = torch.as_tensor(np.asarray(obs)[rows])  # (M, width, D)
        with torch.no_grad():
            for layer in stack:
                if isinstance(layer, tuple):
                    x = torch.baddbmm(layer[1], x, layer[0])
                else:
                    x = layer(x)
            if kind == "categorical":
                norm = x - x.logsumexp(dim=-1, keepdim=True)
                out = torch.argmax(torch.softmax(norm, dim=-1), dim=-1)
            elif kind == "q":
                out = x.argmax(dim=-1)
            else:
                out = x
        a = out.cpu().numpy()[valid]
        result = np.empty((len(g), *shape), dtype=a.dtype) if shape else np.empty(len(g), dtype=a.dtype)
        result[flat_rows] = a.reshape((-1, *shape)) if shape else a
        if kind == "gaussian":
            result = np.clip(result, low, high)
        return result

    return act

__all__ = ["sb3_policy", "stacked_torch_policy", "torch_policy"]
