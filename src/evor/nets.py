"""Networks shared by every agent: an MLP, and an ensemble of independently initialised copies."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class MLP(nn.Module):
    """Hidden layers of GELU units (optionally LayerNorm before the activation), then a linear head."""

    hidden_dims: Sequence[int]
    output_dim: int
    layer_norm: bool = False

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        for width in self.hidden_dims:
            x = nn.Dense(width, kernel_init=nn.initializers.variance_scaling(1.0, "fan_avg", "uniform"))(x)
            if self.layer_norm:
                x = nn.LayerNorm()(x)
            x = nn.gelu(x)
        return nn.Dense(self.output_dim, kernel_init=nn.initializers.variance_scaling(1.0, "fan_avg", "uniform"))(x)


def init_ensemble(module: nn.Module, key: jax.Array, size: int, *example_inputs) -> dict:
    """Parameters of `size` independent copies, stacked along a leading axis."""
    keys = jax.random.split(key, size)
    return jax.vmap(lambda k: module.init(k, *example_inputs))(keys)


def apply_ensemble(module: nn.Module, params: dict, *inputs) -> jnp.ndarray:
    """Every member on the same inputs: output has a leading ensemble axis."""
    return jax.vmap(lambda p: module.apply(p, *inputs))(params)
