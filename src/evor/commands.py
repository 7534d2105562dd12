"""`evor train`, `evor eval` and `evor quickstart`: thin wrappers over evor.train / evor.api."""

from __future__ import annotations

import json
import time
from pathlib import Path

from evor.errors import ConfigError, EvorError, ResumeConflict

# Inference settings exposed as grid flags on `evor eval`: flag -> (field, parser).
_GRID_FLAGS = {
    "num_candidates": "int", "num_return_samples": "int", "action_flow_steps": "int", "return_flow_steps": "int",
    "tau_q": "float", "tau_r": "float",
}


def add_commands(sub, int_list, float_list):
    train = sub.add_parser("train", help="train an agent on an OGBench task")
    train.add_argument("--task", default=None, help="e.g. cube-single-play-singletask-task2-v0")
    train.add_argument("--agent", default=None, help="evor (default) | qc | fql | ifql")
    train.add_argument("--horizon", type=int, default=None,
                       help="action-chunk length for --agent qc (QC-1: 1, QC-5: 5) or evor (default 5; 1: the "
                            "paper's single-step EVOR)")
    train.add_argument("--preset", default=None, help="cpu (default) | paper | tiny (data files in evor/presets)")
    train.add_argument("--config", default=None, help="JSON file of config fields, applied over the preset")
    train.add_argument("--seed", type=int, default=None)
    train.add_argument("--seeds", type=int_list, default=None,
                       help="several seeds trained together in one process (vmapped), e.g. 0,1,2,3; "
                            "each gets its own run directory (--run-dir becomes their parent)")
    # Values are checked where they are defined (evor.train.batch_mode, the agent's Settings.validate):
    # the parser does not repeat those lists, and it stays free of JAX imports.
    train.add_argument("--seed-mode", default="auto",
                       help="with --seeds: batch seeds (vmap, best on GPU) or run them in turn inside one "
                            "compiled call (map, best on CPU); auto picks by device")
    train.add_argument("--steps", type=int, default=None, help="total gradient steps")
    train.add_argument("--data-dir", default=None)
    train.add_argument("--run-dir", default=None, help="default runs/TASK/AGENT/seedN")
    train.add_argument("--resume", action="store_true",
                       help="continue the run in --run-dir from its last checkpoint, with its own config.json; "
                            "flags given with it must agree with that config")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config field, e.g. --set agent.target_horizon=10 --set eval_episodes=50")
    train.add_argument("--quiet", action="store_true")
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser("eval", help="evaluate a run's checkpoint over a grid of inference settings")
    _add_grid_arguments(ev, int_list, float_list, "eval.json")
    ev.set_defaults(func=cmd_eval)

    sw = sub.add_parser("sweep", help="inference-compute sweep of one checkpoint (N from 1 to 256 by default); "
                                      "re-running skips settings already done")
    _add_grid_arguments(sw, int_list, float_list, "sweep.json")
    sw.set_defaults(func=cmd_sweep)

    dg = sub.add_parser("diagnose", help="calibration of an EVOR run's return distribution against the "
                                         "validation data's Monte-Carlo returns; Q* at initial states")
    dg.add_argument("run_dir")
    dg.add_argument("--transitions", type=int, default=2000, help="validation transitions scored")
    dg.add_argument("--samples", type=int, default=64, help="return samples per transition and ensemble member")
    dg.add_argument("--max-tail", type=float, default=0.01,
                    help="use transitions whose unknown return tail weighs at most this (gamma^K at a cut-off)")
    dg.add_argument("--episodes", type=int, default=20, help="episodes for Q* at initial states (0: skip)")
    dg.add_argument("--ranking-states", type=int, default=128,
                    help="validation states at which acting's ranking of pi_ref's candidates is scored (0: skip)")
    dg.add_argument("--seed", type=int, default=0)
    dg.add_argument("--step", type=int, default=None)
    dg.add_argument("--out", default=None, help="default RUN_DIR/diagnostics.json")
    dg.set_defaults(func=cmd_diagnose)

    rp = sub.add_parser("report", help="aggregate runs over seeds and tasks: markdown, PNG figures and one "
                                       "self-contained HTML page")
    rp.add_argument("paths", nargs="+", help="run directories, or directories to search for runs")
    rp.add_argument("--out", default="report", help="output directory (default ./report)")
    rp.set_defaults(func=cmd_report)

    ar = sub.add_parser("archive", help="copy runs' records (config, versions, metrics, evaluations; no "
                                        "checkpoints) to a directory that `evor report` reads, small enough to commit")
    ar.add_argument("paths", nargs="+", help="run directories, or directories to search for runs")
    ar.add_argument("--out", required=True, help="archive directory; runs keep their paths relative to each "
                                                 "argument, and records already there are updated")
    ar.set_defaults(func=cmd_archive)

    df = sub.add_parser("diff", help="does a re-run reproduce a recorded run? Compares config, every logged "
                                     "value and every shared evaluation episode by episode; exit 1 if any differ")
    df.add_argument("run_dir", help="the re-run")
    df.add_argument("record", help="the run (or its archived record, e.g. under docs/run-records) it should match")
    df.add_argument("--limit", type=int, default=20, help="differences printed per kind (default 20)")
    df.set_defaults(func=cmd_diff)

    bn = sub.add_parser("bench", help="run a study (suite of tasks x agents x seeds): skips finished cells, "
                                      "resumes partial ones, then writes the report")
    bn.add_argument("suite", help="a suite name (quick, manipulation) or a suite .json file")
    bn.add_argument("--agents", default=None, help="comma-separated subset, e.g. evor,qc5")
    bn.add_argument("--tasks", default=None, help="comma-separated subset of the suite's tasks")
    bn.add_argument("--seeds", type=int_list, default=None)
    bn.add_argument("--preset", default=None, help="override the suite's preset")
    bn.add_argument("--backend", default="local", choices=["local", "ray"])
    bn.add_argument("--jobs", type=int, default=None, help="local backend: cells at once (default: one per core)")
    bn.add_argument("--address", default=None, help="ray backend: cluster address (default: a local Ray instance)")
    bn.add_argument("--gpus-per-cell", type=float, default=0, help="ray backend: GPU request per cell")
    bn.add_argument("--out", default=None, help="default runs/bench/SUITE")
    bn.set_defaults(func=cmd_bench)

    ck = sub.add_parser("checkpoint", help="checkpoint maintenance").add_subparsers(dest="checkpoint_command",
                                                                                  required=True)
    cv = ck.add_parser("convert", help="one-time conversion of a run's pickle checkpoints (older evor) to the "
                                       "current format; unpickling runs code, so only for files you trust")
    cv.add_argument("run_dir")
    cv.add_argument("--trust-pickle", action="store_true",
                    help="required: you made these files yourself or trust whoever did")
    cv.set_defaults(func=cmd_checkpoint_convert)

    qs = sub.add_parser("quickstart", help="generate a small dataset, train EVOR, show success vs candidates N")
    qs.add_argument("--out", default="runs/quickstart")
    qs.add_argument("--episodes", type=int, default=None, help="training episodes to generate")
    qs.add_argument("--steps", type=int, default=None)
    qs.add_argument("--eval-episodes", type=int, default=None)
    qs.add_argument("--seed", type=int, default=0, help="training seed (the dataset is always generated with seed 0)")
    qs.set_defaults(func=cmd_quickstart)


def _add_grid_arguments(parser, int_list, float_list, default_out: str):
    parser.add_argument("run_dir")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--seed", type=int, default=None,
                        help="first reset seed of the episodes (default: the run's own final-evaluation block, "
                             "20000 + 1000 x its training seed, so runs of different seeds never share episodes "
                             "and the default settings reproduce `evor bench`'s final score)")
    parser.add_argument("--step", type=_steps_argument, default=None,
                        help="checkpoint step, several comma-separated (e.g. 140000,145000,150000), or 'all' "
                             "kept checkpoints, each evaluated in turn (default: the latest)")
    for flag, kind in _GRID_FLAGS.items():
        parser.add_argument(f"--{flag.replace('_', '-')}", type=int_list if kind == "int" else float_list,
                            default=None, help=f"comma-separated values of {flag}")
    parser.add_argument("--selection", default=None, help="candidate selection rule (EVOR: rejection, softmax)")
    parser.add_argument("--ensemble", default=None, help="combine the ensemble's Q* (EVOR: mean, min)")
    parser.add_argument("--integrator", default=None,
                        help="integrator of the return flow at inference (EVOR: euler, midpoint, rk4)")
    parser.add_argument("--return-weights", default=None,
                        help="score candidates with the last return-flow weights or their Polyak average "
                             "(EVOR: online, ema)")
    parser.add_argument("--return-noise", type=lambda text: text.split(","), default=None,
                        help="comma-separated: base noise of Q*'s return samples, 'independent' (fresh per "
                             "candidate), 'common' (shared by the candidates) or 'stratified' (shared, one per "
                             "quantile stratum) (EVOR)")
    parser.add_argument("--tilt", type=lambda text: text.split(","), default=None,
                        help="comma-separated: how Q* reads a return model with an exact tilt (EVOR mean, "
                             "hl_gauss): 'exact' (the default) or 'sampled' from M samples, as the flow is read")
    parser.add_argument("--inference", default=None,
                        help="a named inference preset as the base of every setting (EVOR: default, fast); "
                             "flags given with it override its fields")
    parser.add_argument("--out", default=None, help=f"results file (default RUN_DIR/{default_out})")
    parser.add_argument("--quiet", action="store_true")


def _steps_argument(text: str):
    """'all', or comma-separated checkpoint steps (>= 0), for --step of `evor eval` and `evor sweep`."""
    import argparse

    if text.strip().lower() == "all":
        return "all"
    try:
        steps = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        steps = []
    if not steps or min(steps) < 0:
        raise argparse.ArgumentTypeError(f"expected 'all' or comma-separated checkpoint steps, got '{text}'")
    return sorted(set(steps))


def _checkpoint_steps(run_dir: Path, requested) -> list:
    """The steps to evaluate, every one checked to exist before any is evaluated ([None]: the latest)."""
    from evor.checkpoints import checkpoint_step, checkpoints, refuse_legacy
    from evor.rundir import CONFIG

    if requested is None:
        return [None]  # load_run finds the latest readable one and says what is wrong if none is
    if not (run_dir / CONFIG).exists():
        raise EvorError(f"{run_dir} is not a run directory (no {CONFIG}).")
    refuse_legacy(run_dir)
    kept = sorted(checkpoint_step(path) for path in checkpoints(run_dir))
    if requested == "all":
        if not kept:
            raise EvorError(f"{run_dir} has no checkpoints to evaluate.")
        return kept
    missing = [step for step in requested if step not in kept]
    if missing:
        raise EvorError(f"{run_dir} has no checkpoint at step {', '.join(map(str, missing))} "
                        f"(kept: {', '.join(map(str, kept)) or 'none'}).")
    return requested


def _parse_overrides(pairs: list[str]) -> dict:
    overrides: dict = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set expects KEY=VALUE, got '{pair}'.")
        key, raw = pair.split("=", 1)
        if raw.strip().lower() in ("inf", "+inf", "-inf", "nan"):
            value = float(raw)
        else:
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                value = raw
        if "." in key:
            outer, inner = key.split(".", 1)
            if outer not in ("agent", "inference"):
                raise ConfigError(f"--set {key}: only 'agent.' and 'inference.' fields are nested.")
            overrides.setdefault(outer, {})[inner] = value
        else:
            overrides[key] = value
    return overrides


def cmd_checkpoint_convert(args):
    from evor.checkpoints import convert_legacy_checkpoints, legacy_checkpoints
    from evor.train import load_run_agent, state_template

    run_dir = Path(args.run_dir).expanduser()
    if not legacy_checkpoints(run_dir):
        raise EvorError(f"{run_dir} has no pickle checkpoints (checkpoints/step_*.pkl) to convert.")
    _, agent = load_run_agent(run_dir)
    for path in convert_legacy_checkpoints(run_dir, state_template(agent), trust_pickle=args.trust_pickle):
        print(f"wrote {path}")


def cmd_train(args):
    from evor.agents import chunked_agents
    from evor.report import method_label
    from evor.train import load_config_file, make_config, resume_config, train, train_seeds

    # Only what the user typed: with --resume it is checked against the run's config, not the defaults.
    overrides = load_config_file(args.config) if args.config else {}
    agent_name = args.agent or overrides.get("agent_name")
    if args.horizon is not None:
        if (agent_name or "evor") not in chunked_agents():
            raise ConfigError(f"--horizon (action-chunk length) applies to --agent {' or '.join(chunked_agents())}, "
                              f"not {agent_name}.")
        overrides["agent"] = {**overrides.get("agent", {}), "horizon": args.horizon}
    for key, value in _parse_overrides(args.set).items():
        overrides[key] = {**overrides.get(key, {}), **value} if key in ("agent", "inference") else value
    overrides.update({k: v for k, v in dict(task=args.task, agent_name=args.agent, seed=args.seed,
                                            total_steps=args.steps, data_dir=args.data_dir).items() if v is not None})
    if args.resume and (args.run_dir or args.seeds is None):
        first = Path(args.run_dir) / f"seed{args.seeds[0]}" if args.run_dir and args.seeds else None
        run_dir = first or (Path(args.run_dir) if args.run_dir else None)
        if run_dir is None:  # the default directory is named after the task and agent
            probe = make_config(args.preset or "cpu", **overrides)
            name = method_label({"agent_name": probe.agent_name, "agent": probe.agent})
            run_dir = Path("runs") / probe.task / name / f"seed{probe.seed}"
        if args.seeds is not None:
            overrides.pop("seed", None)
        config = resume_config(run_dir, overrides, preset=args.preset)
    else:
        config = make_config(args.preset or "cpu", **overrides)
    name = method_label({"agent_name": config.agent_name, "agent": config.agent})  # qc5, evor5, fql, ...
    if args.seeds is not None:
        if args.seed is not None:
            raise ConfigError("Give either --seed or --seeds, not both.")
        parent = Path(args.run_dir) if args.run_dir else Path("runs") / config.task / name
        runs = train_seeds(config, args.seeds, [parent / f"seed{seed}" for seed in args.seeds],
                           resume=args.resume, show_progress=not args.quiet, mode=args.seed_mode)
    else:
        run_dir = args.run_dir or f"runs/{config.task}/{name}/seed{config.seed}"
        runs = [train(config, run_dir, resume=args.resume, show_progress=not args.quiet)]
    for run in runs:
        print(f"run directory: {run.run_dir} (step {run.step})")


def _grid_from_args(args, run):
    grids = {flag: getattr(args, flag) for flag in (*_GRID_FLAGS, "return_noise", "tilt") if getattr(args, flag) is not None}
    fixed = {k: v for k, v in dict(selection=args.selection, ensemble=args.ensemble, integrator=args.integrator,
                                   return_weights=args.return_weights).items() if v is not None}
    if args.episodes < 1:
        raise ConfigError(f"--episodes must be >= 1, got {args.episodes}.")
    if getattr(args, "inference", None):
        presets = getattr(run.agent, "inference_presets", {})
        if args.inference not in presets:
            raise ConfigError(f"Unknown inference preset '{args.inference}' for {run.config.agent_name}; "
                              f"available: {', '.join(presets) or 'none'}.")
        fixed = {**{k: v for k, v in presets[args.inference].items() if k not in grids}, **fixed}
    from evor.sweep import grid_settings

    grid_settings(run, grids, fixed)  # reject bad settings before any episode runs
    return grids, fixed


def _default_evaluation_seed(args, run):
    if args.seed is None:
        from evor.evaluate import evaluation_seed

        args.seed = evaluation_seed(run.config.seed)


def _evaluate_settings(args, results_file: str, default_num_candidates=None):
    """`evor eval` and `evor sweep`: evaluate a run's checkpoint over the settings grid the flags name."""
    from evor.sweep import sweep
    from evor.train import load_run

    steps = _checkpoint_steps(Path(args.run_dir).expanduser(), args.step)
    out = Path(args.out) if args.out else Path(args.run_dir) / results_file
    run = load_run(args.run_dir, step=steps[0])  # settings are checked here, before any episode runs
    if args.num_candidates is None and default_num_candidates and hasattr(run.agent.Settings, "num_candidates"):
        args.num_candidates = default_num_candidates
    grids, fixed = _grid_from_args(args, run)
    _default_evaluation_seed(args, run)
    for index, step in enumerate(steps):
        if index:
            run = load_run(args.run_dir, step=step)
        if len(steps) > 1:
            print(f"checkpoint {index + 1}/{len(steps)}: step {run.step}", flush=True)
        sweep(run, grids, fixed, args.episodes, args.seed, out, show_progress=not args.quiet)
    print(f"results: {out}")


def cmd_eval(args):
    _evaluate_settings(args, "eval.json")


def cmd_sweep(args):
    _evaluate_settings(args, "sweep.json", default_num_candidates=SWEEP_NUM_CANDIDATES)


def cmd_diagnose(args):
    from evor.data.files import atomic_write_json
    from evor.diagnostics import diagnose
    from evor.rundir import DIAGNOSTICS
    from evor.train import load_run

    for name in ("transitions", "samples"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name} must be >= 1, got {getattr(args, name)}.")
    if args.episodes < 0 or args.ranking_states < 0 or not 0 <= args.max_tail <= 1:
        raise ConfigError("--episodes and --ranking-states must be >= 0 and --max-tail in [0, 1].")
    run = load_run(args.run_dir, step=args.step)
    report = diagnose(run, args.transitions, args.samples, args.max_tail, args.seed, args.episodes,
                      args.ranking_states)
    out = Path(args.out) if args.out else Path(args.run_dir) / DIAGNOSTICS
    atomic_write_json(out, report)
    v = report["validation"]
    print(f"{report['task']} step {report['step']}: {v['transitions']} validation transitions x "
          f"{v['samples_per_transition']} samples")
    print("  PIT histogram (flat = " + f"{1 / len(v['pit_histogram']):.2f}" + "): "
          + " ".join(f"{h:.2f}" for h in v["pit_histogram"]))
    print("  coverage of central intervals: " + ", ".join(f"{k}% -> {100 * c:.1f}%" for k, c in v["coverage"].items()))
    print(f"  CRPS {v['crps']:.3f}  bias {v['bias']:+.3f}  model std per (s, a) {v['model_std_mean']:.2f}")
    t = v["tilt"]
    print(f"  tilt at tau_Q {t['tau_q']:g}: Q* {t['q_star_mean']:.2f} from {t['num_return_samples']} samples "
          f"per member as the flow acts, {t['q_star_all_samples_mean']:.2f} from all; model mean {v['model_mean']:.2f}")
    if "ranking" in report:
        r = report["ranking"]
        snr = "no noise" if r["signal_to_noise"] is None else f"signal/noise {r['signal_to_noise']:.2f}"
        print(f"  ranking of {r['candidates']} candidates at {r['states']} states: spread {r['spread']:.3f}, "
              f"readout noise {r['noise']:.3f} ({snr}); picks the reference's best {100 * r['top1']:.0f}%, "
              f"repeats its pick {100 * r['repeat_top1']:.0f}%, regret {r['regret']:.3f}, "
              f"rank correlation {r['rank_correlation']:.2f}")
    if "initial_states" in report:
        s = report["initial_states"]
        print(f"  initial states ({s['episodes']} episodes): predicted Q* {s['predicted_q_star_mean']:.2f}, "
              f"achieved discounted return {s['achieved_discounted_return_mean']:.2f}, success {s['success_rate']:.2f}")
    print(f"results: {out}")


def cmd_report(args):
    from evor.report import write_report

    summary = write_report(args.paths, args.out)
    print((Path(args.out) / "report.md").read_text())
    print(f"{len(summary['runs'])} runs; report: {Path(args.out) / 'report.html'}")


def cmd_archive(args):
    from evor.rundir import archive_records

    archived = archive_records(args.paths, args.out)
    print(f"{len(archived)} run records in {args.out}; `evor report {args.out}` reads them")


def cmd_diff(args) -> int:
    from evor.reproduce import diff_runs, format_diff

    if args.limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {args.limit}.")
    found = diff_runs(args.run_dir, args.record)
    print(format_diff(args.run_dir, args.record, found, args.limit))
    return 0 if found.reproduces else 1


def cmd_bench(args):
    import os

    from evor.bench import bench

    jobs = args.jobs if args.jobs is not None else len(os.sched_getaffinity(0))
    if jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {jobs}.")
    out = args.out or f"runs/bench/{Path(args.suite).stem}"
    agents = args.agents.split(",") if args.agents else None
    tasks = args.tasks.split(",") if args.tasks else None
    summary = bench(args.suite, out, agents, args.seeds, args.preset, args.backend, jobs, args.address,
                    args.gpus_per_cell, tasks)
    print(Path(out, "report", "report.md").read_text())
    print(f"{len(summary['cells'])} cells in {summary['seconds']:.0f} s; report: {Path(out, 'report', 'report.html')}")


SWEEP_NUM_CANDIDATES = [1, 2, 4, 8, 16, 32, 64, 128, 256]


# Sized for ~15 minutes on 2 CPU cores including installation: 100 generated episodes (~1.5 min),
# 20k updates at the cpu preset (~42 updates/s, ~8 min), 20 evaluation episodes per N. Measured:
# 12k updates gave success 0.00 / 0.05 / 0.10 for N = 1 / 4 / 16; 20k gave 0.05 / 0.75 / 0.75.
# N = 64 is left to benchmarks/evor_compute_scaling.py: on a CPU it costs ~2 minutes per 20 episodes.
# The quickstart's sizes, chosen so that the whole command (data generation included) finishes in under
# 15 minutes on a fresh 2-core machine and success rises from N = 1 to the largest N on every seed:
# measured with benchmarks/quickstart_check.py (README).
QUICKSTART = dict(dataset="cube-single-play-v0", task="cube-single-play-singletask-task2-v0", episodes=200,
                  steps=25000, eval_episodes=30, candidates=[1, 8, 32])


def cmd_quickstart(args):
    import os

    from evor.data.files import dataset_files
    from evor.data.generate import generate_dataset
    from evor.report import write_report
    from evor.sweep import sweep
    from evor.train import make_config, train

    started = time.time()
    out = Path(args.out)
    data_dir = out / "data"
    episodes = args.episodes or QUICKSTART["episodes"]
    files = dataset_files(QUICKSTART["dataset"], data_dir)
    if not (files.train.exists() and files.val.exists()):
        workers = len(os.sched_getaffinity(0))
        print(f"[1/4] generating {QUICKSTART['dataset']} ({episodes} episodes, {workers} workers) into {data_dir}",
              flush=True)
        generate_dataset(QUICKSTART["dataset"], out_dir=data_dir, episodes=episodes, workers=workers)
    steps = args.steps or QUICKSTART["steps"]
    config = make_config("cpu", task=QUICKSTART["task"], total_steps=steps, data_dir=str(data_dir), seed=args.seed,
                         eval_every=0, checkpoint_every=steps, log_every=min(500, steps))
    run_dir = out / "run"
    print(f"[2/4] training EVOR on {config.task} for {steps} steps -> {run_dir}", flush=True)
    # Re-running the quickstart continues its run (resume starts afresh when no checkpoint exists yet).
    try:
        run = train(config, run_dir, resume=(run_dir / "config.json").exists())
    except ResumeConflict as exc:  # e.g. a quickstart run from before a default changed
        raise EvorError(f"{run_dir} holds a quickstart run made with other settings ({'; '.join(exc.differences)}), "
                        f"so it cannot be continued. Delete {run_dir}, or give the quickstart another --out.") from None
    eval_episodes = args.eval_episodes or QUICKSTART["eval_episodes"]
    print(f"[3/4] evaluating with N = {QUICKSTART['candidates']} candidates, {eval_episodes} episodes each "
          f"(N = 1 is a plain behaviour-policy sample)", flush=True)
    out_file = run_dir / "quickstart_eval.json"
    out_file.unlink(missing_ok=True)
    results = sweep(run, {"num_candidates": QUICKSTART["candidates"]}, {}, eval_episodes, 0, out_file)
    print("\n  N    success")
    for r in results:
        print(f"  {r['settings']['num_candidates']:<4d} {r['success_rate']:.2f}")
    report_dir = out / "report"
    print(f"\n[4/4] writing the report -> {report_dir}", flush=True)
    try:
        write_report([run_dir], report_dir)
        where = f"open {report_dir / 'report.html'} (or report.md)"
    except EvorError as exc:  # e.g. matplotlib missing: the results above stand without the figures
        where = f"no report ({exc})"
    print(f"\nquickstart done in {(time.time() - started) / 60:.1f} min; results in {out_file}; {where}")
