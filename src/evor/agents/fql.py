"""FQL: flow Q-learning (Park, Li, Levine 2025) (method.md, Baselines).

  pi_ref(a|s): flow-matching behaviour cloning.
  mu_w(s, z): a one-step policy from noise z ~ N(0, I), trained with
      L(w) = alpha * ||mu_w(s, z) - flow(s, z)||^2 / d - mean_e Q_e(s, clip(mu_w(s, z))),
      where flow(s, z) is pi_ref's ODE solution from the same noise; the flow output and the critic
      are held fixed in this loss (no gradient reaches them). The squared distance is averaged over
      the d action dimensions: the paper's alpha per family (300 for cube) was tuned with its code's
      per-element mean, so a sum over dimensions would regularise d times harder (5x on cube).
  Q_e: MSE TD to r + gamma m mean_e Qbar_e(s', mu_w(s', z')).
  Act: a = mu_w(s, z), one network call.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from evor.agents.base import Agent
from evor.agents.common import BehaviourFlow, CriticEnsemble, adam_step, polyak
from evor.data.sampler import sample_batch, transition_table
from evor.nets import MLP

# Per-environment hyperparameters of the FQL paper (Park, Li, Levine 2025, its OGBench table): the
# distillation coefficient alpha per family, and discount 0.995 for the giant and humanoid mazes (0.99
# elsewhere). Pointmaze is not in that paper: it keeps the config's defaults (alpha 300).
ALPHA_BY_FAMILY = {"cube": 300.0, "scene": 300.0, "puzzle": 1000.0, "antmaze": 10.0, "humanoidmaze": 30.0,
                   "antsoccer": 10.0}
LONG_HORIZON_DISCOUNT = 0.995


def task_defaults(task: str) -> dict:
    """FQL config fields that depend on the OGBench task (applied where neither preset nor user set them)."""
    dataset = task.split("-singletask")[0]
    family = dataset.split("-")[0]
    out = {}
    if family in ALPHA_BY_FAMILY:
        out["alpha"] = ALPHA_BY_FAMILY[family]
    if family == "humanoidmaze" or (family.endswith("maze") and "-giant-" in f"{dataset}-"):
        out["discount"] = LONG_HORIZON_DISCOUNT
    return out


@dataclasses.dataclass(frozen=True)
class FQLConfig:
    hidden_dims: tuple[int, ...] = (512, 512, 512, 512)  # all networks' widths
    learning_rate: float = 3e-4  # Adam, all networks
    discount: float = 0.99  # gamma
    alpha: float = 300.0  # distillation weight (set per family from ALPHA_BY_FAMILY unless given)
    num_critics: int = 2  # E, combined by their mean
    target_update_rate: float = 0.005  # Polyak rate of the target critics
    flow_steps: int = 10  # Euler steps of pi_ref's ODE in the distillation target
    # The critic's TD target along the data's trajectories (evor.data.targets): 1 is the paper's one-step TD;
    # n > 1 uses the dataset's actions for n steps before bootstrapping; 0 Monte-Carlo returns-to-go. For
    # this critic (the value of the learned policy, not of pi_ref) n != 1 is biased towards the behaviour
    # policy's value: an option for the ablation of EVOR's targets, not a recommendation.
    target_horizon: int = 1

    def validate(self) -> None:
        from evor.errors import ConfigError

        if self.alpha < 0:
            raise ConfigError(f"alpha must be >= 0, got {self.alpha}.")
        if self.target_horizon < 0:
            raise ConfigError(f"target_horizon must be >= 0 (0 = Monte-Carlo), got {self.target_horizon}.")
        if self.num_critics < 1 or self.flow_steps < 1:
            raise ConfigError("num_critics and flow_steps must be >= 1.")
        if not 0 < self.discount < 1:
            raise ConfigError(f"discount must be in (0, 1), got {self.discount}.")


@dataclasses.dataclass(frozen=True)
class FQLSettings:
    """FQL acts with one network call; it has no inference-time compute knob."""

    def validate(self) -> None:
        pass


def distillation_loss(actions, flow_actions):
    """Mean over the batch and the action dimensions of the squared difference (the scale alpha is for)."""
    return jnp.mean((actions - flow_actions) ** 2)


class FQL(Agent):
    name = "fql"
    Config = FQLConfig
    Settings = FQLSettings
    action_horizon = 1

    sample = staticmethod(sample_batch)  # how a training batch is drawn from the table
    task_defaults = staticmethod(task_defaults)  # per-family alpha and discount

    def __init__(self, config: FQLConfig, observation_dim: int, action_dim: int):
        config.validate()
        self.config = config
        self.observation_dim = observation_dim
        self.action_dim = action_dim
        self.behaviour = BehaviourFlow(config.hidden_dims, action_dim)
        self.one_step = MLP(config.hidden_dims, action_dim)
        self.critic = CriticEnsemble(config.hidden_dims, config.num_critics)
        self.optimizer = optax.adam(config.learning_rate)

    def make_table(self, dataset):
        return transition_table(dataset, self.config.discount, self.config.target_horizon)

    def init(self, key):
        actor_key, one_step_key, critic_key = jax.random.split(key, 3)
        actor = self.behaviour.init(actor_key, self.observation_dim)
        one_step = self.one_step.init(one_step_key, jnp.zeros((1, self.observation_dim + self.action_dim)))
        critic = self.critic.init(critic_key, self.observation_dim + self.action_dim)
        return {"actor": actor, "one_step": one_step, "critic": critic,
                "target_critic": jax.tree.map(jnp.copy, critic), "actor_opt": self.optimizer.init(actor),
                "one_step_opt": self.optimizer.init(one_step), "critic_opt": self.optimizer.init(critic),
                "step": jnp.zeros((), jnp.int32)}

    def policy_actions(self, one_step, obs, noise):
        return jnp.clip(self.one_step.apply(one_step, jnp.concatenate([obs, noise], -1)), -1.0, 1.0)

    def critic_loss(self, critic, state, batch, key):
        noise = jax.random.normal(key, batch["actions"].shape)
        next_actions = self.policy_actions(state["one_step"], batch["bootstrap_observations"], noise)
        next_q = self.critic(state["target_critic"], batch["bootstrap_observations"], next_actions).mean(axis=0)
        y = jax.lax.stop_gradient(batch["partial_returns"] + batch["bootstrap_discounts"] * next_q)
        q = self.critic(critic, batch["observations"], batch["actions"])
        return jnp.mean((q - y[None]) ** 2, axis=1).sum(), q.mean()

    def one_step_loss(self, one_step, state, batch, key):
        """alpha * distillation(mu(s, z), flow(s, z)) - Q(s, clip(mu(s, z))); flow and critic get no gradient."""
        obs = batch["observations"]
        noise = jax.random.normal(key, batch["actions"].shape)
        flow_actions = jax.lax.stop_gradient(
            self.behaviour.sample_from_noise(state["actor"], obs, noise, self.config.flow_steps))
        raw = self.one_step.apply(one_step, jnp.concatenate([obs, noise], -1))  # distilled before clipping
        distill = distillation_loss(raw, flow_actions)
        q = self.critic(jax.lax.stop_gradient(state["critic"]), obs, jnp.clip(raw, -1.0, 1.0)).mean(axis=0)
        return self.config.alpha * distill - q.mean(), distill

    def update(self, state, batch, key):
        actor_key, critic_key, one_step_key = jax.random.split(key, 3)
        actor_loss, actor_grads = jax.value_and_grad(
            lambda p: self.behaviour.loss(p, batch["observations"], batch["actions"], actor_key))(state["actor"])
        (critic_loss, q_mean), critic_grads = jax.value_and_grad(self.critic_loss, has_aux=True)(
            state["critic"], state, batch, critic_key)
        (one_step_loss, distill), one_step_grads = jax.value_and_grad(self.one_step_loss, has_aux=True)(
            state["one_step"], state, batch, one_step_key)
        actor, actor_opt = adam_step(self.optimizer, state["actor"], actor_grads, state["actor_opt"])
        critic, critic_opt = adam_step(self.optimizer, state["critic"], critic_grads, state["critic_opt"])
        one_step, one_step_opt = adam_step(self.optimizer, state["one_step"], one_step_grads, state["one_step_opt"])
        new_state = {"actor": actor, "one_step": one_step, "critic": critic,
                     "target_critic": polyak(critic, state["target_critic"], self.config.target_update_rate),
                     "actor_opt": actor_opt, "one_step_opt": one_step_opt, "critic_opt": critic_opt,
                     "step": state["step"] + 1}
        return new_state, {"actor_loss": actor_loss, "critic_loss": critic_loss / self.config.num_critics,
                           "one_step_loss": one_step_loss, "distill_loss": distill, "q_mean": q_mean}


    def validation_losses(self, state, table, key, batch_size: int):
        sample_key, actor_key, critic_key = jax.random.split(key, 3)
        batch = sample_batch(table, sample_key, batch_size)
        return {"val_actor_loss": self.behaviour.loss(state["actor"], batch["observations"], batch["actions"],
                                                      actor_key),
                "val_critic_loss": self.critic_loss(state["critic"], state, batch, critic_key)[0]
                / self.config.num_critics}

    def act(self, state, obs, key, settings: FQLSettings):
        noise = jax.random.normal(key, obs.shape[:-1] + (self.action_dim,))
        return self.policy_actions(state["one_step"], obs, noise)
