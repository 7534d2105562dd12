"""EVOR: expressive value learning for offline RL (method.md, Parts 1-4).

  Part 1  pi_ref(a|s): flow-matching behaviour cloning; Euler ODE sampling.
  Part 2  Z(s,a): a 1-D conditional flow over the (unit-scaled) return of pi_ref, trained by
          distributional TD with a' ~ pi_ref(s'), z' from a Polyak-averaged target flow. No max,
          no distillation, no gradient through any ODE.
  Part 3  Q*(s,a) = tau_Q * log mean_j exp(z_j / tau_Q) over M return samples.
  Part 4  Act: N candidates from pi_ref, scored by Q*, one chosen by rejection sampling.
With `horizon` h > 1 "a" is a chunk a_{t:t+h} of h actions (as in QC): pi_ref and Z model the flattened
chunk, Z(s_t, a_{t:t+h}) is the return of executing it and then following pi_ref, and the chosen chunk
is executed open-loop. h = 5 is our default; the paper's EVOR acts one step at a time (h = 1).
All of Part 3-4's knobs (N, M, flow steps, tau_Q, tau_R, selection) are inference settings: the
same trained state serves every setting.
Ours, as options (defaults chosen by measurement, docs/): Monte-Carlo or n-step targets along the data's
trajectories, with the cut-off returns of Monte-Carlo targets read from a table (`refresh_cutoff_returns`);
the midpoint readout from the Polyak-averaged weights; common return noise; and, for ablations, a scalar
or histogram model of Z instead of the flow (`return_model`, agents/return_models.py) and TD targets
that bootstrap from the best of N pi_ref samples instead of one (`next_action='greedy'`, QC's target). The state keeps
the name `return_flow` for the return model's parameters whatever its kind.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax

from evor.agents.base import Agent
from evor.agents.common import BehaviourFlow, adam_step, best_of_n, polyak
from evor.agents.return_models import RETURN_MODELS, make_return_model
from evor.data.sampler import chunk_table, sample_batch, sample_chunks, transition_table
from evor.flows import INTEGRATORS
from evor.selection import SELECTION_RULES, select_rows, soft_value


@dataclasses.dataclass(frozen=True)
class EVORConfig:
    hidden_dims: tuple[int, ...] = (512, 512, 512, 512)  # both flows' MLP widths
    learning_rate: float = 3e-4  # Adam, both flows
    discount: float = 0.99  # gamma
    num_return_flows: int = 2  # ensemble size E of the return model
    return_layer_norm: bool = True  # LayerNorm in the return model's MLP
    # The model of Z (agents/return_models.py): 'flow' (the method), 'mean' (a scalar critic of pi_ref's
    # return on the same targets; Q* = its value) or 'hl_gauss' (a histogram trained by HL-Gauss
    # cross-entropy; Q* its exact tilt). For the ablation of what the distribution buys.
    return_model: str = "flow"
    return_bins: int = 101  # hl_gauss: equal bins over the unit interval [-1, 1]
    return_bin_sigma: float = 0.75  # hl_gauss: target smoothing sigma, in bin widths (the paper's 0.75)
    target_update_rate: float = 0.005  # Polyak rate of the target return flow
    target_action_flow_steps: int = 10  # Euler steps sampling a' ~ pi_ref(s') inside the TD target
    # The return-flow target. Defaults chosen by measurement (docs/calibration.md): the spec's one-step
    # TD with 10 Euler steps learns 35-71% of the true spread on the calibration chain; Monte-Carlo
    # returns-to-go (bootstrapping only where a recorded trajectory is cut) learn 98-106% of it.
    target_return_flow_steps: int = 5  # steps integrating z' inside the TD target (separate from inference)
    target_integrator: str = "midpoint"  # 'euler' | 'midpoint' | 'rk4' for z' in the TD target
    target_horizon: int = 0  # 0: Monte-Carlo returns-to-go; 1: one-step TD; n: n-step along trajectories
    # a' in the TD target: 'policy' (a' ~ pi_ref: Z stays pi_ref's return, the method), 'dataset' (the
    # recorded next action) or 'greedy' (the best of `target_candidates` pi_ref samples by the online return
    # model's median, ensemble-averaged; z' from the target model at it, as QC's target chooses its chunk).
    # 'greedy' is an ablation, not the method: Z is then the return of acting greedily after the first
    # chunk, which escapes a trap that the behaviour's own continuation walks round (docs/ablations.md).
    next_action: str = "policy"
    target_candidates: int = 32  # 'greedy': pi_ref samples searched for a' in the TD target
    # Monte-Carlo targets only (target_horizon 0): how the bootstrap term gamma^K z'(s_cut, a') at the state
    # where a recorded trajectory is cut gets its sample. 'table': every `cutoff_refresh_every` updates,
    # draw `cutoff_samples` pairs (a', z') per distinct cut-off state from pi_ref and the target flow; a row
    # takes one of its cut-off's samples at random (see `refresh_cutoff_returns` for the error bound).
    # 'every_row': each row integrates its own a' and z' at every update (the spec's computation; on
    # cube-single ~3/4 of an update's arithmetic, for terms most of which weigh 0.99^K with K in the hundreds).
    cutoff_returns: str = "table"
    cutoff_samples: int = 4
    cutoff_refresh_every: int = 250
    # h: actions per chunk. target_horizon still counts environment steps; with chunks a TD target must
    # look at least one chunk ahead (the chunk's own actions are the dataset's, recorded in the table).
    # 5 (QC's length) since it passed two pre-registered held-out tests against single-step acting at
    # about half the policy time (docs/ablations.md); 1 is the paper's single-step EVOR (label 'evor1').
    horizon: int = 5

    def validate(self) -> None:
        from evor.errors import ConfigError

        if self.target_integrator not in INTEGRATORS:
            raise ConfigError(f"target_integrator must be one of {INTEGRATORS}, got '{self.target_integrator}'.")
        if self.next_action not in NEXT_ACTIONS:
            raise ConfigError(f"next_action must be one of {NEXT_ACTIONS}, got '{self.next_action}'.")
        if self.next_action == "greedy" and self.target_horizon == 0:
            raise ConfigError("next_action 'greedy' chooses the bootstrap action of a TD target; Monte-Carlo targets "
                              "(target_horizon 0) have none: set target_horizon to at least the chunk length.")
        if self.target_horizon < 0:
            raise ConfigError(f"target_horizon must be >= 0 (0 = Monte-Carlo), got {self.target_horizon}.")
        if self.horizon < 1:
            raise ConfigError(f"horizon must be >= 1 (actions per chunk), got {self.horizon}.")
        if self.horizon > 1 and 0 < self.target_horizon < self.horizon:
            raise ConfigError(f"target_horizon {self.target_horizon} is shorter than the action chunk (horizon "
                              f"{self.horizon}): use 0 (Monte-Carlo) or at least {self.horizon} steps.")
        if self.horizon > 1 and self.next_action == "dataset":
            raise ConfigError("next_action 'dataset' needs single actions; with horizon > 1 use 'policy' or 'greedy'.")
        if not 0 < self.discount < 1:
            raise ConfigError(f"discount must be in (0, 1), got {self.discount}.")
        if self.return_model not in RETURN_MODELS:
            raise ConfigError(f"return_model must be one of {RETURN_MODELS}, got '{self.return_model}'.")
        if self.return_bins < 2 or not self.return_bin_sigma > 0:
            raise ConfigError(f"return_bins must be >= 2 and return_bin_sigma > 0, got {self.return_bins}, "
                              f"{self.return_bin_sigma}.")
        if self.cutoff_returns not in CUTOFF_RETURNS:
            raise ConfigError(f"cutoff_returns must be one of {CUTOFF_RETURNS}, got '{self.cutoff_returns}'.")
        for name in ("num_return_flows", "target_action_flow_steps", "target_return_flow_steps", "cutoff_samples",
                     "cutoff_refresh_every", "target_candidates"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}.")


CUTOFF_RETURNS = ("table", "every_row")  # EVORConfig.cutoff_returns
NEXT_ACTIONS = ("policy", "dataset", "greedy")  # EVORConfig.next_action
RETURN_WEIGHTS = {"online": "return_flow", "ema": "target_return_flow"}  # setting -> state entry
# How Q*'s M return samples draw the return flow's base noise (InferenceSettings.return_noise).
RETURN_NOISE = ("independent", "common", "stratified")
TILTS = ("exact", "sampled")


@dataclasses.dataclass(frozen=True)
class InferenceSettings:
    num_candidates: int = 32  # N: candidates drawn from pi_ref
    num_return_samples: int = 8  # M: return samples per candidate for Q*
    action_flow_steps: int = 10  # K_a: Euler steps of pi_ref
    # K_z and the integrator of Z: midpoint with 5 steps costs what 10 Euler steps cost (10 velocity calls)
    # but Euler's first steps pull samples towards the mean (spread 79-91% of the truth on the calibration
    # chain against 98-106% for midpoint 5 with EMA weights; docs/calibration.md).
    return_flow_steps: int = 5
    integrator: str = "midpoint"
    tau_q: float = 0.05  # tilt temperature of Q* (unit-scale returns); inf = mean return
    tau_r: float = 1e-3  # acceptance temperature; 0 = argmax, inf = plain pi_ref sample
    selection: str = "rejection"  # 'rejection' | 'softmax'
    ensemble: str = "mean"  # combine the E return flows' Q*: 'mean' | 'min'
    # Which return-flow weights score candidates: 'online' (the last iterate) or 'ema' (the Polyak-averaged
    # target flow, an average over the last ~1/target_update_rate updates: less final-iterate noise).
    return_weights: str = "ema"
    # Base noise of Q*'s M return samples. 'independent' (the spec): fresh noise for every candidate.
    # 'common': the same M noise draws for every candidate (common random numbers). A 1-D flow's ODE map
    # from noise to return is monotone (trajectories cannot cross), so candidates are then compared at
    # the same quantiles of their return distributions: each candidate's Q* estimate is distributed as
    # before, but their differences are far less noisy. 'stratified': common, and the M draws are one
    # per equal-probability stratum of N(0, 1) (randomised by one uniform shift), so mean_j exp(z_j/tau_Q)
    # stays an unbiased estimate of E[exp(Z/tau_Q)] with less variance than M independent draws.
    # Measured on cube-single task 2 (docs/comparison.md): 'common' at N = 8, M = 1 scores 48% against 15%
    # for 'independent' (57% at the default N = 32, M = 8); 'stratified' collapses to pi_ref's 5% at N = 32,
    # M = 8, and 'common' at M = 8 fails too (13% at tau_Q = 1): with shared noise the scores barely vary
    # across draws, so the near-argmax tau_R = 1e-3 picks whichever candidate the return flow over-values
    # most. A softer tau_R restores it (common, tau_Q = 1, tau_R = 0.03: 63% on that task); independent
    # noise softens the choice at random, and there tau_R = 0.03 changes nothing (56%).
    return_noise: str = "independent"
    # How Q* reads a return model that has an exact tilt ('mean', 'hl_gauss'): 'exact' computes
    # tau_Q log E[exp(Z / tau_Q)] over the whole model (for a histogram, every bin, however little mass
    # its softmax gives it); 'sampled' reads it from M samples through the same estimator the flow uses,
    # so two models are compared with one readout. The flow always samples.
    tilt: str = "exact"

    def validate(self) -> None:
        from evor.errors import ConfigError

        for name in ("num_candidates", "num_return_samples", "action_flow_steps", "return_flow_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}.")
        for name in ("tau_q", "tau_r"):
            value = getattr(self, name)
            if not value >= 0:  # also rejects NaN
                raise ConfigError(f"{name} must be >= 0 (0 and inf are the limits), got {value}.")
        if self.selection not in SELECTION_RULES:
            raise ConfigError(f"selection must be one of {SELECTION_RULES}, got '{self.selection}'.")
        if self.ensemble not in ("mean", "min"):
            raise ConfigError(f"ensemble must be 'mean' or 'min', got '{self.ensemble}'.")
        if self.integrator not in INTEGRATORS:
            raise ConfigError(f"integrator must be one of {INTEGRATORS}, got '{self.integrator}'.")
        if self.return_weights not in RETURN_WEIGHTS:
            raise ConfigError(f"return_weights must be one of {RETURN_WEIGHTS}, got '{self.return_weights}'.")
        if self.return_noise not in RETURN_NOISE:
            raise ConfigError(f"return_noise must be one of {RETURN_NOISE}, got '{self.return_noise}'.")
        if self.tilt not in TILTS:
            raise ConfigError(f"tilt must be one of {TILTS}, got '{self.tilt}'.")


# Named inference presets (`evor eval RUN --inference fast`, `Run.settings(preset="fast")`): fields over
# InferenceSettings' defaults. 'fast' is the cheap setting of the common-noise measurements on cube-single
# task 2 (docs/comparison.md): N = 8 candidates, M = 2 return samples with common base noise, tau_Q = 1,
# tau_R = 0.03 scored 52.0 +- 4.3% at 2.4 ms per action against the default's 57.3 +- 4.1% at ~27 ms (FQL
# 48.0 +- 8.2%). Chosen on cube-single only; docs/results.md keeps its check on other tasks.
INFERENCE_PRESETS = {
    "default": {},
    "fast": {"num_candidates": 8, "num_return_samples": 2, "return_noise": "common", "tau_q": 1.0, "tau_r": 0.03},
}


@dataclasses.dataclass(frozen=True)
class ReturnScale:
    """Affine map of returns in [r_min/(1-gamma), r_max/(1-gamma)] to [-1, 1] (method.md, Part 2)."""

    low: float
    high: float

    @classmethod
    def from_rewards(cls, reward_min: float, reward_max: float, discount: float) -> ReturnScale:
        low, high = reward_min / (1 - discount), reward_max / (1 - discount)
        if high - low < 1e-6:  # constant rewards: any non-empty interval containing them
            low, high = low - 1.0, high + 1.0
        return cls(float(low), float(high))

    def to_unit(self, g):
        return 2.0 * (g - self.low) / (self.high - self.low) - 1.0

    def from_unit(self, u):
        return self.low + (u + 1.0) * 0.5 * (self.high - self.low)


class EVOR(Agent):
    """Static description of an EVOR agent (config, shapes, networks); state lives in a pytree."""

    name = "evor"
    Config = EVORConfig
    Settings = InferenceSettings
    inference_presets = INFERENCE_PRESETS
    uses_return_scale = True

    def __init__(self, config: EVORConfig, observation_dim: int, action_dim: int, return_scale: ReturnScale):
        config.validate()
        self.config = config
        self.observation_dim = observation_dim
        self.action_dim = action_dim  # of one environment step
        self.action_horizon = config.horizon
        self.chunk_dim = action_dim * config.horizon  # what pi_ref and Z see as "the action"
        # how a training batch is drawn: chunks only where they fit in their recorded trajectory
        self.sample_rows = sample_batch if config.horizon == 1 else sample_chunks
        # Monte-Carlo targets read their cut-off returns from a shared table instead of integrating per row
        self.uses_cutoff_table = config.target_horizon == 0 and config.cutoff_returns == "table"
        self.return_scale = return_scale
        self.behaviour = BehaviourFlow(config.hidden_dims, self.chunk_dim)
        self.return_model = make_return_model(config)
        self.optimizer = optax.adam(config.learning_rate)

    # ----------------------------------------------------------------- state

    def make_table(self, dataset):
        config = self.config
        cutoffs = self.uses_cutoff_table
        if config.horizon == 1:
            return transition_table(dataset, config.discount, config.target_horizon, cutoffs=cutoffs)
        table = chunk_table(dataset, config.discount, config.horizon, target_horizon=config.target_horizon,
                            cutoffs=cutoffs)
        table["actions"] = table.pop("action_chunks")
        return table

    def sample(self, table, key, batch_size: int):
        """A training batch; with a cut-off table, each row also gets one of its cut-off state's return
        samples (a fresh index per row and ensemble member): `bootstrap_returns`, (E, B), unit scale."""
        if "cutoff_returns" not in table:
            return self.sample_rows(table, key, batch_size)
        row_key, pick_key = jax.random.split(key)
        batch = self.sample_rows(table, row_key, batch_size)
        members, _, samples = table["cutoff_returns"].shape
        pick = jax.random.randint(pick_key, (members, batch_size), 0, samples)
        batch["bootstrap_returns"] = table["cutoff_returns"][jnp.arange(members)[:, None],
                                                             batch["cutoff_index"][None, :], pick]
        return batch

    def init(self, key: jax.Array) -> dict[str, Any]:
        actor_key, return_key = jax.random.split(key)
        actor = self.behaviour.init(actor_key, self.observation_dim)
        returns = self.return_model.init(return_key, self.config.num_return_flows, self.observation_dim,
                                         self.chunk_dim)
        return {
            "actor": actor,
            "return_flow": returns,
            "target_return_flow": jax.tree.map(jnp.copy, returns),  # own buffers (donation)
            "actor_opt": self.optimizer.init(actor),
            "return_opt": self.optimizer.init(returns),
            "step": jnp.zeros((), jnp.int32),
        }

    # ----------------------------------------------------------------- Part 1: pi_ref

    def sample_actions(self, actor_params, obs, key, num_steps: int):
        """a ~ pi_ref(.|s): integrate the velocity field from Gaussian noise, clip to the bounds."""
        return self.behaviour.sample(actor_params, obs, key, num_steps)

    def actor_loss(self, actor_params, batch, key):
        """||v(s, x_t, t) - (a - x_0)||^2, the flow-matching behaviour-cloning loss."""
        return self.behaviour.loss(actor_params, batch["observations"], batch["actions"], key)

    # ----------------------------------------------------------------- Part 2: Z(s, a)

    def sample_returns(self, return_params, obs, actions, key, num_steps: int, integrator: str):
        """Unit-scale return samples from every ensemble member: shape (E,) + obs.shape[:-1] + (1,)."""
        z0 = jax.random.normal(key, (self.config.num_return_flows,) + obs.shape[:-1] + (1,))
        return self.transport_returns(return_params, obs, actions, z0, num_steps, integrator)

    def transport_returns(self, return_params, obs, actions, z0, num_steps: int, integrator: str):
        """Returns from given base noise z0, shape (E,) + obs.shape[:-1] + (1,): the flow integrates its
        ODE from z0; the other return models map z0 to their quantile (return_models.py)."""
        return self.return_model.transport(return_params, obs, actions, z0, num_steps, integrator)

    def refresh_cutoff_returns(self, state, table, key):
        """Return samples at every cut-off state: a' ~ pi_ref(s_cut), z' from each target flow member;
        {"cutoff_returns": (E, C, S)} in unit scale, for `cutoff_samples` S.

        Why it is right. At the refresh, each sample is distributed exactly as the every-row target's z'
        (same a' ~ pi_ref, same target flow, same integrator); a row of a batch picks one of its cut-off's
        S samples at random, so its target y = G + w z' keeps that marginal distribution. What differs:
        (1) staleness: the samples come from the target flow as it was at the last refresh, at most
        R = `cutoff_refresh_every` updates ago (the Polyak target itself averages over ~1/rate = 200
        updates); (2) within those R updates the rows of one cut-off share S draws, so successive targets
        are correlated (not biased). The error bound: y differs from the every-row target only through
        w z', with w = gamma^K m the row's bootstrap weight and z' in [-1, 1], so for every row
        W1(y_table, y_every_row) <= w * W1(Z_then(s_cut), Z_now(s_cut)) <= 2 w. Rows far from a cut
        (w = 0.99^600 ~ 0.002) are exact to that amount whatever the table holds; rows near one carry the
        staleness of the table, R updates of the target flow at most. Cost per R updates: C * S action and
        return samples instead of R * batch_size (cube-single: ~1000 * 4 against 250 * 256)."""
        config = self.config
        action_key, return_key = jax.random.split(key)
        cut_obs = table["cutoff_observations"]
        obs = jnp.broadcast_to(cut_obs[:, None, :], (cut_obs.shape[0], config.cutoff_samples, cut_obs.shape[-1]))
        # With Monte-Carlo targets every cut-off is the last state of its trajectory, where the dataset has
        # no next action: a' ~ pi_ref whatever `next_action` says.
        actions = self.sample_actions(state["actor"], obs, action_key, config.target_action_flow_steps)
        z = self.sample_returns(state["target_return_flow"], obs, actions, return_key,
                                config.target_return_flow_steps, config.target_integrator)
        return {"cutoff_returns": jax.lax.stop_gradient(z[..., 0])}

    def table_refresh(self, table):
        """(refresh function, its period in updates) for tables with cut-off states, else (None, 0)."""
        if "cutoff_observations" not in table:
            return None, 0
        return self.refresh_cutoff_returns, self.config.cutoff_refresh_every

    def return_targets(self, state, batch, key):
        """y = sum_k gamma^k r + gamma^K m z'(s_boot, a'), per ensemble member, in unit scale."""
        config, scale = self.config, self.return_scale
        if "bootstrap_returns" in batch:  # z' read from the cut-off table (Monte-Carlo targets)
            g_next = scale.from_unit(batch["bootstrap_returns"][..., None])  # (E, B, 1)
            y = batch["partial_returns"][:, None] + batch["bootstrap_discounts"][:, None] * g_next
            return jax.lax.stop_gradient(jnp.clip(scale.to_unit(y), -1.0, 1.0))
        action_key, return_key = jax.random.split(key)
        boot_obs = batch["bootstrap_observations"]
        if config.next_action == "greedy":
            next_actions = self.greedy_next_actions(state, boot_obs, action_key)
        else:
            next_actions = self.sample_actions(state["actor"], boot_obs, action_key, config.target_action_flow_steps)
        if config.next_action == "dataset":
            use_dataset = batch["has_bootstrap_dataset_action"][:, None] > 0
            next_actions = jnp.where(use_dataset, batch["bootstrap_dataset_actions"], next_actions)
        z_next = self.sample_returns(state["target_return_flow"], boot_obs, next_actions, return_key,
                                     config.target_return_flow_steps, config.target_integrator)
        g_next = scale.from_unit(z_next)  # (E, B, 1) in return units
        y = batch["partial_returns"][:, None] + batch["bootstrap_discounts"][:, None] * g_next
        return jax.lax.stop_gradient(jnp.clip(scale.to_unit(y), -1.0, 1.0))

    def greedy_next_actions(self, state, obs, key):
        """a'* = argmax_n mean_e median Z_e(s', a'_n) over a'_1..a'_N ~ pi_ref(s'), by the online return model
        (next_action 'greedy'). The median is the return model's transport of base noise 0 (a 1-D flow's
        ODE map is monotone; for 'mean' it is the value): one integration per candidate, not M."""
        config = self.config
        obs_n, candidates = self.behaviour.sample_candidates(state["actor"], obs, key, config.target_candidates,
                                                             config.target_action_flow_steps)
        z0 = jnp.zeros((config.num_return_flows,) + obs_n.shape[:-1] + (1,))
        scores = self.transport_returns(state["return_flow"], obs_n, candidates, z0, config.target_return_flow_steps,
                                        config.target_integrator)[..., 0].mean(axis=0)  # (B, N)
        return best_of_n(candidates, scores)

    def return_loss(self, return_params, targets, batch, key):
        """Each member fitted to its own sampled TD targets (E, B, 1), summed over members: flow matching
        for the flow (method.md, Part 2), MSE for 'mean', HL-Gauss cross-entropy for 'hl_gauss'."""
        return self.return_model.loss(return_params, targets, batch["observations"], batch["actions"], key)

    # ----------------------------------------------------------------- training

    def update(self, state, batch, key):
        """One gradient step on both flows and a Polyak step of the target return flow."""
        actor_key, target_key, return_key = jax.random.split(key, 3)
        actor_loss, actor_grads = jax.value_and_grad(self.actor_loss)(state["actor"], batch, actor_key)
        targets = self.return_targets(state, batch, target_key)
        return_loss, return_grads = jax.value_and_grad(self.return_loss)(state["return_flow"], targets, batch,
                                                                         return_key)
        actor, actor_opt = adam_step(self.optimizer, state["actor"], actor_grads, state["actor_opt"])
        return_flow, return_opt = adam_step(self.optimizer, state["return_flow"], return_grads, state["return_opt"])
        new_state = {
            "actor": actor,
            "return_flow": return_flow,
            "target_return_flow": polyak(return_flow, state["target_return_flow"], self.config.target_update_rate),
            "actor_opt": actor_opt,
            "return_opt": return_opt,
            "step": state["step"] + 1,
        }
        metrics = {"actor_loss": actor_loss, "return_loss": return_loss / self.config.num_return_flows,
                   "target_return_mean": scale_mean(self.return_scale, targets)}
        return new_state, metrics

    def validation_losses(self, state, table, key, batch_size: int):
        sample_key, actor_key, target_key, return_key = jax.random.split(key, 4)
        if "cutoff_observations" in table:
            table = {**table, **self.refresh_cutoff_returns(state, table, jax.random.fold_in(target_key, 1))}
        batch = self.sample(table, sample_key, batch_size)
        targets = self.return_targets(state, batch, target_key)
        return {"val_actor_loss": self.actor_loss(state["actor"], batch, actor_key),
                "val_return_loss": self.return_loss(state["return_flow"], targets, batch, return_key)
                / self.config.num_return_flows}

    # ----------------------------------------------------------------- Parts 3-4: acting

    def q_star(self, state, obs, actions, key, settings: InferenceSettings):
        """Q*(s, a) from M return samples per ensemble member, combined across members (unit scale).

        obs, actions: (..., dim). Returns (...,). Return models with an exact tilt ('mean', 'hl_gauss')
        compute it without samples for tau_Q > 0 unless settings.tilt is 'sampled'; tau_Q = 0 (the largest
        of M samples) always samples.
        """
        params = state[RETURN_WEIGHTS[settings.return_weights]]
        if self.return_model.exact_tilt and settings.tau_q > 0 and settings.tilt == "exact":
            q = self.return_model.tilted_value(params, obs, actions, settings.tau_q)  # (E, ...)
            return q.mean(axis=0) if settings.ensemble == "mean" else q.min(axis=0)
        samples_obs = jnp.broadcast_to(obs[..., None, :], obs.shape[:-1] + (settings.num_return_samples,
                                                                         obs.shape[-1]))
        samples_act = jnp.broadcast_to(actions[..., None, :], actions.shape[:-1] + (settings.num_return_samples,
                                                                                 actions.shape[-1]))
        z0 = return_base_noise(key, (self.config.num_return_flows,) + samples_obs.shape[:-1] + (1,),
                               settings.return_noise)
        z = self.transport_returns(params, samples_obs, samples_act, z0, settings.return_flow_steps,
                                   settings.integrator)[..., 0]  # (E, ..., M)
        q = soft_value(z, settings.tau_q)  # (E, ...)
        return q.mean(axis=0) if settings.ensemble == "mean" else q.min(axis=0)

    def act(self, state, obs, key, settings: InferenceSettings):
        """Actions for a batch of observations (B, obs_dim) -> (B, h * action_dim)."""
        candidate_key, value_key, select_key = jax.random.split(key, 3)
        n = settings.num_candidates
        obs_n, candidates = self.behaviour.sample_candidates(state["actor"], obs, candidate_key, n,
                                                             settings.action_flow_steps)
        if n == 1:  # plain pi_ref: no scoring needed
            return candidates[:, 0]
        q = self.q_star(state, obs_n, candidates, value_key, settings)  # (B, N)
        keys = jax.random.split(select_key, obs.shape[0])
        index = select_rows(keys, q, settings.tau_r, settings.selection)
        return jnp.take_along_axis(candidates, index[:, None, None], axis=1)[:, 0]


def return_base_noise(key, shape, mode: str):
    """Base noise for Q*'s return samples, shape (E, ..., M, 1): axis 0 the ensemble member, axis -2 the
    M samples, the axes between them the observations and candidates being scored.

    'independent' draws every entry (the spec). 'common' and 'stratified' draw per member and sample only
    and broadcast over the axes between, so all candidates (and observations) share the M draws;
    'stratified' puts draw j at the normal quantile of (j + u) / M with one u ~ U[0, 1) per member.
    """
    if mode == "independent":
        return jax.random.normal(key, shape)
    members, num = shape[0], shape[-2]
    shared = (members,) + (1,) * (len(shape) - 3) + (num, 1)
    if mode == "common":
        noise = jax.random.normal(key, shared)
    elif mode == "stratified":
        shift = jax.random.uniform(key, (members,) + (1,) * (len(shape) - 2) + (1,))
        levels = (jnp.arange(num, dtype=jnp.float32).reshape((1,) * (len(shape) - 2) + (num, 1)) + shift) / num
        noise = jax.scipy.special.ndtri(jnp.clip(levels, 1e-6, 1 - 1e-6))  # clip: u = 0 would give -inf
    else:
        raise ValueError(f"unknown return_noise '{mode}'; choose from {RETURN_NOISE}")
    return jnp.broadcast_to(noise, shape)


def scale_mean(scale: ReturnScale, unit_values):
    return jnp.mean(scale.from_unit(unit_values))
