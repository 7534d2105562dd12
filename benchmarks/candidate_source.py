"""Is EVOR limited by its candidates or by its value? EVOR chooses among N samples of pi_ref by Q*. Here
some of the N candidates come from another run's policy instead (FQL's one-step policy, or any run
whose agent acts with one action per step), and EVOR's Q* and selection choose among all of them as
acting does. Printed per setting: success, episode length, and how often the chosen action was one of
the other policy's candidates.

Reading it (docs/results.md, scene task 1, where FQL scores 98 and EVOR 58):
- success rises towards the other policy's and its candidates are chosen: the candidate set was the
  limit, and EVOR's value can tell the better actions apart when it is offered them;
- its candidates are offered but seldom chosen and success stays at EVOR's level: the value does not
  see what makes them better (Q* is pi_ref's value after the action, not the other policy's).

    python benchmarks/candidate_source.py EVOR_RUN OTHER_RUN --from-other 0,16,32 [--episodes 50] [--judge other]

`--judge other` scores the same candidates by the other run's critic instead of EVOR's Q* (its
ensemble mean Q(s, a), for agents with one: FQL, IFQL), mapped to EVOR's unit return scale so that
tau_R means the same margin in return units, and chosen by the same selection rule (`--tau-r` to soften it).
That critic is the value of the other, improved policy: does a hybrid need that policy's value to
recognise its actions?

The episodes are the EVOR run's own final-evaluation block (as `evor sweep` uses), so --from-other 0
repeats EVOR's own evaluation at its default settings. The pick share counts every row the policy is
asked for, including the idle rows of a pool whose last episodes are finishing (a few percent).
"""

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from evor.errors import ConfigError
from evor.evaluate import evaluate_policy, evaluation_seed
from evor.selection import select_rows
from evor.train import default_eval_workers, load_run


def mixed_candidate_policy(evor_run, other_run, settings, from_other: int, picks: list, judge: str = "evor"):
    """(obs (P, d), keys (P, 2)) -> actions: N - k candidates from pi_ref and k from the other run's
    policy, scored by EVOR's Q* (judge "evor") or by the other run's critic (judge "other") and chosen by
    EVOR's selection rule. Appends to `picks` one boolean per row: whether the chosen candidate came
    from the other policy."""
    agent, other = evor_run.agent, other_run.agent
    n = settings.num_candidates
    other_settings = other_run.settings()

    def act_row(states, obs, key):
        evor_state, other_state = states
        # EVOR's own key split (EVOR.act), so that with from_other = 0 every action is EVOR's own
        candidate_key, value_key, select_key = jax.random.split(key, 3)
        obs_n = jnp.broadcast_to(obs[None, None, :], (1, n, obs.shape[-1]))
        parts = []
        if from_other < n:
            parts.append(agent.sample_actions(evor_state["actor"], obs_n[:, : n - from_other], candidate_key,
                                              settings.action_flow_steps))
        if from_other:  # the other policy acts on k copies of the observation, each with its own key
            other_keys = jax.random.split(jax.random.fold_in(key, 1), from_other)
            parts.append(jax.vmap(lambda k: other.act(other_state, obs[None], k, other_settings)[0])(other_keys)[None])
        candidates = jnp.concatenate(parts, axis=1)
        if judge == "evor":
            q = agent.q_star(evor_state, obs_n, candidates, value_key, settings)  # (1, N)
        else:  # the other policy's value: its critic ensemble's mean, as its own policy extraction reads it
            q = agent.return_scale.to_unit(other.critic(other_state["critic"], obs_n, candidates).mean(axis=0))
        index = select_rows(jax.random.split(select_key, 1), q, settings.tau_r, settings.selection)
        return candidates[0, index[0]], index[0] >= n - from_other

    act = jax.jit(lambda states, obs, keys: jax.lax.map(lambda row: act_row(states, *row), (obs, keys)))

    def policy(obs, keys):
        actions, from_other_policy = act((evor_run.state, other_run.state), jnp.asarray(obs, jnp.float32), keys)
        picks.extend(np.asarray(from_other_policy).tolist())
        return actions

    return policy


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("evor_run")
    parser.add_argument("other_run")
    parser.add_argument("--from-other", default="0,16,32", help="how many of the N candidates the other policy gives")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--judge", choices=("evor", "other"), default="evor",
                        help="whose value scores the candidates: EVOR's Q* or the other run's critic")
    parser.add_argument("--tau-r", type=float, default=None, help="selection temperature (default: the EVOR run's)")
    parser.add_argument("--out", help="JSON file for the results (default: print only)")
    args = parser.parse_args()
    evor_run, other_run = load_run(args.evor_run), load_run(args.other_run)
    if evor_run.config.task != other_run.config.task:
        sys.exit(f"The runs are of different tasks: {evor_run.config.task} and {other_run.config.task}.")
    if evor_run.config.agent_name != "evor" or getattr(other_run.agent, "action_horizon", 1) != 1 \
            or getattr(evor_run.agent, "action_horizon", 1) != 1:
        sys.exit("The first run must be an EVOR run and both must act one action per step (no chunks).")
    if args.judge == "other" and not hasattr(other_run.agent, "critic"):
        sys.exit(f"--judge other needs a run whose agent has a critic (FQL, IFQL), not {other_run.config.agent_name}.")
    try:
        settings = evor_run.settings(tau_r=args.tau_r)  # None keeps the run's own; validated there
    except ConfigError as error:
        sys.exit(f"--tau-r: {error}")
    counts = [int(k) for k in args.from_other.split(",")]
    if any(not 0 <= k <= settings.num_candidates for k in counts):
        sys.exit(f"--from-other values must be in [0, N = {settings.num_candidates}].")
    seed = evaluation_seed(evor_run.config.seed)
    print(f"{evor_run.config.task}: EVOR {args.evor_run} (step {evor_run.step}) with candidates from "
          f"{other_run.config.agent_name} {args.other_run} (step {other_run.step}); N = {settings.num_candidates}, "
          f"tau_R = {settings.tau_r}, {args.episodes} episodes from reset seed {seed}; candidates judged by "
          f"{'EVOR Q*' if args.judge == 'evor' else other_run.config.agent_name + ' critic'}")
    results = []
    for k in counts:
        picks: list = []
        policy = mixed_candidate_policy(evor_run, other_run, settings, k, picks, args.judge)
        result = evaluate_policy(evor_run.env_factory(), policy, args.episodes, seed=seed,
                                 workers=default_eval_workers(10), show_progress=False)
        result.update(from_other=k, judge=args.judge, other_pick_share=float(np.mean(picks)) if picks else 0.0,
                      settings=dataclasses.asdict(settings), step=evor_run.step, other_step=other_run.step)
        results.append(result)
        print(f"from other {k:3d} / {settings.num_candidates}: success {100 * result['success_rate']:5.1f}%  "
              f"length {result['episode_length_mean']:6.1f}  other's candidate chosen {100 * result['other_pick_share']:5.1f}%"
              f"  policy {result['policy_ms_per_env_step']:.1f} ms/step", flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps({"evor_run": args.evor_run, "other_run": args.other_run,
                                                  "results": results}, indent=1))


if __name__ == "__main__":
    main()
