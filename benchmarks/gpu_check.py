"""One prepared run on a GPU machine: is the GPU used, how fast is each code path, and how far does the
`paper` preset get in the time left. Safe to repeat: every phase writes its figures to
OUT/gpu_check.json (and OUT/gpu_check.md) when it ends, and a re-run skips the phases already there
(--redo PHASE to measure one again); the training run resumes from its checkpoints.

Phases, in order (--phases picks some):
  device      JAX's backend and devices; refuses to go on without a GPU unless --dry-run or --allow-cpu
  throughput  updates/s of EVOR (cut-off table and every-row targets), FQL and QC at the paper and cpu
              presets, fused (lax.scan) against one jitted call per update (benchmarks/throughput.py)
  seeds       EVOR paper: 1, 4 and 8 seeds in one compiled call, vmapped (benchmarks/seeds.py)
  latency     EVOR paper: ms for one action, N = 1..256 candidates, M = 8 (benchmarks/latency.py)
  data        cube-single-play-v0 generated with one worker per core (--episodes; needs MuJoCo/OGBench)
  eval        50 episodes of an untrained EVOR at paper sizes: sequential against batched (rows vmapped)
  train       EVOR, paper preset, cube-single task 2, for --train-seconds (resumable), then 50 episodes
The first four import neither MuJoCo nor OGBench (checked in the dry run).

Targets it reports against (issue: the GPU path): EVOR paper >= 2,000 updates/s; fused >= 3x one call
per update; 8 vmapped seeds >= 4x one seed's total updates/s; N = 64 in under 2 ms per action.

On a fresh GPU machine (offline, its own CUDA JAX, e.g. jax 0.11 on Python 3.12; this workplace's image
has jax, flax, optax, numpy, scipy, tqdm, h5py and matplotlib) the simulator stack travels with the
command: ogbench 1.2.2, mujoco 4.0.0 (+ mujoco-core, mujoco-studio, glfw, PyOpenGL, websockets),
dm_control 1.0.50 (+ dm-env, dm-tree, labmaze) and gymnasium 1.4.0 (+ Farama-Notifications). Build it here
once (pip downloads the cp312 wheels, unpacks and prunes them; 101 MB unpacked, a 31 MB archive, under
the 64 MiB a device call may carry):

    bash benchmarks/gpu_wheels.sh            # -> .whl/site-3.12.tar.gz (git-ignored)

then, there, from the repository root (carry .whl/site-3.12.tar.gz), in one command of under 10 minutes:

    mkdir -p /tmp/site && tar -xzf .whl/site-3.12.tar.gz -C /tmp/site \
      && PYTHONPATH=/tmp/site:src PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py --out $OUT/gpu \
         --train-seconds 180

(the library is put on the path, not installed, so pip does not try to replace the machine's JAX).
Without the archive the simulator phases are skipped with their reason and the rest still runs:
`--phases device,throughput,seeds,latency`.

    python benchmarks/gpu_check.py --dry-run --out /tmp/gpu-dry   # the same code paths on CPU, tiny sizes
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def accelerator_environment(environ: dict) -> dict:
    """Environment defaults for this script's processes (values the user set are kept):
    - XLA_PYTHON_CLIENT_PREALLOCATE=false: several programs of very different sizes run in one process
      and its worker processes (data generation, evaluation envs) start JAX too; the default grab of
      75% of GPU memory per process would starve them. Growth allocation costs little for these sizes.
    - MUJOCO_GL=disable: nothing renders, and the GPU machine has no libEGL (evor/__init__.py sets the
      same default)."""
    wanted = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false", "MUJOCO_GL": "disable"}
    return {k: v for k, v in wanted.items() if k not in environ}


os.environ.update(accelerator_environment(dict(os.environ)))

import jax  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _synthetic import synthetic_dataset  # noqa: E402

PHASES = ("device", "throughput", "seeds", "latency", "data", "eval", "train")
TASK = "cube-single-play-singletask-task2-v0"
TARGETS = {"evor_paper_updates_per_second": 2000.0, "fused_over_plain": 3.0, "vmap8_over_one": 4.0,
           "n64_ms_per_action": 2.0}


def sizes(dry_run: bool) -> dict:
    """What each phase measures; the dry run keeps every code path at tiny sizes (< 3 minutes on CPU)."""
    if dry_run:
        return dict(presets=["tiny"], steps={"tiny": 10}, agents=["evor", "evor-every-row", "fql", "qc"],
                    seed_preset="tiny", seeds=[1, 2], seed_steps=5, latency_preset="tiny", candidates=[1, 4],
                    return_samples=[2], episodes=2, eval_episodes=2, train_preset="tiny", eval_preset="tiny")
    return dict(presets=["paper", "cpu"], steps={"paper": 250, "cpu": 500}, agents=["evor", "evor-every-row", "fql", "qc"],
                seed_preset="paper", seeds=[1, 4, 8], seed_steps=100, latency_preset="paper",
                candidates=[1, 4, 16, 64, 256], return_samples=[8], episodes=1000, eval_episodes=50,
                train_preset="paper", eval_preset="paper")


# --------------------------------------------------------------------------- phases


def phase_device(args, size, results):
    backend = jax.default_backend()
    info = {"backend": backend, "devices": [str(d) for d in jax.devices()], "jax": jax.__version__,
            "python": sys.version.split()[0], "cores": len(os.sched_getaffinity(0))}
    if backend == "cpu" and not (args.dry_run or args.allow_cpu):
        raise SystemExit(f"gpu_check: JAX sees no GPU ({info['devices']}); install a CUDA build of JAX "
                         f"(README: pip install -e '.[cuda]') or pass --dry-run / --allow-cpu.")
    return info


def phase_throughput(args, size, results):
    from throughput import measure

    dataset = synthetic_dataset()
    rows = []
    for preset in size["presets"]:
        for name in size["agents"]:
            row = measure(name, preset, dataset, size["steps"][preset])
            print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
            rows.append(row)
    return rows


def phase_seeds(args, size, results):
    from seeds import measure_seeds

    return measure_seeds("evor", size["seed_preset"], size["seeds"], ["vmap"], size["seed_steps"])


def phase_latency(args, size, results):
    from latency import measure_latency

    return measure_latency(size["latency_preset"], size["candidates"], size["return_samples"], [1])


def phase_data(args, size, results):
    from evor.data.generate import generate_dataset

    workers = len(os.sched_getaffinity(0))
    started = time.time()
    generate_dataset("cube-single-play-v0", out_dir=args.data_dir, episodes=size["episodes"], workers=workers,
                     show_progress=False)
    return {"episodes": size["episodes"], "workers": workers, "seconds": time.time() - started}


def phase_eval(args, size, results):
    from _synthetic import make_agent
    from evor.train import Run, make_config

    agent, _ = make_agent("evor", size["eval_preset"])
    config = make_config(size["eval_preset"], task=TASK, data_dir=str(args.data_dir))
    run = Run(None, config, agent, agent.init(jax.random.PRNGKey(0)), 0)
    settings = run.settings(num_candidates=32, num_return_samples=8)
    episodes = size["eval_episodes"]
    out = {}
    env_workers = min(len(os.sched_getaffinity(0)), 8, episodes)
    for label, pool, workers, rows in (("sequential", 1, 0, "map"), ("batched", episodes, env_workers, "vmap")):
        run.evaluate(settings, min(pool, 2), seed=0, pool_size=pool, workers=0, rows=rows)  # compile
        result = run.evaluate(settings, episodes, seed=1000, pool_size=pool, workers=workers, rows=rows)
        out[label] = {k: result[k] for k in ("seconds", "policy_ms_per_env_step", "success_rate")}
        print(label, json.dumps(out[label]), flush=True)
    out["speedup"] = out["sequential"]["seconds"] / out["batched"]["seconds"]
    return out


def phase_train(args, size, results):
    """EVOR at the paper preset for about --train-seconds (whole log_every chunks), then 50 episodes."""
    import dataclasses

    from evor.checkpoints import checkpoint_step, latest_checkpoint
    from evor.train import make_config, train

    config = make_config(size["train_preset"], task=TASK, data_dir=str(args.data_dir), eval_every=0)
    config = dataclasses.replace(config, checkpoint_every=config.log_every)  # resumable at every chunk
    run_dir = Path(args.out) / "train-evor-paper"
    started = time.time()

    def reached():
        latest = latest_checkpoint(run_dir)
        return 0 if latest is None else checkpoint_step(latest)

    # updates/s measured in this run (throughput phase) sizes the run; else one first chunk measures it
    rate = next((r["fused_updates_per_second"] for r in results.get("throughput", [])
                 if r["agent"] == "evor" and r["preset"] == size["train_preset"]), None)
    if rate is None:
        first = reached()
        train(config, run_dir, resume=first > 0, show_progress=False, stop_after=first + config.log_every)
        rate = (reached() - first) / max(time.time() - started, 1e-6)
    start = reached()
    remaining = max(args.train_seconds - (time.time() - started), 0.0)
    chunks = max(int(remaining * rate) // config.log_every, 1 if start == 0 else 0)
    target = min(start + chunks * config.log_every, config.total_steps)
    run = train(config, run_dir, resume=start > 0, show_progress=False, stop_after=target)
    train_seconds = time.time() - started
    result = run.evaluate(run.settings(), size["eval_episodes"], seed=20_000)
    return {"preset": size["train_preset"], "steps": run.step, "train_seconds": train_seconds,
            "updates_per_second_estimate": rate,
            "success_rate": result["success_rate"], "eval_seconds": result["seconds"],
            "policy_ms_per_env_step": result["policy_ms_per_env_step"], "run_dir": str(run_dir)}


RUNNERS = {"device": phase_device, "throughput": phase_throughput, "seeds": phase_seeds, "latency": phase_latency,
           "data": phase_data, "eval": phase_eval, "train": phase_train}


# --------------------------------------------------------------------------- report


def target_checks(results: dict) -> list[tuple[str, str, bool | None]]:
    """(what, measured, met) for each target the issue set; None where its phase did not run."""
    checks = []
    through = {(r["agent"], r["preset"]): r for r in results.get("throughput", [])}
    evor_paper = through.get(("evor", "paper"))
    checks.append(("EVOR paper updates/s >= 2,000",
                   f"{evor_paper['fused_updates_per_second']:.0f}" if evor_paper else "not measured",
                   None if not evor_paper else evor_paper["fused_updates_per_second"] >= TARGETS[
                       "evor_paper_updates_per_second"]))
    ratios = [r["fused_updates_per_second"] / r["plain_updates_per_second"] for r in through.values()]
    checks.append(("fused >= 3x one call per update (every agent and preset)",
                   ", ".join(f"{k[0]}/{k[1]} {r['fused_updates_per_second'] / r['plain_updates_per_second']:.2f}x"
                             for k, r in through.items()) or "not measured",
                   None if not ratios else min(ratios) >= TARGETS["fused_over_plain"]))
    seeds = {r["seeds"]: r for r in results.get("seeds", [])}
    top = max(seeds) if seeds else None
    checks.append((f"{top or 8} vmapped seeds >= 4x one seed's updates/s",
                   f"{seeds[top]['vs_one_seed']:.2f}x" if top else "not measured",
                   None if not top else seeds[top]["vs_one_seed"] >= TARGETS["vmap8_over_one"]))
    n64 = next((r for r in results.get("latency", []) if r["N"] == 64 and r["batch"] == 1), None)
    checks.append(("N = 64 candidates (M = 8) < 2 ms per action", f"{n64['ms_per_action']:.2f} ms" if n64 else
                   "not measured", None if not n64 else n64["ms_per_action"] < TARGETS["n64_ms_per_action"]))
    return checks


def markdown(results: dict) -> str:
    device = results.get("device", {})
    lines = [f"# gpu_check on {', '.join(device.get('devices', ['?']))} (jax {device.get('jax', '?')})", ""]
    if "throughput" in results:
        lines += ["| agent | preset | fused updates/s | one call per update | fused/plain | GFLOP/update |",
                  "|---|---|---|---|---|---|"]
        for r in results["throughput"]:
            gflop = "n/a" if r["gflop_per_update"] is None else f"{r['gflop_per_update']:.2f}"
            lines.append(f"| {r['agent']} | {r['preset']} | {r['fused_updates_per_second']:.1f} | "
                         f"{r['plain_updates_per_second']:.1f} | "
                         f"{r['fused_updates_per_second'] / r['plain_updates_per_second']:.2f}x | {gflop} |")
        lines.append("")
    if "seeds" in results:
        lines += ["| seeds (vmap) | total updates/s | vs one seed |", "|---|---|---|"]
        lines += [f"| {r['seeds']} | {r['total_updates_per_second']:.1f} | {r['vs_one_seed']:.2f}x |"
                  for r in results["seeds"]] + [""]
    if "latency" in results:
        lines += ["| N | M | ms per action |", "|---|---|---|"]
        lines += [f"| {r['N']} | {r['M']} | {r['ms_per_action']:.2f} |" for r in results["latency"]] + [""]
    if "eval" in results:
        e = results["eval"]
        lines += [f"Evaluation: sequential {e['sequential']['seconds']:.1f} s, batched {e['batched']['seconds']:.1f} s "
                  f"({e['speedup']:.1f}x).", ""]
    if "train" in results:
        t = results["train"]
        lines += [f"EVOR {t.get('preset', 'paper')} preset on {TASK}: {t['steps']} updates in {t['train_seconds']:.0f} s, "
                  f"success "
                  f"{t['success_rate']:.2f} over the evaluation episodes.", ""]
    lines += ["| target | measured | met |", "|---|---|---|"]
    lines += [f"| {what} | {value} | {'-' if met is None else ('yes' if met else 'no')} |"
              for what, value, met in target_checks(results)]
    for phase, reason in results.get("skipped", {}).items():
        lines.append(f"\nSkipped {phase}: {reason}")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/gpu_check")
    parser.add_argument("--phases", default=",".join(PHASES))
    parser.add_argument("--redo", default="", help="phases to measure again although results exist")
    parser.add_argument("--train-seconds", type=float, default=180.0)
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes: the same code paths in minutes")
    parser.add_argument("--allow-cpu", action="store_true", help="measure at full sizes without a GPU")
    args = parser.parse_args(argv)
    from evor.data.files import atomic_write_json, atomic_write_text
    from evor.errors import EvorError

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    args.data_dir = out / "data"
    size = sizes(args.dry_run)
    results_path = out / "gpu_check.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    if results.get("dry_run", args.dry_run) != args.dry_run:
        results = {}  # a dry run's figures never mix with a real run's
    results["dry_run"] = args.dry_run
    wanted = [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = sorted(set(wanted + [p for p in args.redo.split(",") if p]) - set(PHASES))
    if unknown:
        raise SystemExit(f"gpu_check: unknown phase(s) {unknown}; phases: {', '.join(PHASES)}")
    for phase in [p for p in PHASES if p in wanted]:
        if phase in results and phase not in args.redo.split(","):
            print(f"[gpu_check] {phase}: done before, skipped (--redo {phase} to measure again)", flush=True)
            continue
        started = time.time()
        print(f"[gpu_check] {phase} ...", flush=True)
        try:
            results[phase] = RUNNERS[phase](args, size, results)
        except (ImportError, EvorError) as exc:  # simulator phases without MuJoCo/OGBench, or without data
            results.setdefault("skipped", {})[phase] = f"{type(exc).__name__}: {exc}"
            print(f"[gpu_check] {phase} skipped: {exc}", flush=True)
            continue
        results.setdefault("seconds", {})[phase] = time.time() - started
        results.get("skipped", {}).pop(phase, None)
        atomic_write_json(results_path, results)
        atomic_write_text(out / "gpu_check.md", markdown(results))
        print(f"[gpu_check] {phase} done in {time.time() - started:.0f} s", flush=True)
    atomic_write_json(results_path, results)
    atomic_write_text(out / "gpu_check.md", markdown(results))
    print(markdown(results))
    return results


if __name__ == "__main__":
    main()
