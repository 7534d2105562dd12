"""QC: Q-chunking (Li, Zhou, Levine 2025), the best-of-N variant (method.md, Baselines).

  pi_ref(a_{t:t+h} | s_t): a flow over the flattened chunk of h actions (behaviour cloning).
  Q_e(s_t, a_{t:t+h}), e = 1..E: scalar critics trained by MSE TD to
      y = sum_{k<h} gamma^k r_{t+k} + gamma^h m mean_e Qbar_e(s_{t+h}, a'*),
      a'* = argmax_n mean_e Q_e(s_{t+h}, a'_n),  a'_1..a'_N ~ pi_ref(.|s_{t+h})
  (the best of N behaviour chunks chosen by the online critics and valued by the target critics, as
  QC's reference code does; `target_selection="target"` chooses with the target critics too, as evor
  did before).
  Act: the best of N chunk samples by mean Q, executed open-loop for h steps.
QC-1 is h = 1 (best-of-N with a scalar critic), QC-5 is h = 5.
Chunks that a true termination cuts short stay in the loss: their actions after the termination are
the last one repeated (never executed) and their target stops at the termination (m = 0), which is
their exact return (evor.data.sampler.chunk_table, tested). QC's reference code leaves such chunks out
of the loss instead; both are unbiased for the chunks they keep.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from evor.agents.base import Agent
from evor.agents.common import BehaviourFlow, CriticEnsemble, adam_step, best_of_n, polyak
from evor.data.sampler import chunk_table, sample_chunks


@dataclasses.dataclass(frozen=True)
class QCConfig:
    hidden_dims: tuple[int, ...] = (512, 512, 512, 512)  # behaviour flow and critic widths
    learning_rate: float = 3e-4  # Adam, all networks
    discount: float = 0.99  # gamma (per environment step)
    horizon: int = 5  # h: actions per chunk (QC-1: 1, QC-5: 5)
    num_critics: int = 2  # E, combined by their mean
    target_update_rate: float = 0.005  # Polyak rate of the target critics
    num_target_samples: int = 32  # N behaviour chunks searched for the best next chunk in the TD target
    target_action_flow_steps: int = 10  # Euler steps sampling those chunks
    target_selection: str = "online"  # which critics choose the best next chunk: 'online' or 'target'

    def validate(self) -> None:
        from evor.errors import ConfigError

        for name in ("horizon", "num_critics", "num_target_samples", "target_action_flow_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if not 0 < self.discount < 1:
            raise ConfigError(f"discount must be in (0, 1), got {self.discount}.")
        if self.target_selection not in ("online", "target"):
            raise ConfigError(f"target_selection must be 'online' or 'target', got '{self.target_selection}'.")


@dataclasses.dataclass(frozen=True)
class QCSettings:
    num_candidates: int = 32  # N chunks sampled from pi_ref at acting time
    action_flow_steps: int = 10  # Euler steps of pi_ref

    def validate(self) -> None:
        from evor.errors import ConfigError

        for name in ("num_candidates", "action_flow_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}.")


def td_target(partial_returns, bootstrap_discounts, next_q, choice_q=None):
    """y = sum_k gamma^k r + gamma^h m next_q[argmax_n choice_q]; next_q, choice_q (B, N). Without choice_q
    the chunk is chosen by next_q itself (max_n next_q)."""
    choice_q = next_q if choice_q is None else choice_q
    best = jnp.argmax(choice_q, axis=-1)
    return partial_returns + bootstrap_discounts * jnp.take_along_axis(next_q, best[:, None], axis=-1)[:, 0]


class QC(Agent):
    name = "qc"
    Config = QCConfig
    Settings = QCSettings

    sample = staticmethod(sample_chunks)  # how a training batch is drawn from the table

    def __init__(self, config: QCConfig, observation_dim: int, action_dim: int):
        config.validate()
        self.config = config
        self.observation_dim = observation_dim
        self.action_dim = action_dim
        self.action_horizon = config.horizon
        self.chunk_dim = action_dim * config.horizon
        self.behaviour = BehaviourFlow(config.hidden_dims, self.chunk_dim)
        self.critic = CriticEnsemble(config.hidden_dims, config.num_critics)
        self.optimizer = optax.adam(config.learning_rate)

    def make_table(self, dataset):
        return chunk_table(dataset, self.config.discount, self.config.horizon)

    def init(self, key):
        actor_key, critic_key = jax.random.split(key)
        actor = self.behaviour.init(actor_key, self.observation_dim)
        critic = self.critic.init(critic_key, self.observation_dim + self.chunk_dim)
        return {"actor": actor, "critic": critic, "target_critic": jax.tree.map(jnp.copy, critic),
                "actor_opt": self.optimizer.init(actor), "critic_opt": self.optimizer.init(critic),
                "step": jnp.zeros((), jnp.int32)}

    def targets(self, state, batch, key):
        cfg = self.config
        obs_n, chunks = self.behaviour.sample_candidates(state["actor"], batch["bootstrap_observations"], key,
                                                         cfg.num_target_samples, cfg.target_action_flow_steps)
        next_q = self.critic(state["target_critic"], obs_n, chunks).mean(axis=0)  # (B, N)
        choice_q = self.critic(state["critic"], obs_n, chunks).mean(axis=0) if cfg.target_selection == "online" \
            else next_q
        return jax.lax.stop_gradient(td_target(batch["partial_returns"], batch["bootstrap_discounts"], next_q,
                                               choice_q))

    def critic_loss(self, critic, targets, batch):
        q = self.critic(critic, batch["observations"], batch["action_chunks"])  # (E, B)
        return jnp.mean((q - targets[None]) ** 2, axis=1).sum(), q.mean()

    def update(self, state, batch, key):
        actor_key, target_key = jax.random.split(key)
        actor_loss, actor_grads = jax.value_and_grad(
            lambda p: self.behaviour.loss(p, batch["observations"], batch["action_chunks"], actor_key))(state["actor"])
        targets = self.targets(state, batch, target_key)
        (critic_loss, q_mean), critic_grads = jax.value_and_grad(self.critic_loss, has_aux=True)(
            state["critic"], targets, batch)
        actor, actor_opt = adam_step(self.optimizer, state["actor"], actor_grads, state["actor_opt"])
        critic, critic_opt = adam_step(self.optimizer, state["critic"], critic_grads, state["critic_opt"])
        new_state = {"actor": actor, "critic": critic,
                     "target_critic": polyak(critic, state["target_critic"], self.config.target_update_rate),
                     "actor_opt": actor_opt, "critic_opt": critic_opt, "step": state["step"] + 1}
        return new_state, {"actor_loss": actor_loss, "critic_loss": critic_loss / self.config.num_critics,
                           "q_mean": q_mean}


    def validation_losses(self, state, table, key, batch_size: int):
        sample_key, actor_key, target_key = jax.random.split(key, 3)
        batch = sample_chunks(table, sample_key, batch_size)
        targets = self.targets(state, batch, target_key)
        return {"val_actor_loss": self.behaviour.loss(state["actor"], batch["observations"], batch["action_chunks"],
                                                      actor_key),
                "val_critic_loss": self.critic_loss(state["critic"], targets, batch)[0] / self.config.num_critics}

    def act(self, state, obs, key, settings: QCSettings):
        """(B, obs_dim) -> (B, h * action_dim): the best of N behaviour chunks by mean Q."""
        obs_n, chunks = self.behaviour.sample_candidates(state["actor"], obs, key, settings.num_candidates,
                                                         settings.action_flow_steps)
        if settings.num_candidates == 1:
            return chunks[:, 0]
        return best_of_n(chunks, self.critic(state["critic"], obs_n, chunks).mean(axis=0))
