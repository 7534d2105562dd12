"""IFQL: the flow version of IDQL (as in the FQL paper) (method.md, Baselines).

  pi_ref(a|s): flow-matching behaviour cloning.
  V(s): expectile regression (tau = 0.9) onto min_e Qbar_e(s, a) at dataset actions:
      L(V) = E[ |tau - 1(u < 0)| u^2 ],  u = min_e Qbar_e(s, a) - V(s).
  Q_e(s, a): MSE to r + gamma m V(s').
  Act: the best of N = 32 behaviour samples by min_e Q_e.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from evor.agents.base import Agent
from evor.agents.common import BehaviourFlow, CriticEnsemble, adam_step, best_of_n, polyak
from evor.data.sampler import sample_batch, transition_table
from evor.nets import MLP


def expectile_loss(diff, expectile: float):
    """|tau - 1(diff < 0)| * diff^2, averaged: minimised by the tau-expectile of the targets."""
    weight = jnp.where(diff < 0, 1.0 - expectile, expectile)
    return jnp.mean(weight * diff**2)


@dataclasses.dataclass(frozen=True)
class IFQLConfig:
    hidden_dims: tuple[int, ...] = (512, 512, 512, 512)  # all networks' widths
    learning_rate: float = 3e-4  # Adam, all networks
    discount: float = 0.99  # gamma
    expectile: float = 0.9  # tau of the value's expectile regression
    num_critics: int = 2  # E, combined by their min (as IQL)
    target_update_rate: float = 0.005  # Polyak rate of the target critics
    # The critic's TD target along the data's trajectories (evor.data.targets): 1 is the paper's one-step TD;
    # n > 1 uses the dataset's actions for n steps before bootstrapping; 0 Monte-Carlo returns-to-go. For
    # this critic (the value of the learned policy, not of pi_ref) n != 1 is biased towards the behaviour
    # policy's value: an option for the ablation of EVOR's targets, not a recommendation.
    target_horizon: int = 1

    def validate(self) -> None:
        from evor.errors import ConfigError

        if self.target_horizon < 0:
            raise ConfigError(f"target_horizon must be >= 0 (0 = Monte-Carlo), got {self.target_horizon}.")
        if not 0 < self.expectile < 1:
            raise ConfigError(f"expectile must be in (0, 1), got {self.expectile}.")
        if self.num_critics < 1:
            raise ConfigError(f"num_critics must be >= 1, got {self.num_critics}.")
        if not 0 < self.discount < 1:
            raise ConfigError(f"discount must be in (0, 1), got {self.discount}.")


@dataclasses.dataclass(frozen=True)
class IFQLSettings:
    num_candidates: int = 32  # N behaviour samples searched at acting time
    action_flow_steps: int = 10  # Euler steps of pi_ref

    def validate(self) -> None:
        from evor.errors import ConfigError

        for name in ("num_candidates", "action_flow_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}.")


class IFQL(Agent):
    name = "ifql"
    Config = IFQLConfig
    Settings = IFQLSettings
    action_horizon = 1

    sample = staticmethod(sample_batch)  # how a training batch is drawn from the table

    def __init__(self, config: IFQLConfig, observation_dim: int, action_dim: int):
        config.validate()
        self.config = config
        self.observation_dim = observation_dim
        self.action_dim = action_dim
        self.behaviour = BehaviourFlow(config.hidden_dims, action_dim)
        self.critic = CriticEnsemble(config.hidden_dims, config.num_critics)
        self.value = MLP(config.hidden_dims, 1, layer_norm=True)
        self.optimizer = optax.adam(config.learning_rate)

    def make_table(self, dataset):
        return transition_table(dataset, self.config.discount, self.config.target_horizon)

    def init(self, key):
        actor_key, critic_key, value_key = jax.random.split(key, 3)
        actor = self.behaviour.init(actor_key, self.observation_dim)
        critic = self.critic.init(critic_key, self.observation_dim + self.action_dim)
        value = self.value.init(value_key, jnp.zeros((1, self.observation_dim)))
        return {"actor": actor, "critic": critic, "target_critic": jax.tree.map(jnp.copy, critic), "value": value,
                "actor_opt": self.optimizer.init(actor), "critic_opt": self.optimizer.init(critic),
                "value_opt": self.optimizer.init(value), "step": jnp.zeros((), jnp.int32)}

    def v(self, value, obs):
        return self.value.apply(value, obs)[..., 0]

    def value_loss(self, value, state, batch):
        q = self.critic(state["target_critic"], batch["observations"], batch["actions"]).min(axis=0)
        return expectile_loss(jax.lax.stop_gradient(q) - self.v(value, batch["observations"]), self.config.expectile)

    def critic_loss(self, critic, state, batch):
        next_v = self.v(state["value"], batch["bootstrap_observations"])
        y = jax.lax.stop_gradient(batch["partial_returns"] + batch["bootstrap_discounts"] * next_v)
        q = self.critic(critic, batch["observations"], batch["actions"])
        return jnp.mean((q - y[None]) ** 2, axis=1).sum(), q.mean()

    def update(self, state, batch, key):
        actor_loss, actor_grads = jax.value_and_grad(
            lambda p: self.behaviour.loss(p, batch["observations"], batch["actions"], key))(state["actor"])
        value_loss, value_grads = jax.value_and_grad(self.value_loss)(state["value"], state, batch)
        (critic_loss, q_mean), critic_grads = jax.value_and_grad(self.critic_loss, has_aux=True)(
            state["critic"], state, batch)
        actor, actor_opt = adam_step(self.optimizer, state["actor"], actor_grads, state["actor_opt"])
        value, value_opt = adam_step(self.optimizer, state["value"], value_grads, state["value_opt"])
        critic, critic_opt = adam_step(self.optimizer, state["critic"], critic_grads, state["critic_opt"])
        new_state = {"actor": actor, "critic": critic, "value": value,
                     "target_critic": polyak(critic, state["target_critic"], self.config.target_update_rate),
                     "actor_opt": actor_opt, "critic_opt": critic_opt, "value_opt": value_opt,
                     "step": state["step"] + 1}
        return new_state, {"actor_loss": actor_loss, "critic_loss": critic_loss / self.config.num_critics,
                           "value_loss": value_loss, "q_mean": q_mean}


    def validation_losses(self, state, table, key, batch_size: int):
        sample_key, actor_key = jax.random.split(key)
        batch = sample_batch(table, sample_key, batch_size)
        return {"val_actor_loss": self.behaviour.loss(state["actor"], batch["observations"], batch["actions"],
                                                      actor_key),
                "val_critic_loss": self.critic_loss(state["critic"], state, batch)[0] / self.config.num_critics}

    def act(self, state, obs, key, settings: IFQLSettings):
        n = settings.num_candidates
        obs_n, candidates = self.behaviour.sample_candidates(state["actor"], obs, key, n, settings.action_flow_steps)
        if n == 1:
            return candidates[:, 0]
        return best_of_n(candidates, self.critic(state["critic"], obs_n, candidates).min(axis=0))
