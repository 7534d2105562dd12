"""Every CLI command answers bad arguments with one paragraph and exit code 2, never a traceback."""

import subprocess
import sys
from pathlib import Path

import pytest


def run_cli(*args, timeout=120):
    proc = subprocess.run([sys.executable, "-m", "evor.cli", *args], capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.parametrize("args, message", [
    (["data", "generate", "cube-nonuple-play-v0"], "Unknown dataset"),
    (["data", "generate", "cube-single-play-v0", "--episodes", "0"], "--episodes must be at least 1"),
    (["data", "generate", "cube-single-play-v0", "--workers", "0"], "--workers must be at least 1"),
    (["data", "import", "/nonexistent/file.npz"], "file not found"),
    (["data", "stats", "cube-single-play-singletask-task1-v0", "--dir", "/nonexistent"], "evor data generate"),
    (["train", "--task", "cube-single-play-singletask-task1-v0", "--preset", "nope"], "Unknown preset"),
    (["train", "--agent", "ppo"], "Unknown agent"),
    (["train", "--set", "agent.tau=3"], "Unknown agent config field"),
    (["train", "--set", "nokey"], "KEY=VALUE"),
    (["train", "--seed", "1", "--seeds", "0,1"], "either --seed or --seeds"),
    (["train", "--seeds", "1,1"], "Seeds must be distinct"),
    (["eval", "/nonexistent/run"], "not a run directory"),
    (["diff", "/nonexistent/run", "/nonexistent/record"], "not a run directory"),
    (["diff", "/nonexistent/run", "/nonexistent/record", "--limit", "0"], "--limit must be at least 1"),
    (["train", "--task", "cube-single-play-singletask-task9-v0"], "Unknown task number 9"),
    (["train", "--task", "tetris-play-singletask-task1-v0"], "is not a dataset of an OGBench environment"),
    (["train", "--task", "cube-nonuple-play-singletask-task1-v0"], "Unknown dataset 'cube-nonuple-play-v0'"),
])
def test_bad_arguments_give_a_message_not_a_traceback(args, message):
    code, _, err = run_cli(*args)
    assert code == 2, err
    assert message in err
    assert "Traceback" not in err


def test_generate_to_unwritable_directory_is_reported(tmp_path):
    # A path below a regular file cannot be created, even by root.
    (tmp_path / "afile").write_text("x")
    code, _, err = run_cli("data", "generate", "pointmaze-medium-navigate-v0", "--episodes", "1",
                           "--out", str(tmp_path / "afile" / "sub"))
    assert code == 2 and "Cannot create output directory" in err and "Traceback" not in err


def test_generate_list_and_import_round_trip(tmp_path):
    code, out, err = run_cli("data", "generate", "pointmaze-medium-navigate-v0", "--episodes", "1", "--out",
                             str(tmp_path), "--quiet")
    assert code == 0, err
    code, out, _ = run_cli("data", "list", "--dir", str(tmp_path))
    assert code == 0 and "pointmaze-medium-navigate-v0" in out and "train_episodes=1" in out
    code, out, err = run_cli("data", "import", str(tmp_path / "pointmaze-medium-navigate-v0.npz"))
    # raw OGBench files carry no rewards (they are relabelled per task): import says so and how to use it
    assert code == 2 and "OGBench computes them per task" in err


def test_quickstart_over_a_run_of_other_settings_says_what_to_do(cube_single_data, tmp_path):
    # e.g. runs/quickstart/run from before EVOR's default chunk became 5: it can be neither continued nor
    # silently replaced, so the quickstart stops before training and names the way out
    import json
    import shutil

    from evor.config import config_json, make_config

    shutil.copytree(cube_single_data, tmp_path / "data")
    old = make_config("cpu", task="cube-single-play-singletask-task2-v0", total_steps=500, data_dir=str(tmp_path / "data"),
                      eval_every=0, checkpoint_every=500, log_every=500, agent={"horizon": 1})
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(json.dumps(config_json(old)))
    code, _, err = run_cli("quickstart", "--out", str(tmp_path), "--steps", "500")
    assert code == 2 and "Traceback" not in err, err
    assert "agent.horizon: saved 1, requested 5" in err and "Delete" in err and "--out" in err
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["config.json"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from evor.data.generate import generate_dataset
    from evor.train import make_config, train

    base = tmp_path_factory.mktemp("cli")
    generate_dataset("cube-single-play-v0", out_dir=base / "data", episodes=1, workers=1, show_progress=False)
    config = make_config("tiny", task="cube-single-play-singletask-task1-v0", data_dir=str(base / "data"),
                         eval_every=0)
    train(config, base / "run", show_progress=False)
    return base / "run"


@pytest.mark.parametrize("args, message", [
    (["--num-candidates", "0"], "num_candidates must be >= 1"),
    (["--tau-q", "-1"], "tau_q must be >= 0"),
    (["--tau-r", "nan"], "tau_r must be >= 0"),
    (["--num-return-samples", "2,0"], "num_return_samples must be >= 1"),
    (["--episodes", "0"], "--episodes must be >= 1"),
    (["--num-candidates", "a,b"], "expected comma-separated integers"),
    (["--step", "999"], "no checkpoint at step 999"),
    (["--step", "100,999"], "no checkpoint at step 999 (kept: 100, 200)"),
    (["--step", "last"], "expected 'all' or comma-separated checkpoint steps"),
    (["--return-noise", "common,antithetic"], "return_noise must be one of"),
    (["--inference", "turbo"], "Unknown inference preset 'turbo'"),
    (["--selection", "best"], "selection must be one of"),
    (["--integrator", "leapfrog"], "integrator must be one of"),
    (["--tilt", "exact,approx"], "tilt must be one of"),
])
def test_eval_rejects_invalid_inference_settings_before_running(tiny_run, args, message):
    code, _, err = run_cli("eval", str(tiny_run), *args)
    assert code == 2, err
    assert message in err and "Traceback" not in err


def test_eval_writes_json_next_to_the_run(tiny_run):
    code, out, err = run_cli("eval", str(tiny_run), "--num-candidates", "1,2", "--return-noise", "independent,common",
                             "--episodes", "1", "--quiet")
    assert code == 0, err
    import json

    results = json.loads((tiny_run / "eval.json").read_text())["results"]
    assert [(r["settings"]["num_candidates"], r["settings"]["return_noise"]) for r in results] == [
        (1, "independent"), (1, "common"), (2, "independent"), (2, "common")]


def test_eval_over_every_kept_checkpoint_scores_each_on_the_same_episodes(tiny_run, tmp_path):
    # --step all evaluates the kept checkpoints in turn (tiny: steps 100 and 200) into one results file,
    # each on the run's own evaluation block; a second run finds every setting done and evaluates nothing
    import json

    out = tmp_path / "steps.json"
    code, out_text, err = run_cli("eval", str(tiny_run), "--step", "all", "--num-candidates", "1", "--episodes", "1",
                                  "--out", str(out), "--quiet")
    assert code == 0, err
    assert "checkpoint 1/2: step 100" in out_text and "checkpoint 2/2: step 200" in out_text
    results = json.loads(out.read_text())["results"]
    assert [(r["step"], r["seed"]) for r in results] == [(100, 20000), (200, 20000)]
    code, out_text, err = run_cli("eval", str(tiny_run), "--step", "200,100", "--num-candidates", "1",
                                  "--episodes", "1", "--out", str(out), "--quiet")
    assert code == 0 and out_text.count("already done, skipped") == 2, err
    assert len(json.loads(out.read_text())["results"]) == 2


def test_resume_continues_from_the_runs_own_config_and_checks_only_given_options(tiny_run, tmp_path):
    # the run was started with the tiny preset and its own data directory; '--resume' alone continues it
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    code, out, err = run_cli("train", "--run-dir", str(run_dir), "--resume", "--quiet")
    assert code == 0, err
    assert "(step 200)" in out
    code, _, err = run_cli("train", "--run-dir", str(run_dir), "--resume", "--preset", "cpu")
    assert code == 2 and "preset: saved 'tiny', requested 'cpu'" in err and "Traceback" not in err
    code, _, err = run_cli("train", "--run-dir", str(run_dir), "--resume", "--set", "agent.discount=0.9")
    assert code == 2 and "agent.discount: saved 0.99, requested 0.9" in err
    code, out, err = run_cli("train", "--run-dir", str(run_dir), "--resume", "--preset", "tiny", "--seed", "0",
                             "--quiet")
    assert code == 0, err  # options that agree with the saved config are accepted
    code, out, err = run_cli("train", "--run-dir", str(run_dir), "--resume", "--steps", "250", "--quiet")
    assert code == 0 and "(step 250)" in out, err  # --steps extends a finished run
    code, _, err = run_cli("train", "--run-dir", str(run_dir), "--resume", "--steps", "100", "--quiet")
    assert code == 2 and "extended, not shortened" in err and "Traceback" not in err


def test_a_named_inference_preset_sets_the_base_and_flags_override_it(tiny_run, tmp_path):
    import json

    out = tmp_path / "fast.json"
    code, _, err = run_cli("eval", str(tiny_run), "--inference", "fast", "--tau-r", "0.03,0.1", "--episodes", "1",
                           "--out", str(out), "--quiet")
    assert code == 0, err
    settings = [r["settings"] for r in json.loads(out.read_text())["results"]]
    assert [(s["num_candidates"], s["num_return_samples"], s["return_noise"], s["tau_q"], s["tau_r"])
            for s in settings] == [(8, 2, "common", 1.0, 0.03), (8, 2, "common", 1.0, 0.1)]


def test_corrupt_import_and_config_file_are_reported(tmp_path):
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 not really a zip")
    code, _, err = run_cli("data", "import", str(tmp_path / "broken.npz"))
    assert code == 2 and "could not be read" in err and "Traceback" not in err
    (tmp_path / "c.json").write_text("{oops")
    code, _, err = run_cli("train", "--config", str(tmp_path / "c.json"))
    assert code == 2 and "invalid JSON" in err


def test_sweep_records_costs_and_a_rerun_skips_finished_settings(tiny_run, tmp_path):
    import json

    out = tmp_path / "sweep.json"
    code, first, err = run_cli("sweep", str(tiny_run), "--num-candidates", "1,2", "--tau-r", "0,1",
                               "--episodes", "1", "--quiet", "--out", str(out), timeout=300)
    assert code == 0, err
    results = json.loads(out.read_text())["results"]
    assert [(r["settings"]["num_candidates"], r["settings"]["tau_r"]) for r in results] == \
        [(1, 0.0), (1, 1.0), (2, 0.0), (2, 1.0)]
    assert all(r["single_action_ms"] > 0 and r["policy_ms_per_env_step"] > 0 for r in results)
    # Without --seed the episodes are the run's own final-evaluation block (training seed 0 here; seed s
    # gets 20000 + 1000 s), the episodes `evor bench` scores, so its default settings reproduce that score.
    from evor.evaluate import evaluation_seed

    assert {r["seed"] for r in results} == {evaluation_seed(0)} == {20_000}
    # Widen the grid: only the new settings run; the finished ones are skipped and kept as they were.
    code, second, err = run_cli("sweep", str(tiny_run), "--num-candidates", "1,2,3", "--tau-r", "0,1",
                                "--episodes", "1", "--quiet", "--out", str(out), timeout=300)
    assert code == 0, err
    assert second.count("already done, skipped") == 4 and second.count("success") == 2
    again = json.loads(out.read_text())["results"]
    assert again[:4] == results and [r["settings"]["num_candidates"] for r in again[4:]] == [3, 3]


def test_sweeps_writing_one_file_at_once_keep_each_others_results(tiny_run, tmp_path, monkeypatch):
    import evor.sweep
    from evor.data.files import atomic_write_json
    from evor.sweep import load_results, sweep
    from evor.train import load_run

    run = load_run(tiny_run)
    out = tmp_path / "sweep.json"

    def evaluate(settings, episodes, seed, show_progress):
        # another sweep of the same checkpoint finishes a setting while this one is evaluating
        others = load_results(out)
        atomic_write_json(out, {"results": others + [{"key": f"other-{len(others)}", "success_rate": 0.5}]})
        return {"success_rate": 1.0, "return_mean": 0.0, "seconds": 0.0}

    monkeypatch.setattr(run, "evaluate", evaluate)
    monkeypatch.setattr(evor.sweep, "single_action_ms", lambda *args, **kwargs: 1.0)
    sweep(run, {"num_candidates": [1, 2]}, {}, 1, 0, out, show_progress=False)
    results = load_results(out)
    assert [r["key"] for r in results if r["key"].startswith("other")] == ["other-0", "other-2"]
    assert [r["success_rate"] for r in results] == [0.5, 1.0, 0.5, 1.0]  # its own two results, in between


@pytest.mark.parametrize("text", ["{not json", '{"task": "cube-single", "seed": 0}', '{"results": {"a": 1}}', "[1, 2]"])
def test_sweep_rejects_a_file_that_is_not_results_and_leaves_it(tiny_run, tmp_path, text):
    # Damaged JSON, or a JSON file of another kind (a config given as --out by mistake): named, and not
    # written over with results.
    (tmp_path / "sweep.json").write_text(text)
    code, _, err = run_cli("sweep", str(tiny_run), "--episodes", "1", "--out", str(tmp_path / "sweep.json"))
    assert code == 2 and "not a results file" in err and "Traceback" not in err
    assert (tmp_path / "sweep.json").read_text() == text


def test_diagnose_scores_the_return_distribution_of_a_run(tiny_run, tmp_path):
    import json

    out = tmp_path / "diag.json"
    code, text, err = run_cli("diagnose", str(tiny_run), "--transitions", "64", "--samples", "8", "--episodes", "2",
                              "--max-tail", "1", "--ranking-states", "8", "--out", str(out), timeout=300)
    assert code == 0, err
    report = json.loads(out.read_text())
    v = report["validation"]
    assert v["transitions"] == 64 and v["samples_per_transition"] == 16  # 8 samples x 2 ensemble members
    assert abs(sum(v["pit_histogram"]) - 1) < 1e-9 and set(v["coverage"]) == {"50", "80", "90"}
    init = report["initial_states"]
    assert len(init["per_episode_predicted"]) == len(init["per_episode_achieved"]) == 2
    assert "PIT histogram" in text and "tilt at tau_Q" in text
    # a tilt with tau_Q > 0 never reads below the mean of the samples it tilts (Jensen), in any model
    assert v["tilt"]["tau_q"] == 0.05 and v["tilt"]["q_star_all_samples_mean"] >= v["model_mean"] - 1e-3
    ranking = report["ranking"]
    assert ranking["states"] == 8 and ranking["candidates"] == ranking["settings"]["num_candidates"] > 1
    assert ranking["reference_readouts"] == 16
    assert 0 <= ranking["top1"] <= 1 and ranking["regret"] >= 0 and ranking["noise"] > 0  # a flow samples
    assert f"ranking of {ranking['candidates']} candidates at 8 states" in text


def test_ranking_agreement_benchmark_compares_runs_on_shared_candidates(tiny_run):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "ranking_agreement.py"
    done = subprocess.run([sys.executable, str(script), str(tiny_run), str(tiny_run), "--states", "4",
                           "--readouts", "3"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("one readout vs its own average") == 2 and "[0] vs [1] averages: Spearman" in done.stdout


def test_a_readout_from_more_return_samples_is_less_noisy_by_the_square_root(tiny_run):
    # At tau_Q = inf a flow's readout is the mean of its M return samples (fresh per candidate), so its
    # spread over independent readouts falls as 1/sqrt(M): a quarter from M = 1 to M = 16. The
    # benchmark's --num-return-samples reads the runs this way.
    import jax
    import jax.numpy as jnp
    import numpy as np

    from evor.diagnostics import acting_readouts, draw_candidates
    from evor.train import load_run

    run = load_run(tiny_run)
    obs = jnp.asarray(np.random.default_rng(0).normal(size=(4, run.agent.observation_dim)), jnp.float32)
    obs_n, candidates = draw_candidates(run, obs, jax.random.PRNGKey(0))
    spread = {m: float(np.std(acting_readouts(run, obs_n, candidates, jax.random.PRNGKey(1), 64,
                                              run.settings(num_return_samples=m, tau_q=float("inf"))), axis=0).mean())
              for m in (1, 16)}
    assert spread[1] > 0 and spread[16] / spread[1] == pytest.approx(0.25, rel=0.2)
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "ranking_agreement.py"
    done = subprocess.run([sys.executable, str(script), str(tiny_run), str(tiny_run), "--states", "4", "--readouts",
                           "3", "--num-return-samples", "4", "--tau-q", "inf"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and "read at num_return_samples=4, tau_q=inf" in done.stdout, done.stderr


def test_diagnose_rejects_a_baseline_run(tmp_path_factory):
    from evor.data.generate import generate_dataset
    from evor.train import make_config, train

    base = tmp_path_factory.mktemp("diag")
    generate_dataset("cube-single-play-v0", out_dir=base / "data", episodes=1, workers=1, show_progress=False)
    config = make_config("tiny", task="cube-single-play-singletask-task1-v0", data_dir=str(base / "data"),
                         eval_every=0, agent_name="ifql", total_steps=50, log_every=50, checkpoint_every=50)
    train(config, base / "run", show_progress=False)
    code, _, err = run_cli("diagnose", str(base / "run"), "--episodes", "0")
    assert code == 2 and "needs a return-distribution agent" in err and "Traceback" not in err
