"""Models of pi_ref's return Z(s, a) for EVOR (`EVORConfig.return_model`), all on the unit scale [-1, 1]:

  flow      the method's model: a 1-D conditional flow u(z_t, t | s, a), trained by flow matching onto
            one sampled target per transition; samples by integrating its ODE from z_0 ~ N(0, 1).
  mean      a scalar critic V(s, a) of pi_ref's return, regressed (MSE) onto the same sampled targets:
            it learns E[Z]. Its "distribution" is a point mass, so Q* = V for every tau_Q.
  hl_gauss  a histogram over `return_bins` equal bins of [-1, 1], trained by cross-entropy onto each
            target y smoothed by a Gaussian of width sigma = `return_bin_sigma` x bin width and
            integrated over the bins (HL-Gauss; Farebrother et al. 2024, "Stop Regressing"). Its Q* is
            the exact tilt over the bins, tau_Q log sum_k p_k exp(c_k / tau_Q); samples draw from the
            piecewise-uniform density (inverse CDF of the base noise, so common noise still compares
            candidates at equal quantiles).

Everything else in EVOR (targets and their bootstrap with a' ~ pi_ref, ensemble, Polyak target, pi_ref,
candidates, selection, every inference setting) is shared, so comparing the models isolates the value
model. Each takes stacked ensemble parameters (leading axis E) and returns per-member results.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from evor.flows import flow_matching_loss, integrate
from evor.nets import MLP, init_ensemble

RETURN_MODELS = ("flow", "mean", "hl_gauss")


class FlowReturns:
    kind = "flow"
    exact_tilt = False  # Q* needs samples

    def __init__(self, hidden_dims, layer_norm: bool):
        self.net = MLP(hidden_dims, 1, layer_norm=layer_norm)

    def init(self, key, size: int, observation_dim: int, action_dim: int):
        return init_ensemble(self.net, key, size, jnp.zeros((1, observation_dim + action_dim + 2)))

    def velocity(self, member_params, obs, actions, z_t, t):
        return self.net.apply(member_params, jnp.concatenate([obs, actions, z_t, t], -1))

    def transport(self, params, obs, actions, z0, num_steps: int, integrator: str):
        """Returns from base noise z0 (E, ..., 1): each member integrates its ODE; clipped to [-1, 1]."""

        def one_member(member, noise):
            return integrate(lambda z, t: self.velocity(member, obs, actions, z, t), noise, num_steps, integrator)

        return jnp.clip(jax.vmap(one_member)(params, z0), -1.0, 1.0)

    def loss(self, params, targets, obs, actions, key):
        """Flow matching of each member onto its own targets (E, B, 1); summed over members."""
        noise_key, time_key = jax.random.split(key)
        x0 = jax.random.normal(noise_key, targets.shape)
        t = jax.random.uniform(time_key, targets.shape)

        def one_member(member, y, noise, tt):
            return flow_matching_loss(lambda z, s: self.velocity(member, obs, actions, z, s), y, noise, tt)

        return jnp.sum(jax.vmap(one_member)(params, targets, x0, t))


class MeanReturns:
    kind = "mean"
    exact_tilt = True

    def __init__(self, hidden_dims, layer_norm: bool):
        self.net = MLP(hidden_dims, 1, layer_norm=layer_norm)

    def init(self, key, size: int, observation_dim: int, action_dim: int):
        return init_ensemble(self.net, key, size, jnp.zeros((1, observation_dim + action_dim)))

    def value(self, params, obs, actions):
        """V(s, a) per member, (E, ..., 1), clipped to the unit interval where the targets live."""
        inputs = jnp.concatenate([obs, actions], -1)
        return jnp.clip(jax.vmap(lambda member: self.net.apply(member, inputs))(params), -1.0, 1.0)

    def transport(self, params, obs, actions, z0, num_steps: int, integrator: str):
        """A point mass: every 'sample' is the value, whatever the noise."""
        return jnp.broadcast_to(self.value(params, obs, actions), z0.shape)

    def loss(self, params, targets, obs, actions, key):
        """Mean squared error onto the sampled targets (E, B, 1), summed over members: learns E[Z]."""
        inputs = jnp.concatenate([obs, actions], -1)
        predictions = jax.vmap(lambda member: self.net.apply(member, inputs))(params)
        return jnp.sum(jnp.mean((predictions - targets) ** 2, axis=(1, 2)))

    def tilted_value(self, params, obs, actions, tau_q):
        return self.value(params, obs, actions)[..., 0]  # Q* of a point mass is its value, for every tau


class HLGaussReturns:
    kind = "hl_gauss"
    exact_tilt = True

    def __init__(self, hidden_dims, layer_norm: bool, num_bins: int, sigma_ratio: float):
        self.net = MLP(hidden_dims, num_bins, layer_norm=layer_norm)
        self.edges = jnp.linspace(-1.0, 1.0, num_bins + 1)
        self.centers = 0.5 * (self.edges[1:] + self.edges[:-1])
        self.sigma = sigma_ratio * (2.0 / num_bins)

    def init(self, key, size: int, observation_dim: int, action_dim: int):
        return init_ensemble(self.net, key, size, jnp.zeros((1, observation_dim + action_dim)))

    def log_probs(self, params, obs, actions):
        inputs = jnp.concatenate([obs, actions], -1)
        return jax.nn.log_softmax(jax.vmap(lambda member: self.net.apply(member, inputs))(params), axis=-1)

    def target_probs(self, y):
        """HL-Gauss: N(y, sigma^2) integrated over each bin, renormalised to [-1, 1]. y (..., 1) -> (..., K)."""
        cdf = jax.scipy.special.ndtr((self.edges - y) / self.sigma)  # (..., K + 1)
        mass = cdf[..., 1:] - cdf[..., :-1]
        return mass / jnp.maximum(cdf[..., -1:] - cdf[..., :1], 1e-12)

    def transport(self, params, obs, actions, z0, num_steps: int, integrator: str):
        """Inverse-CDF samples of the piecewise-uniform density, at the quantile u = Phi(z0) of the noise."""
        probs = jnp.exp(self.log_probs(params, obs, actions))  # (E, ..., K)
        cdf = jnp.concatenate([jnp.zeros(probs.shape[:-1] + (1,)), jnp.cumsum(probs, axis=-1)], -1)
        u = jax.scipy.special.ndtr(z0) * cdf[..., -1:]  # (E, ..., 1)
        bin_index = jnp.clip(jnp.sum(cdf[..., 1:-1] <= u, axis=-1, keepdims=True), 0, probs.shape[-1] - 1)
        low = jnp.take_along_axis(cdf, bin_index, axis=-1)
        width = jnp.maximum(jnp.take_along_axis(probs, bin_index, axis=-1), 1e-12)
        fraction = jnp.clip((u - low) / width, 0.0, 1.0)
        return self.edges[bin_index] + fraction * (self.edges[1] - self.edges[0])

    def loss(self, params, targets, obs, actions, key):
        """Cross-entropy onto the HL-Gauss projection of each sampled target (E, B, 1), summed over members."""
        log_probs = self.log_probs(params, obs, actions)  # (E, B, K)
        return jnp.sum(jnp.mean(-jnp.sum(self.target_probs(targets) * log_probs, axis=-1), axis=1))

    def tilted_value(self, params, obs, actions, tau_q):
        """tau log sum_k p_k exp(c_k / tau) over the bin centres, exactly; tau = inf is the mean, and
        tau = 0 is the largest centre (a histogram's softmax gives every bin some mass)."""
        log_probs = self.log_probs(params, obs, actions)  # (E, ..., K)
        tau = jnp.asarray(tau_q, log_probs.dtype)
        safe = jnp.where((tau > 0) & jnp.isfinite(tau), tau, 1.0)
        tilted = safe * jax.nn.logsumexp(log_probs + self.centers / safe, axis=-1)
        mean = jnp.sum(jnp.exp(log_probs) * self.centers, axis=-1)
        return jnp.where(tau <= 0, self.centers[-1], jnp.where(jnp.isfinite(tau), tilted, mean))


def make_return_model(config):
    """The return model an EVORConfig names."""
    if config.return_model == "flow":
        return FlowReturns(config.hidden_dims, config.return_layer_norm)
    if config.return_model == "mean":
        return MeanReturns(config.hidden_dims, config.return_layer_norm)
    if config.return_model == "hl_gauss":
        return HLGaussReturns(config.hidden_dims, config.return_layer_norm, config.return_bins, config.return_bin_sigma)
    raise ValueError(f"unknown return_model '{config.return_model}'; choose from {RETURN_MODELS}")
