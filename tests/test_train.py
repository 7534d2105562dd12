"""Training runs on real (tiny) OGBench data: save, resume, load, act, evaluate."""

import dataclasses
import json
import os
import re
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

from evor.agents.evor import EVORConfig, InferenceSettings
from evor.data.generate import machine_description
from evor.errors import ConfigError, DataError, EvorError
from evor.reproduce import diff_runs
from evor.train import load_run, make_config, resume_config, train

TASK = "cube-single-play-singletask-task1-v0"


def _config(cube_single_data, **kw):
    return make_config("tiny", task=TASK, data_dir=str(cube_single_data), eval_every=0, **kw)


def _leaves(state):
    return [np.asarray(x) for x in jax.tree.leaves(state)]


def test_resumed_run_equals_the_uninterrupted_one(cube_single_data, tmp_path):
    config = _config(cube_single_data)
    whole = train(config, tmp_path / "whole", show_progress=False)
    train(config, tmp_path / "split", show_progress=False, stop_after=100)
    resumed = train(config, tmp_path / "split", resume=True, show_progress=False)
    assert whole.step == resumed.step == 200
    for a, b in zip(_leaves(whole.state), _leaves(resumed.state)):
        np.testing.assert_array_equal(a, b)
    rows = [json.loads(line) for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [50, 100, 150, 200]
    # and `evor diff` says so from the two run directories' records alone
    found = diff_runs(tmp_path / "split", tmp_path / "whole")
    assert found.reproduces and found.compared["metrics"] > 0 and not found.only_one_side


def test_a_finished_run_extended_to_more_steps_equals_one_trained_that_long(cube_single_data, tmp_path):
    # total_steps and the evaluation and checkpoint schedule may change on resume because none of them
    # changes what is learned: 200 steps, then extended to 300 with an evaluation at 300 and another
    # checkpoint cadence, must be bitwise the run trained for 300 steps from the start
    long = train(_config(cube_single_data, total_steps=300), tmp_path / "long", show_progress=False)
    train(_config(cube_single_data), tmp_path / "short", show_progress=False)
    schedule = make_config("tiny", task=TASK, data_dir=str(cube_single_data), total_steps=300, eval_every=300,
                           checkpoint_every=150)
    extended = train(schedule, tmp_path / "short", resume=True, show_progress=False)
    assert long.step == extended.step == 300
    for a, b in zip(_leaves(long.state), _leaves(extended.state)):
        np.testing.assert_array_equal(a, b)
    saved = json.loads((tmp_path / "short" / "config.json").read_text())
    assert (saved["total_steps"], saved["eval_every"], saved["checkpoint_every"]) == (300, 300, 150)
    rows = [json.loads(line) for line in (tmp_path / "short" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [50, 100, 150, 200, 250, 300] and "eval_success_rate" in rows[-1]
    # `evor diff` agrees: every value both logged is equal; the schedule and the extra evaluation are notes
    found = diff_runs(tmp_path / "short", tmp_path / "long")
    assert found.reproduces, found.differences
    assert found.only_one_side == ["metrics: eval_return_mean missing from the record at step 300",
                                   "metrics: eval_success_rate missing from the record at step 300"]
    assert any(note.startswith("config checkpoint_every") for note in found.notes)
    # a run is extended, never cut back below what it has trained; anything else that differs is refused
    with pytest.raises(EvorError, match="already trained 300 steps.*extended, not shortened"):
        train(_config(cube_single_data, total_steps=250), tmp_path / "short", resume=True, show_progress=False)
    with pytest.raises(EvorError, match="batch_size: saved 32, requested 64"):
        train(_config(cube_single_data, total_steps=400, batch_size=64), tmp_path / "short", resume=True, show_progress=False)


def test_keep_checkpoints_every_spares_its_multiples_from_pruning(cube_single_data, tmp_path):
    # the newest three are kept as always, plus every multiple of keep_checkpoints_every, so a long run's
    # curve can be evaluated afterwards; the setting is part of the schedule, so a resume may add it
    from evor.checkpoints import checkpoint_step, checkpoints

    train(_config(cube_single_data, total_steps=200, checkpoint_every=50), tmp_path / "run", show_progress=False)
    assert [checkpoint_step(p) for p in checkpoints(tmp_path / "run")] == [100, 150, 200]
    train(_config(cube_single_data, total_steps=400, checkpoint_every=50, keep_checkpoints_every=100), tmp_path / "run",
          resume=True, show_progress=False)
    assert [checkpoint_step(p) for p in checkpoints(tmp_path / "run")] == [100, 200, 300, 350, 400]
    with pytest.raises(ConfigError, match="keep_checkpoints_every \\(75\\) must be 0 or a multiple of checkpoint_every"):
        _config(cube_single_data, checkpoint_every=50, keep_checkpoints_every=75).validate()


def test_the_source_revision_names_the_commit_and_uncommitted_changes(tmp_path):
    import subprocess

    from evor.data.generate import source_revision

    assert source_revision(tmp_path) == "not a git checkout"
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(git + ["init", "-q"], check=True)
    (tmp_path / "a.py").write_text("x = 1\n")
    subprocess.run(git + ["add", "a.py"], check=True)
    subprocess.run(git + ["commit", "-qm", "a"], check=True)
    commit = subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert source_revision(tmp_path) == commit
    (tmp_path / "a.py").write_text("x = 2\n")
    assert source_revision(tmp_path) == commit + "+dirty"


def test_a_damaged_dataset_sidecar_stops_training_before_any_run_file(cube_single_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(cube_single_data, data)
    sidecar = data / "cube-single-play-v0.json"
    sidecar.write_text(sidecar.read_text()[:40])  # cut short, as by a full disk
    with pytest.raises(DataError, match="Cannot read the dataset sidecar") as caught:
        train(_config(data), tmp_path / "run", show_progress=False)
    assert str(sidecar) in str(caught.value)
    assert not (tmp_path / "run" / "config.json").exists() and not (tmp_path / "run" / "versions.json").exists()


def test_run_directory_records_config_versions_and_metrics(cube_single_data, tmp_path):
    train(_config(cube_single_data), tmp_path / "run", show_progress=False)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    versions = json.loads((tmp_path / "run" / "versions.json").read_text())
    assert config["task"] == TASK and config["preset"] == "tiny"
    # every agent field and inference setting is written, not only those the preset or user set, so
    # the run keeps its meaning when a library default changes
    assert set(config["agent"]) == {f.name for f in dataclasses.fields(EVORConfig)}
    assert set(config["inference"]) == {f.name for f in dataclasses.fields(InferenceSettings)}
    assert config["agent"]["hidden_dims"] == [32, 32] and config["inference"]["num_candidates"] == 4
    assert versions["versions"]["ogbench"] == "1.2.2" and versions["data_sidecar"]["train_episodes"] == 2
    assert versions["machine"]["cpu"] and versions["machine"] == machine_description()
    cpuinfo = Path("/proc/cpuinfo")  # x86 Linux names the exact part: two "AMD EPYC" CPUs can differ
    if cpuinfo.exists() and "cpu family" in cpuinfo.read_text():
        assert re.fullmatch(r"family \S+ model \S+ stepping \S+ microcode \S+", versions["machine"]["cpu_id"])
    digests = versions["train_data"]["sha256"], versions["val_data"]["sha256"]
    assert all(re.fullmatch(r"[0-9a-f]{64}", d) for d in digests) and digests[0] != digests[1]
    assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?|not a git checkout", versions["versions"]["evor_source"])
    # the cores and XLA flags the run had, on which its results' last bits depend (evaluate.compute_context)
    assert versions["compute"] == {"backend": "cpu", "cpu_cores": len(os.sched_getaffinity(0)),
                                   "xla_flags": os.environ.get("XLA_FLAGS", "")}
    header = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0]
    assert "val_return_loss" in header and "steps_per_second" in header


def test_loaded_run_acts_with_any_inference_setting_and_evaluates(cube_single_data, tmp_path):
    train(_config(cube_single_data), tmp_path / "run", show_progress=False)
    run = load_run(tmp_path / "run")
    obs = np.zeros((3, 28), np.float32)
    for n in (1, 3):
        settings = run.settings(num_candidates=n, num_return_samples=2, tau_q=0.5, tau_r=0.0)
        actions = np.asarray(run.policy(settings)(obs, jax.random.PRNGKey(0)))
        assert actions.shape == (3, 25) and np.abs(actions).max() <= 1.0  # EVOR's default: chunks of 5 actions
    result = run.evaluate(run.settings(num_candidates=2), num_episodes=2)
    assert result["episodes"] == 2 and 0.0 <= result["success_rate"] <= 1.0
    assert result["episode_length_mean"] == 200  # cube-single: 200 steps unless solved
    # versions.json rebuilds the agent (the data's shapes and reward bounds): a damaged one is named
    versions = tmp_path / "run" / "versions.json"
    good = versions.read_text()
    for damaged, message in [('{"train_data": {', "versions.json is unreadable"), ("[1]", "not a run's versions"),
                             ('{"train_data": {"observation_dim": 28}}', "train_data gives observation_dim, action_dim"),
                             (None, "has no versions.json")]:
        versions.unlink() if damaged is None else versions.write_text(damaged)
        with pytest.raises(EvorError, match=message):
            load_run(tmp_path / "run")
    versions.write_text(good)
    assert load_run(tmp_path / "run").agent.config == run.agent.config


def test_existing_run_is_not_overwritten_and_bad_configs_are_rejected(cube_single_data, tmp_path, monkeypatch):
    single = {"agent": {"horizon": 1}}  # single-step EVOR, what a config.json without `horizon` means
    train(_config(cube_single_data, **single), tmp_path / "run", show_progress=False)
    with pytest.raises(EvorError, match="already holds a run"):
        train(_config(cube_single_data, **single), tmp_path / "run", show_progress=False)
    with pytest.raises(EvorError, match="differs.*seed: saved 0, requested 5"):
        train(_config(cube_single_data, seed=5, **single), tmp_path / "run", resume=True, show_progress=False)
    # a config.json written before EVOR had a chunk length (`horizon`, default 1 = the old behaviour)
    # resumes; one without a field whose meaning changed since (target_horizon) is refused
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    del saved["agent"]["horizon"]
    (tmp_path / "run" / "config.json").write_text(json.dumps(saved))
    train(_config(cube_single_data, **single), tmp_path / "run", resume=True, show_progress=False)
    with pytest.raises(EvorError, match="agent.horizon: saved 1, requested 5"):  # not under today's default
        train(_config(cube_single_data), tmp_path / "run", resume=True, show_progress=False)
    # one written before the cut-off table existed trained Monte-Carlo targets every row: that is what it means
    with_table = json.loads(json.dumps(saved))
    for field in ("cutoff_returns", "cutoff_samples", "cutoff_refresh_every"):
        del saved["agent"][field]
    (tmp_path / "run" / "config.json").write_text(json.dumps(saved))
    with pytest.raises(EvorError, match="cutoff_returns: saved 'every_row', requested 'table'"):
        train(_config(cube_single_data, **single), tmp_path / "run", resume=True, show_progress=False)
    assert load_run(tmp_path / "run").agent.config.cutoff_returns == "every_row"
    saved = with_table
    del saved["agent"]["target_horizon"]
    (tmp_path / "run" / "config.json").write_text(json.dumps(saved))
    with pytest.raises(EvorError, match="target_horizon: saved '\\(absent\\)', requested 0"):
        train(_config(cube_single_data, **single), tmp_path / "run", resume=True, show_progress=False)
    # a damaged config.json is named, not a raw JSON traceback, and nothing in the run is touched
    (tmp_path / "run" / "config.json").write_text('{"agent_name": "evor", "agent": {')  # cut short
    kept = sorted(p.name for p in (tmp_path / "run").rglob("*"))
    for read in (lambda: train(_config(cube_single_data, **single), tmp_path / "run", resume=True, show_progress=False),
                 lambda: load_run(tmp_path / "run"), lambda: resume_config(tmp_path / "run", {})):
        with pytest.raises(EvorError, match="config.json is unreadable"):
            read()
    assert sorted(p.name for p in (tmp_path / "run").rglob("*")) == kept
    (tmp_path / "run" / "config.json").write_text("[1, 2]")
    with pytest.raises(EvorError, match="not a run's config"):
        load_run(tmp_path / "run")
    with pytest.raises(ConfigError, match="multiple of log_every"):
        _config(cube_single_data, total_steps=125)
    with pytest.raises(ConfigError, match="Unknown agent config field"):
        make_config("tiny", agent={"hiden_dims": [3]})
    with pytest.raises(ConfigError, match="Unknown preset"):
        make_config("gpu-huge")
    import evor.config

    real = evor.config.load_preset
    monkeypatch.setattr(evor.config, "load_preset", lambda name: {**real("tiny"), "agent": {"hiden_dims": [8]}})
    with pytest.raises(ConfigError, match="sets agent field\\(s\\) that no agent has: hiden_dims"):
        make_config("tiny")
    with pytest.raises(ConfigError, match="Unknown agent"):
        make_config("tiny", agent_name="sac")


@pytest.mark.parametrize("agent, overrides, action_dim", [
    ("evor", {}, 25), ("evor", {"agent": {"horizon": 1}}, 5),
    ("qc", {"agent": {"horizon": 1}}, 5), ("qc", {"agent": {"horizon": 5}}, 25),
    ("fql", {}, 5), ("ifql", {}, 5)])
def test_every_agent_trains_saves_loads_and_acts(cube_single_data, tmp_path, agent, overrides, action_dim):
    config = make_config("tiny", task=TASK, data_dir=str(cube_single_data), agent_name=agent, eval_every=0, **overrides)
    trained = train(config, tmp_path / "run", show_progress=False)
    run = load_run(tmp_path / "run")
    for a, b in zip(_leaves(trained.state), _leaves(run.state)):
        np.testing.assert_array_equal(a, b)
    actions = np.asarray(run.policy(run.settings())(np.zeros((2, 28), np.float32), jax.random.PRNGKey(0)))
    assert actions.shape == (2, action_dim) and np.abs(actions).max() <= 1.0
    result = run.evaluate(run.settings(), num_episodes=1)
    assert result["episode_length_mean"] == 200


def test_fql_alpha_follows_the_environment_family(cube_single_data):
    assert make_config("tiny", task="puzzle-3x3-play-singletask-task4-v0", agent_name="fql").agent["alpha"] == 1000.0
    assert make_config("tiny", task=TASK, agent_name="fql").agent["alpha"] == 300.0
    assert make_config("tiny", task=TASK, agent_name="fql", agent={"alpha": 5.0}).agent["alpha"] == 5.0
    # every family of the FQL paper gets its value; long mazes their discount
    for task, alpha, discount in (("scene-play-singletask-task2-v0", 300.0, None),
                                  ("puzzle-4x4-play-singletask-task4-v0", 1000.0, None),
                                  ("cube-double-play-singletask-task2-v0", 300.0, None),
                                  ("antmaze-large-navigate-singletask-v0", 10.0, None),
                                  ("antmaze-giant-navigate-singletask-v0", 10.0, 0.995),
                                  ("humanoidmaze-medium-navigate-singletask-v0", 30.0, 0.995),
                                  ("antsoccer-arena-navigate-singletask-v0", 10.0, None)):
        agent = make_config("tiny", task=task, agent_name="fql").agent
        assert agent["alpha"] == alpha and agent.get("discount") == discount, (task, agent)
    assert make_config("tiny", task="humanoidmaze-medium-navigate-singletask-v0", agent_name="fql",
                       agent={"discount": 0.9}).agent["discount"] == 0.9


@pytest.mark.parametrize("mode", ["vmap", "map"])
def test_seeds_trained_together_match_the_seeds_trained_alone(cube_single_data, tmp_path, mode):
    from evor.train import train_seeds

    config = _config(cube_single_data)
    together = train_seeds(config, [3, 4], [tmp_path / "s3", tmp_path / "s4"], show_progress=False, mode=mode)
    for seed, run in zip((3, 4), together):
        alone = train(make_config("tiny", task=TASK, data_dir=str(cube_single_data), eval_every=0, seed=seed),
                      tmp_path / f"alone{seed}", show_progress=False)
        # vmap turns each matmul into a batched one, so equality is up to float rounding, not bitwise.
        # (lax.map runs the same per-seed program, but XLA may fuse it differently; same tolerance.)
        for a, b in zip(_leaves(alone.state), _leaves(run.state)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
        assert json.loads((tmp_path / f"s{seed}" / "config.json").read_text())["seed"] == seed
        rows = [json.loads(line) for line in (tmp_path / f"s{seed}" / "metrics.jsonl").read_text().splitlines()]
        alone_rows = [json.loads(line) for line in (tmp_path / f"alone{seed}" / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows] == [50, 100, 150, 200]
        np.testing.assert_allclose([r["val_return_loss"] for r in rows], [r["val_return_loss"] for r in alone_rows],
                                   rtol=1e-3)
    a, b = _leaves(together[0].state), _leaves(together[1].state)
    assert any(not np.allclose(x, y) for x, y in zip(a, b)), "two seeds must not train identically"


def test_vmapped_seeds_resume_from_the_newest_common_checkpoint(cube_single_data, tmp_path):
    from evor.train import checkpoints, train_seeds

    config = _config(cube_single_data)
    dirs = [tmp_path / "a", tmp_path / "b"]
    whole = train_seeds(config, [0, 1], [tmp_path / "w0", tmp_path / "w1"], show_progress=False)
    train_seeds(config, [0, 1], dirs, show_progress=False, stop_after=200)
    # As if killed between the two seeds' writes at step 200: seed 1 only reached step 100.
    checkpoints(dirs[1])[-1].unlink()
    resumed = train_seeds(config, [0, 1], dirs, resume=True, show_progress=False)
    for w, r in zip(whole, resumed):
        assert r.step == 200
        for a, b in zip(_leaves(w.state), _leaves(r.state)):
            np.testing.assert_array_equal(a, b)
    rows = [json.loads(line) for line in (dirs[0] / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [50, 100, 150, 200]


def test_a_deadline_stops_after_one_chunk_with_a_checkpoint_that_resumes_bitwise(cube_single_data, tmp_path):
    import time

    from evor.checkpoints import checkpoint_step
    from evor.train import checkpoints, train_seeds

    config = _config(cube_single_data)
    assert config.checkpoint_every % config.log_every == 0 and config.checkpoint_every > config.log_every
    whole = train(config, tmp_path / "whole", show_progress=False)
    stopped = train_seeds(config, [config.seed], [tmp_path / "boxed"], show_progress=False, deadline=time.time())
    # Past the deadline from the start: one chunk, saved although no checkpoint was due at that step.
    assert stopped[0].step == config.log_every
    assert [checkpoint_step(p) for p in checkpoints(tmp_path / "boxed")] == [config.log_every]
    resumed = train(config, tmp_path / "boxed", resume=True, show_progress=False)
    assert resumed.step == whole.step
    for a, b in zip(_leaves(whole.state), _leaves(resumed.state)):
        np.testing.assert_array_equal(a, b)


def test_vectorised_evaluation_on_ogbench_equals_sequential(cube_single_data, tmp_path):
    train(_config(cube_single_data), tmp_path / "run", show_progress=False)
    run = load_run(tmp_path / "run")
    settings = run.settings()
    sequential = run.evaluate(settings, 4, seed=3, pool_size=1, workers=0)
    vectorised = run.evaluate(settings, 4, seed=3, pool_size=4, workers=2)
    assert vectorised["workers"] == 2 and sequential["workers"] == 0
    assert vectorised["per_episode_success"] == sequential["per_episode_success"]
    assert vectorised["per_episode_return"] == sequential["per_episode_return"]  # bitwise: rows are mapped
