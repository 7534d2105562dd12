"""From return samples to actions: the regularised value Q* and the candidate-selection rules.

Shared by EVOR (rejection sampling against Q*) and the best-of-N baselines (argmax of a critic).
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp

SELECTION_RULES = ("rejection", "softmax")


def soft_value(return_samples: jnp.ndarray, tau_q: float | jnp.ndarray) -> jnp.ndarray:
    """Q* = tau_Q * (logsumexp_j(z_j / tau_Q) - log M) over the last axis (method.md, Part 3).

    tau_Q -> inf gives the mean of the samples, tau_Q -> 0 their maximum. tau_Q = inf and tau_Q = 0
    are accepted and mean exactly those limits.
    """
    z = jnp.asarray(return_samples)
    tau_q = jnp.asarray(tau_q, dtype=z.dtype)
    top = z.max(axis=-1)
    safe_tau = jnp.where((tau_q > 0) & jnp.isfinite(tau_q), tau_q, 1.0)
    # tau * log mean exp(z / tau) = max + tau * log1p(mean(expm1((z - max) / tau))): the log1p/expm1
    # form keeps float32 accuracy at large tau, where tau * (logsumexp - log M) cancels catastrophically.
    gaps = (z - top[..., None]) / safe_tau
    tilted = top + safe_tau * jnp.log1p(jnp.mean(jnp.expm1(gaps), axis=-1))
    return jnp.where(tau_q <= 0, top, jnp.where(jnp.isfinite(tau_q), tilted, z.mean(axis=-1)))


def acceptance_probabilities(q: jnp.ndarray, tau_r: float | jnp.ndarray) -> jnp.ndarray:
    """p_i = exp((Q_i - max_j Q_j) / tau_R); tau_R = 0 accepts only the best, tau_R = inf everything."""
    tau_r = jnp.asarray(tau_r, dtype=q.dtype)
    gap = q - q.max(axis=-1, keepdims=True)
    safe_tau = jnp.where((tau_r > 0) & jnp.isfinite(tau_r), tau_r, 1.0)
    p = jnp.exp(gap / safe_tau)
    return jnp.where(tau_r <= 0, (gap >= 0).astype(q.dtype), jnp.where(jnp.isfinite(tau_r), p, jnp.ones_like(q)))


def rejection_select(key: jax.Array, q: jnp.ndarray, tau_r: float | jnp.ndarray) -> jnp.ndarray:
    """Index of the first accepted candidate, in draw order (method.md, Part 4).

    Candidate i is accepted with probability p_i, so P(select i) = p_i * prod_{j<i} (1 - p_j).
    The best candidate has p = 1, so one pass always accepts something.
    """
    p = acceptance_probabilities(q, tau_r)
    accepted = jax.random.uniform(key, q.shape) < p
    accepted = accepted | (p >= 1.0)  # guard: p = 1 is always accepted, even for u drawn as 1.0
    return jnp.argmax(accepted, axis=-1)


def softmax_select(key: jax.Array, q: jnp.ndarray, tau_r: float | jnp.ndarray) -> jnp.ndarray:
    """i ~ softmax(Q / tau_R); tau_R = 0 is argmax."""
    tau_r = jnp.asarray(tau_r, dtype=q.dtype)
    safe_tau = jnp.where(tau_r > 0, tau_r, 1.0)
    sampled = jax.random.categorical(key, q / safe_tau, axis=-1)
    return jnp.where(tau_r > 0, sampled, jnp.argmax(q, axis=-1))


def select(key: jax.Array, q: jnp.ndarray, tau_r, rule: str) -> jnp.ndarray:
    """Index of the chosen candidate along q's last axis. A row whose Q* is not finite (a diverged return
    model) gets a uniformly random candidate, i.e. a plain pi_ref sample, and a warning; without this
    guard the comparisons with NaN would silently select candidate 0 every time."""
    index, bad = _select_guarded(key, q, tau_r, rule)
    jax.debug.callback(_warn_non_finite, jnp.any(bad))
    return index


def select_rows(keys: jax.Array, q: jnp.ndarray, tau_r, rule: str) -> jnp.ndarray:
    """`select` for a batch, one key per row: keys (B,), q (B, N) -> (B,). The same indices as vmapping
    `select` over the rows, but with one host callback for the whole batch. Under vmap a callback is
    unrolled once per row, which made compile time (and per-step host round trips) grow with the batch:
    about 36 s to compile 1000 rows."""
    index, bad = jax.vmap(lambda k, qi: _select_guarded(k, qi, tau_r, rule))(keys, q)
    jax.debug.callback(_warn_non_finite, jnp.any(bad))
    return index


def _select_guarded(key: jax.Array, q: jnp.ndarray, tau_r, rule: str):
    if rule not in SELECTION_RULES:
        raise ValueError(f"unknown selection rule '{rule}'; choose from {SELECTION_RULES}")
    bad = ~jnp.all(jnp.isfinite(q), axis=-1)
    clean = jnp.where(bad[..., None], jnp.zeros_like(q), q)
    index = rejection_select(key, clean, tau_r) if rule == "rejection" else softmax_select(key, clean, tau_r)
    # fold_in, not split: the key of every finite row stays what it was, so results do not change
    fallback = jax.random.randint(jax.random.fold_in(key, 1), bad.shape, 0, q.shape[-1])
    return jnp.where(bad, fallback, index), bad


def _warn_non_finite(any_bad) -> None:
    if bool(any_bad):
        warnings.warn("Q* was not finite (NaN or inf) for some observation: the return model has diverged or "
                      "was fed non-finite inputs. Those observations act with a plain pi_ref sample (a random "
                      "candidate) instead of the selection rule.", RuntimeWarning, stacklevel=1)
