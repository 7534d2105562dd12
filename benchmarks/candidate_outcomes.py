"""Does Q* rank pi_ref's candidates by what they go on to achieve?

Written for scene task 2 (docs/results.md, "Why more candidates do worse on scene task 2"), where
EVOR5 does worse with 32 candidates than with 4 although `evor diagnose` finds its return model as
calibrated and as readable as on scene task 1, where 32 do better. `evor diagnose` scores the acting
readout against more readouts of the same model; it cannot say whether the candidate the model puts
first is one that does well. This script measures that.

It plays one episode of the run's final-evaluation block at the run's inference settings, with the keys
`evor eval` uses (so it is that evaluation's episode), and at `--states` of its decision points spread
over the episode draws the N candidates acting draws there and reads their Q* as acting reads it (one
readout, and the mean of `--readouts` as a steadier reference). Each candidate is then executed from
that state and followed by pi_ref alone (N = 1; `--continue-with N` continues with the policy acting at
N candidates instead) up to `--horizon` steps, `--rollouts` times with different keys. The state is
restored by replaying the episode's actions from its reproducible reset, and each replay is checked bit
for bit against the recorded observation. The candidate's achieved return is the mean over its rollouts
of the discounted return from its first step, the quantity Z models, cut at the horizon. Printed per
state and then averaged over states:
- the Spearman correlation of the reference Q* with the achieved returns, beside a ceiling set by the
  rollouts' noise (the Spearman of one half of the rollouts' means with the other half's);
- the achieved return of the candidate the acting readout puts first, against the best and the median
  candidate (regret, and gain over the median), and against acting with `--fewer` (4) candidates;
- the spread of achieved returns over candidates against the rollouts' own noise (do the candidates
  differ at all?);
- how many candidates, and whether the first choice, finish the task in some rollout.

    python benchmarks/candidate_outcomes.py RUN [--step S] [--episode 0] [--states 8] [--until STEP] [--rollouts 2]
                                           [--horizon 300] [--workers 2] [--envs 16]

Needs an EVOR-like run (its agent has `q_star` and a behaviour flow). The cost is the physics:
candidates x rollouts x (replayed steps + horizon) environment steps per state; on scene about 6 ms
per step on one core (2 states with 32 x 2 rollouts of 40 steps, one of them 335 steps in: 179 s).
Memory: a scene environment holds about 170 MB, so at most `--envs` (16) exist at once and the
candidates are rolled out in turns, each turn replaying the episode to the state.
"""

from __future__ import annotations

import argparse
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from evor.diagnostics import acting_readouts, draw_candidates, spearman_rows
from evor.errors import EvorError
from evor.evaluate import EPISODE_BLOCK, EnvPool, episode_keys, evaluation_seed


def play_episode(pool, policy, reset_seed: int, base_key, episode: int, horizon: int):
    """Play one episode in slot 0 of `pool` as `evaluate_policy` plays episode `episode` of its block:
    (actions (T, action_dim), observations (T + 1, d), decision steps, success)."""
    observations = [np.asarray(pool.reset({0: reset_seed})[0], np.float32)]
    actions, decisions, done, success, calls = [], [], False, 0.0, 0
    while not done:
        keys = episode_keys(base_key, np.array([episode], np.int32), np.array([calls], np.int32))
        chunk = np.asarray(policy(observations[-1][None], keys)).reshape(horizon, -1)
        calls += 1
        decisions.append(len(actions))
        for action in chunk:
            ob, _, done, success, _ = pool.step({0: action})[0]
            actions.append(np.asarray(action))
            observations.append(np.asarray(ob, np.float32))
            if done:
                break
    return np.stack(actions), np.stack(observations), decisions, success


def restore(pool, slots: int, reset_seed: int, actions: np.ndarray, expected: np.ndarray):
    """Put the first `slots` slots of `pool` at the state after `actions`, replayed from the reproducible
    reset, and check each one's observation against the recorded one bit for bit."""
    slots = range(slots)
    observations = pool.reset({s: reset_seed for s in slots})
    for action in actions:
        observations = {s: out[0] for s, out in pool.step({s: action for s in slots}).items()}
    for s in slots:
        if not np.array_equal(np.asarray(observations[s], np.float32), expected):
            raise EvorError(f"replaying {len(actions)} actions did not reach the recorded state in slot {s}: "
                            "the environment is not reproducible here, so candidate outcomes would be wrong.")


def rollouts(pool, continuation, candidates: np.ndarray, per: int, start_obs: np.ndarray, key,
             action_horizon: int, max_steps: int, discount: float):
    """Slot c * per + r (r < per) executes candidate c's chunk, then the `continuation` policy's chunks
    (pi_ref alone unless `--continue-with` says otherwise), for at most `max_steps` steps: (discounted
    return (N, per), finished (N, per)). The slots must be at the state the candidates were drawn at
    (`restore`)."""
    num = len(candidates)
    size = num * per
    queues = {s: list(candidates[s // per].reshape(action_horizon, -1)) for s in range(size)}
    obs = {s: start_obs for s in range(size)}
    returns, finished = np.zeros(size), np.zeros(size, bool)
    live, calls = set(range(size)), 0
    for t in range(max_steps):
        if not live:
            break
        empty = sorted(s for s in live if not queues[s])
        if empty:
            keys = episode_keys(key, np.array(empty, np.int32), np.full(len(empty), calls, np.int32))
            chunks = np.asarray(continuation(np.stack([obs[s] for s in empty]), keys))
            calls += 1
            for s, chunk in zip(empty, chunks):
                queues[s] = list(chunk.reshape(action_horizon, -1))
        for s, (ob, reward, done, success, _) in pool.step({s: queues[s].pop(0) for s in live}).items():
            returns[s] += discount ** t * reward
            finished[s] |= success > 0
            obs[s] = np.asarray(ob, np.float32)
            if done:
                live.discard(s)
    return returns.reshape(num, per), finished.reshape(num, per)


def choose_states(decisions: list[int], states: int, until: int | None = None) -> list[int]:
    """Up to `states` decision points spread evenly over those before step `until` (all if None)."""
    usable = [t for t in decisions if until is None or t < until]
    return sorted({usable[i] for i in np.linspace(0, len(usable) - 1, states).round().astype(int)})


def outcome_scores(reference: np.ndarray, first_readout: np.ndarray, achieved: np.ndarray,
                   finished: np.ndarray, fewer: int = 4) -> dict:
    """How one state's Q* (reference readout (N,), acting readout (N,)) ranks what its candidates
    achieved ((N, R) rollouts, `finished` (N, R): whether each rollout finished the task). The first
    choice is the acting readout's argmax, as acting makes it.

    `fewer_minus_all`: what acting with `fewer` candidates would achieve here against acting with all N.
    The N candidates are independent draws from pi_ref with independent readouts, so each of the N //
    fewer disjoint groups is a draw of acting with `fewer`; its first choice's achieved return, averaged
    over the groups, minus the first choice's among all N."""
    mean = achieved.mean(axis=1)
    pick = int(np.argmax(first_readout))
    groups = np.arange(len(mean) // fewer * fewer).reshape(-1, fewer)
    fewer_picks = groups[np.arange(len(groups)), np.argmax(first_readout[groups], axis=1)]
    fewer_minus_all = float(mean[fewer_picks].mean() - mean[pick]) if len(groups) else float("nan")
    noise = float(np.sqrt(np.mean(achieved.var(axis=1, ddof=1)))) if achieved.shape[1] > 1 else float("nan")
    # A ceiling for the Spearman above: how well half the rollouts rank the candidates as the other half
    # does. Rollout noise caps what any value model can reach (and this uses half as many rollouts, so
    # the ceiling at all of them is somewhat higher).
    split_half = float("nan")
    if achieved.shape[1] > 1:
        halves = (achieved[:, 0::2].mean(axis=1), achieved[:, 1::2].mean(axis=1))
        split_half = float(spearman_rows(halves[0][None], halves[1][None])[0])
    return {"spearman": float(spearman_rows(reference[None], mean[None])[0]), "split_half": split_half,
            "regret": float(mean.max() - mean[pick]), "gain_over_median": float(mean[pick] - np.median(mean)),
            "spread": float(mean.std()), "rollout_noise": noise, "pick": pick, "fewer_minus_all": fewer_minus_all,
            "finishing": int(finished.any(axis=1).sum()), "pick_finishes": bool(finished[pick].any())}


def main(argv=None) -> int:
    from evor.train import load_run

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run")
    parser.add_argument("--step", type=int, default=None, help="a kept checkpoint (default: the latest)")
    parser.add_argument("--episode", type=int, default=0, help="which episode of the final-evaluation block")
    parser.add_argument("--states", type=int, default=8)
    parser.add_argument("--rollouts", type=int, default=2)
    parser.add_argument("--readouts", type=int, default=8)
    parser.add_argument("--horizon", type=int, default=300, help="steps per rollout, the candidate's included")
    parser.add_argument("--until", type=int, default=None,
                        help="only decision points before this step (default: the whole episode); the time "
                             "limit minus --horizon lets every rollout run its full horizon")
    parser.add_argument("--fewer", type=int, default=4,
                        help="also score acting with this many candidates (disjoint groups of the N drawn)")
    parser.add_argument("--continue-with", type=int, default=1,
                        help="candidates per decision of the policy that continues after each candidate's chunk "
                             "(1: pi_ref alone; the run's N: the policy as it acts)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="processes stepping the rollouts' environments")
    parser.add_argument("--envs", type=int, default=16,
                        help="environments at once (a scene environment holds about 170 MB); more candidates "
                             "are rolled out in turns, each replaying the episode to the state")
    args = parser.parse_args(argv)
    try:
        if min(args.states, args.rollouts, args.readouts, args.horizon, args.envs) < 1:
            raise EvorError("--states, --rollouts, --readouts, --horizon and --envs must be at least 1.")
        if args.fewer < 1:
            raise EvorError(f"--fewer must be at least 1; got {args.fewer}.")
        if args.continue_with < 1:
            raise EvorError(f"--continue-with must be at least 1 (1 is pi_ref alone); got {args.continue_with}.")
        if args.until is not None and args.until < 1:
            raise EvorError(f"--until must be at least 1 (step 0 is the first decision point); got {args.until}.")
        if not 0 <= args.episode < EPISODE_BLOCK:
            raise EvorError(f"--episode must be from 0 to {EPISODE_BLOCK - 1} (an evaluation block holds "
                            f"{EPISODE_BLOCK} episodes); got {args.episode}.")
        run = load_run(args.run, step=args.step)
        if not hasattr(run.agent, "q_star"):
            raise EvorError(f"{args.run} is a {run.config.agent_name} run; this needs an EVOR-like run (Q* of candidates).")
        settings = run.settings()
        h = getattr(run.agent, "action_horizon", 1)
        discount = run.agent.config.discount
        block = evaluation_seed(run.config.seed)
        reset_seed, base_key = block + args.episode, jax.random.PRNGKey(block)
        started = time.time()
        one = EnvPool(run.env_factory(), 1)
        try:
            actions, observations, decisions, success = play_episode(one, run.policy(settings), reset_seed, base_key,
                                                                     args.episode, h)
        finally:
            one.close()
        print(f"{args.run} step {run.step}: episode {args.episode} (reset seed {reset_seed}) "
              f"{'solved' if success else 'failed'} in {len(actions)} steps; {len(decisions)} decisions; "
              f"N = {settings.num_candidates}, {args.rollouts} rollouts of up to {args.horizon} steps each, "
              f"continued by {'pi_ref alone' if args.continue_with == 1 else f'the policy at N = {args.continue_with}'}")
        chosen = choose_states(decisions, args.states, args.until)
        turn = max(1, min(settings.num_candidates, args.envs // args.rollouts))  # candidates per turn
        pool = EnvPool(run.env_factory(), turn * args.rollouts, args.workers)
        continuation = run.policy(run.settings(num_candidates=args.continue_with))
        key = jax.random.PRNGKey(args.seed)
        rows = []
        try:
            for t in chosen:
                key, draw_key, read_key, roll_key = jax.random.split(key, 4)
                obs = jnp.asarray(observations[t][None])
                obs_n, candidates = draw_candidates(run, obs, draw_key)
                readouts = np.asarray(acting_readouts(run, obs_n, candidates, read_key, 1 + args.readouts))[:, 0]
                candidates = np.asarray(candidates[0])
                parts = []
                for first in range(0, len(candidates), turn):
                    these = candidates[first:first + turn]
                    restore(pool, len(these) * args.rollouts, reset_seed, actions[:t], observations[t])
                    parts.append(rollouts(pool, continuation, these, args.rollouts, observations[t],
                                          jax.random.fold_in(roll_key, first), h, args.horizon, discount))
                achieved = np.concatenate([p[0] for p in parts])
                finished = np.concatenate([p[1] for p in parts])
                scores = outcome_scores(readouts[1:].mean(axis=0), readouts[0], achieved, finished, args.fewer)
                scores["step"] = t
                rows.append(scores)
                print(f"  step {t}: Spearman(Q*, achieved) {scores['spearman']:+.2f} (split-half ceiling "
                      f"{scores['split_half']:+.2f}); first choice regret "
                      f"{scores['regret']:.1f}, {scores['gain_over_median']:+.1f} over the median, with {args.fewer} candidates "
                      f"{scores['fewer_minus_all']:+.1f}; achieved spread "
                      f"{scores['spread']:.1f} (rollout noise {scores['rollout_noise']:.1f}); {scores['finishing']} of "
                      f"{len(achieved)} candidates finish{' (the first choice among them)' if scores['pick_finishes'] else ''}",
                      flush=True)
        finally:
            pool.close()
        mean = {k: float(np.mean([r[k] for r in rows])) for k in ("spearman", "split_half", "regret", "gain_over_median",
                                                                  "fewer_minus_all", "spread", "rollout_noise",
                                                                  "finishing")}
        print(f"mean over {len(rows)} states: Spearman {mean['spearman']:+.2f} (split-half ceiling "
              f"{mean['split_half']:+.2f}), regret {mean['regret']:.1f}, "
              f"gain over the median {mean['gain_over_median']:+.1f}, with {args.fewer} candidates "
              f"{mean['fewer_minus_all']:+.1f}, spread {mean['spread']:.1f} (rollout noise "
              f"{mean['rollout_noise']:.1f}), {mean['finishing']:.1f} candidates finish, the first choice at "
              f"{sum(r['pick_finishes'] for r in rows)} of {len(rows)} states ({time.time() - started:.0f} s)")
    except EvorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
