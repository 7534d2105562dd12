"""Pieces every agent shares, written once: the flow behaviour policy, critic ensembles, target
updates, best-of-N selection, and fused (scanned) training steps."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from evor.data.sampler import sample_batch
from evor.flows import flow_matching_loss, integrate
from evor.nets import MLP, apply_ensemble, init_ensemble

ACTION_CLIP = 1.0 - 1e-5  # dataset actions are clipped inside the open interval (method.md, Part 1)


class BehaviourFlow:
    """pi_ref(a|s) by flow matching: v(s, x_t, t) regressed onto a - x_0; sampled by Euler steps.

    `action_dim` is the flattened size of what it models (a chunk of h actions is h * action_dim).
    """

    def __init__(self, hidden_dims, action_dim: int):
        self.action_dim = action_dim
        self.net = MLP(hidden_dims, action_dim)

    def init(self, key, observation_dim: int):
        return self.net.init(key, jnp.zeros((1, observation_dim + self.action_dim + 1)))

    def velocity(self, params, obs, x_t, t):
        return self.net.apply(params, jnp.concatenate([obs, x_t, t], -1))

    def loss(self, params, obs, actions, key):
        noise_key, time_key = jax.random.split(key)
        actions = jnp.clip(actions, -ACTION_CLIP, ACTION_CLIP)
        x0 = jax.random.normal(noise_key, actions.shape)
        t = jax.random.uniform(time_key, actions.shape[:-1] + (1,))
        return flow_matching_loss(lambda x, tt: self.velocity(params, obs, x, tt), actions, x0, t)

    def sample_from_noise(self, params, obs, noise, num_steps: int):
        """The ODE's endpoint from given noise (deterministic); clipped to the action bounds."""
        out = integrate(lambda x, t: self.velocity(params, obs, x, t), noise, num_steps, "euler")
        return jnp.clip(out, -1.0, 1.0)

    def sample(self, params, obs, key, num_steps: int):
        noise = jax.random.normal(key, obs.shape[:-1] + (self.action_dim,))
        return self.sample_from_noise(params, obs, noise, num_steps)

    def sample_candidates(self, params, obs, key, num: int, num_steps: int):
        """N samples per observation: obs (B, obs_dim) -> (obs_n, candidates), each (B, N, dim), obs_n the
        observations repeated to line up with the candidates (what best-of-N scoring needs)."""
        obs_n = jnp.broadcast_to(obs[:, None, :], (obs.shape[0], num, obs.shape[-1]))
        return obs_n, self.sample(params, obs_n, key, num_steps)


class CriticEnsemble:
    """E scalar critics Q_e(s, a) (MLP with LayerNorm), parameters stacked on a leading axis."""

    def __init__(self, hidden_dims, size: int):
        self.size = size
        self.net = MLP(hidden_dims, 1, layer_norm=True)

    def init(self, key, input_dim: int):
        return init_ensemble(self.net, key, self.size, jnp.zeros((1, input_dim)))

    def __call__(self, params, obs, actions):
        """(E, ...) values."""
        return apply_ensemble(self.net, params, jnp.concatenate([obs, actions], -1))[..., 0]


def polyak(params, target, rate: float):
    """target <- rate * params + (1 - rate) * target."""
    import optax

    return optax.incremental_update(params, target, rate)


def adam_step(optimizer, params, grads, opt_state):
    import optax

    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state


def best_of_n(candidates: jnp.ndarray, scores: jnp.ndarray) -> jnp.ndarray:
    """candidates (B, N, d), scores (B, N) -> the highest-scoring candidate of each row (B, d)."""
    index = jnp.argmax(scores, axis=-1)
    return jnp.take_along_axis(candidates, index[:, None, None], axis=1)[:, 0]


def one_update(update: Callable, state, table, step_key, batch_size: int, sample: Callable = sample_batch):
    """One update on a batch drawn from the device-resident table with `step_key`."""
    sample_key, update_key = jax.random.split(step_key)
    return update(state, sample(table, sample_key, batch_size), update_key)


def scan_updates(update: Callable, state, table, key, num_steps: int, batch_size: int,
                 sample: Callable = sample_batch, refresh: Callable | None = None, refresh_every: int = 0):
    """`num_steps` updates fused in one lax.scan; batches drawn on the device; mean metrics.

    `refresh(state, table, key) -> dict` (optional) computes table entries from the training state (EVOR's
    return samples at trajectory cut-offs): at the first update of the call and then every
    `refresh_every` updates, with key fold_in(key, update index). The update keys are those of a call
    without refresh, so agents that refresh nothing are unchanged bit for bit.
    """
    step_keys = jax.random.split(key, num_steps)
    if refresh is None:
        def body(carry, step_key):
            return one_update(update, carry, table, step_key, batch_size, sample)

        state, metrics = jax.lax.scan(body, state, step_keys)
        return state, jax.tree.map(jnp.mean, metrics)

    def refreshed_body(carry, inputs):
        state, extra = carry
        index, step_key = inputs
        # The predicate depends only on the loop index (never on seed-batched state), so under a vmap
        # over seeds this stays a real branch instead of computing the refresh at every update.
        extra = jax.lax.cond((index % refresh_every == 0) & (index > 0),
                             lambda: refresh(state, table, jax.random.fold_in(key, index)), lambda: extra)
        state, metrics = one_update(update, state, {**table, **extra}, step_key, batch_size, sample)
        return (state, extra), metrics

    extra = refresh(state, table, jax.random.fold_in(key, 0))
    (state, _), metrics = jax.lax.scan(refreshed_body, (state, extra), (jnp.arange(num_steps), step_keys))
    return state, jax.tree.map(jnp.mean, metrics)


def table_refresh(agent, table) -> tuple[Callable | None, int]:
    """(refresh function, period) of an agent whose update needs table entries computed from its state
    (`agent.table_refresh(table)`), or (None, 0)."""
    method = getattr(agent, "table_refresh", None)
    return method(table) if method is not None else (None, 0)


def plain_updates(agent, state, table, key, num_steps: int, batch_size: int, step_fn=None):
    """The reference loop the field's code uses: one jitted call per update from Python, the same keys
    (and table refreshes) as `agent.train_steps`. For the fused-equals-plain test and the throughput
    benchmark."""
    if step_fn is None:
        step_fn = plain_step_fn(agent, table, batch_size)
    refresh, every = table_refresh(agent, table)
    refresh_fn = jax.jit(lambda s, k: refresh(s, table, k)) if refresh is not None else None
    extra, metrics = {}, []
    for index, step_key in enumerate(jax.random.split(key, num_steps)):
        if refresh_fn is not None and index % every == 0:
            extra = refresh_fn(state, jax.random.fold_in(key, index))
        state, step_metrics = step_fn(state, step_key, extra)
        metrics.append(step_metrics)
    return state, jax.tree.map(lambda *xs: jnp.mean(jnp.stack(xs)), *metrics)


def plain_step_fn(agent, table, batch_size: int):
    """(state, key, refreshed table entries) -> one update, jitted; `state` is donated."""
    return jax.jit(lambda s, k, extra: one_update(agent.update, s, {**table, **extra}, k, batch_size, agent.sample),
                   donate_argnums=(0,))
