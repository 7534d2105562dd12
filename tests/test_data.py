"""Dataset generation, loading through OGBench, import, and rejection of bad input."""

import hashlib
import json
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest

from evor.data import generate as generate_module
from evor.data.dataset import Dataset, import_dataset, list_datasets, load_task, read_sidecar, save_dataset
from evor.data.files import dataset_files, is_validation_file
from evor.data.generate import generate_dataset
from evor.data.registry import RECIPES, parse_task_name
from evor.errors import DataError

FAMILY_SAMPLES = ["cube-single-play-v0", "cube-double-play-v0", "cube-triple-play-v0", "scene-play-v0",
                  "puzzle-3x3-play-v0", "puzzle-4x4-play-v0", "pointmaze-medium-navigate-v0",
                  "pointmaze-large-navigate-v0", "pointmaze-giant-navigate-v0", "pointmaze-teleport-navigate-v0"]


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def cube_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cube")
    generate_dataset("cube-single-play-v0", out_dir=out, episodes=3, workers=1, seed=7, show_progress=False)
    return out


@pytest.mark.parametrize("name", FAMILY_SAMPLES)
def test_tiny_generation_has_ogbench_keys_dtypes_and_shapes(tmp_path, name):
    recipe = RECIPES[name]
    paths = generate_dataset(name, out_dir=tmp_path, episodes=1, workers=1, show_progress=False)
    for split, episodes in (("train", 1), ("val", 1)):
        with np.load(paths[split]) as f:
            steps = episodes * recipe.episode_steps
            assert f["observations"].dtype == np.float32 and f["observations"].shape[0] == steps
            assert f["actions"].dtype == np.float32 and f["actions"].shape[0] == steps
            assert f["terminals"].dtype == bool and f["terminals"].sum() == episodes and f["terminals"][-1]
            assert f["qpos"].shape[0] == steps and f["qvel"].shape[0] == steps
            assert np.abs(f["actions"]).max() <= 1.0
            assert np.isfinite(f["observations"]).all()
            has_buttons = recipe.family in ("scene", "puzzle")
            assert ("button_states" in f.files) == has_buttons
            if has_buttons:
                assert f["button_states"].dtype == np.int64
    sidecar = json.loads(paths["sidecar"].read_text())
    assert sidecar["seed"] == 0 and sidecar["train_episodes"] == 1 and sidecar["val_episodes"] == 1
    assert sidecar["versions"]["ogbench"] == "1.2.2" and sidecar["versions"]["mujoco"] == "4.0.0"
    assert sidecar["generator_version"] == generate_module.GENERATOR_VERSION
    # the CPU it ran on: regenerating a manipulation dataset has given other last bits on other machines
    assert sidecar["machine"] == generate_module.machine_description() and sidecar["machine"]["cpu"]


def test_same_seed_gives_byte_identical_files_whatever_the_worker_count(tmp_path, cube_dir):
    paths = generate_dataset("cube-single-play-v0", out_dir=tmp_path, episodes=3, workers=2, seed=7,
                             show_progress=False)
    assert _digest(paths["train"]) == _digest(cube_dir / "cube-single-play-v0.npz")
    assert _digest(paths["val"]) == _digest(cube_dir / "cube-single-play-v0-val.npz")


def test_different_seeds_give_different_data(tmp_path, cube_dir):
    paths = generate_dataset("cube-single-play-v0", out_dir=tmp_path, episodes=3, workers=1, seed=8,
                             show_progress=False)
    assert _digest(paths["train"]) != _digest(cube_dir / "cube-single-play-v0.npz")


def test_files_load_through_unmodified_ogbench_with_rewards_and_masks(cube_dir):
    import ogbench

    env, train, val = ogbench.make_env_and_datasets("cube-single-play-singletask-task1-v0",
                                                    dataset_path=str(cube_dir / "cube-single-play-v0.npz"))
    assert train["observations"].shape == (3 * 1000, 28) and val["observations"].shape == (1000, 28)
    assert set(np.unique(train["rewards"])) <= {-1.0, 0.0}
    np.testing.assert_array_equal(train["masks"], 1.0 - (train["rewards"] == 0.0))
    # evor's own loader gives the same transitions
    _, ours, _ = load_task("cube-single-play-singletask-task1-v0", data_dir=cube_dir, env=False)
    np.testing.assert_array_equal(ours.rewards, train["rewards"])
    np.testing.assert_array_equal(ours.masks, train["masks"])
    assert ours.num_trajectories == 3


def test_missing_data_names_the_generate_command(tmp_path):
    with pytest.raises(DataError, match="evor data generate cube-double-play-v0"):
        load_task("cube-double-play-singletask-task2-v0", data_dir=tmp_path)


def test_locomotion_datasets_needing_expert_policies_say_so(tmp_path):
    with pytest.raises(DataError, match="expert locomotion policies"):
        load_task("antmaze-large-navigate-singletask-v0", data_dir=tmp_path)
    with pytest.raises(DataError, match="expert locomotion policies"):
        generate_dataset("humanoidmaze-medium-navigate-v0", out_dir=tmp_path)


def test_unknown_dataset_name_is_rejected(tmp_path):
    with pytest.raises(DataError, match="Unknown dataset 'cube-sextuple-play-v0'"):
        generate_dataset("cube-sextuple-play-v0", out_dir=tmp_path)
    with pytest.raises(DataError, match="Cannot read task name"):
        parse_task_name("not a task")


def test_task_names_parse_to_datasets():
    parsed = parse_task_name("puzzle-3x3-play-singletask-task4-v0")
    assert parsed.dataset == "puzzle-3x3-play-v0" and parsed.task_id == 4
    assert parse_task_name("scene-play-v0").task == "scene-play-singletask-v0"


# --------------------------------------------------------------------------- bad files


def _with_changes(arrays, changes):
    """A copy of `arrays` with keys replaced, or removed where the change is None."""
    out = dict(arrays)
    for key, value in changes.items():
        if value is None:
            out.pop(key)
        else:
            out[key] = value
    return out


def _copy_with(cube_dir, tmp_path, **changes):
    with np.load(cube_dir / "cube-single-play-v0.npz") as f:
        arrays = _with_changes({k: f[k] for k in f.files}, changes)
    np.savez(tmp_path / "cube-single-play-v0.npz", **arrays)
    (tmp_path / "cube-single-play-v0-val.npz").write_bytes((cube_dir / "cube-single-play-v0-val.npz").read_bytes())


def test_truncated_file_is_reported_with_its_path(cube_dir, tmp_path):
    data = (cube_dir / "cube-single-play-v0.npz").read_bytes()
    (tmp_path / "cube-single-play-v0.npz").write_bytes(data[: len(data) // 2])
    (tmp_path / "cube-single-play-v0-val.npz").write_bytes((cube_dir / "cube-single-play-v0-val.npz").read_bytes())
    with pytest.raises(DataError, match=r"cube-single-play-v0\.npz.*(truncated|corrupt)"):
        load_task("cube-single-play-v0", data_dir=tmp_path)


@pytest.mark.parametrize("change, message", [
    (dict(actions=None), "key 'actions' is missing"),
    (dict(qpos=None), "key 'qpos' is missing"),
    (dict(actions=np.zeros((10, 5), np.float32)), "key 'actions' has shape"),
    (dict(observations=np.array(["x"] * 4004)), "key 'observations' has dtype"),
])
def test_malformed_ogbench_files_are_rejected_by_name(cube_dir, tmp_path, change, message):
    _copy_with(cube_dir, tmp_path, **change)
    with pytest.raises(DataError, match=message):
        load_task("cube-single-play-v0", data_dir=tmp_path)


def test_nan_and_out_of_bounds_actions_are_rejected(cube_dir, tmp_path):
    with np.load(cube_dir / "cube-single-play-v0.npz") as f:
        obs, actions = f["observations"].copy(), f["actions"].copy()
    obs[5, 3] = np.nan
    _copy_with(cube_dir, tmp_path, observations=obs)
    with pytest.raises(DataError, match="key 'observations' has 1 non-finite"):
        load_task("cube-single-play-v0", data_dir=tmp_path)
    actions[9, 1] = 3.0
    _copy_with(cube_dir, tmp_path, actions=actions)
    with pytest.raises(DataError, match=r"'actions' has values outside \[-1, 1\]"):
        load_task("cube-single-play-v0", data_dir=tmp_path)


def test_interrupted_write_leaves_no_final_file(tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez_compressed", interrupted)
    with pytest.raises(KeyboardInterrupt):
        generate_dataset("pointmaze-medium-navigate-v0", out_dir=tmp_path, episodes=1, workers=1,
                         show_progress=False)
    assert list(tmp_path.iterdir()) == []


# Started through a trampoline that gives the child Python's default Ctrl-C: a background job of a
# non-interactive shell (how CI is often launched) inherits SIGINT *ignored*, and then the signal
# below would do nothing and the test would wait out its timeout.
_WITH_DEFAULT_SIGINT = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                        "os.execv(sys.executable, [sys.executable] + sys.argv[1:])")


@pytest.mark.parametrize("delay", [0.3, 0.8, 1.5, 3.0, 6.0])
def test_interrupted_generation_subprocess_leaves_nothing_behind(tmp_path, delay):
    # A real SIGINT at several moments: while the CLI, MuJoCo and dm_control start up (where an
    # interrupt used to surface as "ImportError: initialization failed", or vanish so that the run
    # went on) and while episodes are being generated.
    import signal
    import time

    proc = subprocess.Popen([sys.executable, "-c", _WITH_DEFAULT_SIGINT, "-m", "evor.cli", "data", "generate",
                             "cube-single-play-v0", "--episodes", "50", "--workers", "1", "--out", str(tmp_path),
                             "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    # 130, or death by SIGINT itself: CPython exits that way when an interrupt went through one of its
    # run-a-string entry points during start-up, even though evor handled it. A shell reports 130 for both.
    assert proc.returncode in (130, -signal.SIGINT), err
    assert b"Traceback" not in err and b"evor: interrupted" in err, err
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == []  # no final file
    partial = tmp_path / ".cube-single-play-v0.partial"
    if partial.exists():  # interrupted after some episodes: they are kept, whole, for the next call
        kept = {p.name for p in partial.iterdir()}
        assert "request.json" in kept and all(k.startswith("shard-") and k.endswith(".npz")
                                              for k in kept - {"request.json"}), kept
        assert b"the same command resumes" in err, err


def test_an_interrupt_while_the_episode_runner_starts_is_held_until_its_start_up_ends(monkeypatch):
    # The plan oracles import SciPy after the environment is built; a Ctrl-C inside a compiled module's
    # initialisation surfaced as "ImportError: initialization failed" (CI, SIGINT 1.5 s after launch).
    # Here the Ctrl-C comes just before the oracles are set up: it must wait for the whole start-up.
    import os
    import signal
    import time

    set_up = []
    init_oracles = generate_module._EpisodeRunner._init_oracles

    def interrupted_init_oracles(self):
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(50):  # Python runs signal handlers between bytecodes of the main thread
            time.sleep(0.001)
        init_oracles(self)
        set_up.append(True)

    monkeypatch.setattr(generate_module._EpisodeRunner, "_init_oracles", interrupted_init_oracles)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # CI may start us with SIGINT ignored
    try:
        with pytest.raises(KeyboardInterrupt):
            generate_module._EpisodeRunner(RECIPES["cube-single-play-v0"])
    finally:
        signal.signal(signal.SIGINT, previous)
    assert set_up == [True]


_RECORD_EPISODE = generate_module._EpisodeRunner.run


def _interrupt_after(monkeypatch, episodes):
    """Make the episode runner raise Ctrl-C once it has recorded `episodes` episodes; return its call count."""
    calls = {"n": 0}
    run = _RECORD_EPISODE

    def counted(self, seed):
        if calls["n"] == episodes:
            raise KeyboardInterrupt
        calls["n"] += 1
        return run(self, seed)

    monkeypatch.setattr(generate_module._EpisodeRunner, "run", counted)
    return calls


def test_interrupted_generation_resumes_to_byte_identical_files(tmp_path, monkeypatch):
    name, options = "pointmaze-medium-navigate-v0", dict(episodes=4, workers=1, seed=3, show_progress=False)
    whole = generate_dataset(name, out_dir=tmp_path / "whole", **options)
    monkeypatch.setattr(generate_module, "SHARD_EPISODES", 2)
    _interrupt_after(monkeypatch, 3)  # one full shard of 2, and 1 pending episode flushed on the interrupt
    with pytest.raises(KeyboardInterrupt):
        generate_dataset(name, out_dir=tmp_path / "resumed", **options)
    partial = tmp_path / "resumed" / f".{name}.partial"
    assert sorted(p.name for p in partial.iterdir()) == ["request.json", "shard-00000.npz", "shard-00001.npz"]
    assert not (tmp_path / "resumed" / f"{name}.npz").exists()

    calls = _interrupt_after(monkeypatch, 100)
    resumed = generate_dataset(name, out_dir=tmp_path / "resumed", **options)
    assert calls["n"] == 2  # 5 episodes (4 train, 1 val), 3 of them saved: only the other 2 ran again
    for split in ("train", "val"):
        assert _digest(resumed[split]) == _digest(whole[split])
    assert json.loads(resumed["sidecar"].read_text())["resumed_episodes"] == 3
    assert not partial.exists()


def test_a_partial_run_with_other_options_is_refused_and_kept(tmp_path, monkeypatch):
    name = "pointmaze-medium-navigate-v0"
    monkeypatch.setattr(generate_module, "SHARD_EPISODES", 1)
    _interrupt_after(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        generate_dataset(name, out_dir=tmp_path, episodes=2, workers=1, seed=0, show_progress=False)
    with pytest.raises(DataError, match=r"other options \(seed 0 there, 1 now\)"):
        generate_dataset(name, out_dir=tmp_path, episodes=2, workers=1, seed=1, show_progress=False)
    assert (tmp_path / f".{name}.partial" / "shard-00000.npz").exists()


# --------------------------------------------------------------------------- a user's own data


def _d4rl_arrays(n=40):
    rng = np.random.default_rng(0)
    terminals = np.zeros(n, bool)
    timeouts = np.zeros(n, bool)
    terminals[14] = True  # episode 1 truly ends at row 14
    timeouts[29] = True  # episode 2 is cut at row 29; episode 3 runs to the end of the table
    return {"observations": rng.standard_normal((n, 3)).astype(np.float32),
            "actions": rng.uniform(-1, 1, (n, 2)).astype(np.float32),
            "rewards": rng.standard_normal(n).astype(np.float32), "terminals": terminals, "timeouts": timeouts}


def test_import_d4rl_npz_without_next_observations(tmp_path):
    arrays = _d4rl_arrays()
    np.savez(tmp_path / "mine.npz", **arrays)
    d = import_dataset(tmp_path / "mine.npz")
    # the cut step 29 and the table's last row have no recorded next state and are dropped
    assert len(d) == 38
    np.testing.assert_array_equal(d.next_observations[0], arrays["observations"][1])
    assert d.masks[14] == 0 and d.masks.sum() == 37
    assert d.ends[14] == 1 and d.ends[28] == 1 and d.ends[-1] == 1 and d.num_trajectories == 3


def test_import_hdf5_d4rl_and_minari_layouts(tmp_path):
    arrays = _d4rl_arrays()
    with h5py.File(tmp_path / "d4rl.hdf5", "w") as f:
        for k, v in arrays.items():
            f[k] = v
    assert len(import_dataset(tmp_path / "d4rl.hdf5")) == 38
    with h5py.File(tmp_path / "minari.hdf5", "w") as f:
        for i, steps in enumerate((5, 7)):
            g = f.create_group(f"episode_{i}")
            g["observations"] = np.arange((steps + 1) * 2, dtype=np.float32).reshape(steps + 1, 2)
            g["actions"] = np.zeros((steps, 1), np.float32)
            g["rewards"] = np.ones(steps, np.float32)
            g["terminations"] = np.eye(1, steps, steps - 1, dtype=bool)[0] if i == 0 else np.zeros(steps, bool)
            g["truncations"] = np.zeros(steps, bool) if i == 0 else np.eye(1, steps, steps - 1, dtype=bool)[0]
    d = import_dataset(tmp_path / "minari.hdf5")
    assert len(d) == 12 and d.masks.sum() == 11 and d.num_trajectories == 2
    np.testing.assert_array_equal(d.next_observations[0], [2.0, 3.0])


def test_imported_dataset_round_trips_through_save(tmp_path):
    np.savez(tmp_path / "mine.npz", **_d4rl_arrays())
    d = import_dataset(tmp_path / "mine.npz")
    back = import_dataset(save_dataset(d, tmp_path / "saved.npz"))
    for field in ("observations", "actions", "rewards", "masks", "ends", "next_observations"):
        np.testing.assert_array_equal(getattr(back, field), getattr(d, field))


def test_save_then_import_keeps_terminations_that_do_not_end_a_trajectory(tmp_path):
    # OGBench single tasks: mask 0 at success, and the recorded trajectory goes on after it
    d = Dataset.random(60, 3, 2, episode_length=20, seed=1)
    masks = d.masks.copy()
    masks[[5, 33]] = 0.0
    d = Dataset.from_arrays("with-success", observations=d.observations, actions=d.actions, rewards=d.rewards,
                            masks=masks, ends=d.ends, next_observations=d.next_observations)
    back = import_dataset(save_dataset(d, tmp_path / "saved.npz"))
    for field in ("observations", "actions", "rewards", "masks", "ends", "next_observations"):
        np.testing.assert_array_equal(getattr(back, field), getattr(d, field))
    assert back.ends[5] == 0 and back.masks[5] == 0


def test_an_ogbench_file_reads_terminals_as_trajectory_cut_offs(tmp_path):
    n = 30
    terminals = np.zeros(n, np.float32)
    terminals[[9, 19, 29]] = 1  # three recorded trajectories of 10 steps, none of them terminated
    rng = np.random.default_rng(0)
    arrays = {"observations": rng.standard_normal((n, 3)).astype(np.float32),
              "actions": rng.uniform(-1, 1, (n, 2)).astype(np.float32), "terminals": terminals,
              "qpos": np.zeros((n, 4), np.float32)}
    np.savez(tmp_path / "raw.npz", **arrays)
    with pytest.raises(DataError, match="OGBench computes them per task"):
        import_dataset(tmp_path / "raw.npz")
    np.savez(tmp_path / "with-rewards.npz", rewards=-np.ones(n, np.float32), **arrays)
    d = import_dataset(tmp_path / "with-rewards.npz")
    assert d.masks.min() == 1.0  # no terminations: terminals only mark where a recording stops
    assert d.num_trajectories == 3 and len(d) == 27  # each cut row has no recorded next state


@pytest.mark.parametrize("change, message", [
    (dict(rewards=None), "key 'rewards' is missing"),
    (dict(terminals=None, timeouts=None), "needs 'terminals'"),
    (dict(rewards=np.zeros(39, np.float32)), "key 'rewards' has 39 rows"),
    (dict(actions=np.full((40, 2), 2.0, np.float32)), "outside"),
    (dict(rewards=np.full(40, np.inf, np.float32)), "non-finite"),
    (dict(observations=np.zeros((0, 3)), actions=np.zeros((0, 2)), rewards=np.zeros(0), terminals=np.zeros(0),
          timeouts=np.zeros(0)), "empty"),
    (dict(actions=np.array(["a"] * 40)), "dtype"),
])
def test_import_rejects_bad_input_by_key(tmp_path, change, message):
    np.savez(tmp_path / "bad.npz", **_with_changes(_d4rl_arrays(), change))
    with pytest.raises(DataError, match=message):
        import_dataset(tmp_path / "bad.npz")


def test_import_rejects_unknown_types_and_missing_files(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        import_dataset(tmp_path / "nope.npz")
    (tmp_path / "x.csv").write_text("1,2")
    with pytest.raises(DataError, match="unsupported file type"):
        import_dataset(tmp_path / "x.csv")
    (tmp_path / "junk.hdf5").write_bytes(b"not hdf5 at all")
    with pytest.raises(DataError, match="not a readable HDF5"):
        import_dataset(tmp_path / "junk.hdf5")


def test_generation_writes_exactly_the_files_the_readers_look_for(cube_dir):
    # One function names a dataset's files; the generator, loader, sidecar reader and listing all use it.
    files = dataset_files("cube-single-play-v0", cube_dir)
    assert files == (cube_dir / "cube-single-play-v0.npz", cube_dir / "cube-single-play-v0-val.npz",
                     cube_dir / "cube-single-play-v0.json")
    assert sorted(p.name for p in cube_dir.iterdir()) == sorted(p.name for p in files)  # nothing else left
    assert is_validation_file(files.val) and not is_validation_file(files.train)
    assert not is_validation_file(cube_dir / "my-val-data.npz")  # only the suffix marks a validation file


def test_list_reports_sizes_and_sidecar_facts(cube_dir):
    rows = list_datasets(cube_dir)
    assert [r["name"] for r in rows] == ["cube-single-play-v0"]
    assert rows[0]["seed"] == 7 and rows[0]["train_episodes"] == 3 and rows[0]["ogbench"] == "1.2.2"


def test_a_damaged_sidecar_is_named_and_listing_survives_it(cube_dir, tmp_path):
    # The sidecar records how a dataset was made; train copies it into every run's versions.json.
    for f in cube_dir.iterdir():
        shutil.copy(f, tmp_path / f.name)
    sidecar = tmp_path / "cube-single-play-v0.json"
    assert read_sidecar("cube-single-play-v0", tmp_path)["seed"] == 7
    assert read_sidecar("scene-play-v0", tmp_path) is None  # no sidecar: nothing recorded, not an error
    for damaged, problem in (('{"seed": 7, "gener', "Cannot read the dataset sidecar"),
                             ("[1, 2]", "is not a dataset sidecar")):
        sidecar.write_text(damaged)
        with pytest.raises(DataError, match=problem) as caught:
            read_sidecar("cube-single-play-v0", tmp_path)
        assert str(sidecar) in str(caught.value) and "evor data generate cube-single-play-v0" in str(caught.value)
        assert list_datasets(tmp_path)[0]["generator"] == "unreadable sidecar"


def test_dataset_validation_rejects_mismatched_widths():
    with pytest.raises(DataError, match="'next_observations' has width"):
        Dataset.from_arrays("x", observations=np.zeros((3, 2)), actions=np.zeros((3, 1)), rewards=np.zeros(3),
                            masks=np.ones(3), ends=np.ones(3), next_observations=np.zeros((3, 4)))


def test_a_datasets_digest_changes_with_any_bit_of_its_transitions():
    # Recorded in every run's versions.json: equal for equal transitions, different when one bit of one
    # observation differs (as in a dataset regenerated on another machine) or arrays are re-shaped.
    data = Dataset.random(200, 5, 2, episode_length=50, seed=3)
    same = Dataset.random(200, 5, 2, episode_length=50, seed=3)
    assert data.digest() == same.digest() == data.summary()["sha256"] and len(data.digest()) == 64
    flipped = data.observations.copy()
    flipped.view(np.uint32)[17, 3] ^= 1  # the last bit of one float32
    assert Dataset(**{**data.__dict__, "observations": flipped}).digest() != data.digest()
    reshaped = data.actions.reshape(100, 4)
    assert Dataset(**{**data.__dict__, "actions": reshaped}).digest() != data.digest()
