"""Runs survive crashes and bad input, and say what went wrong."""

import errno
import json
import signal
import subprocess
import sys
import time
import warnings

import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evor.agents.evor import EVOR
from evor.data.dataset import import_dataset
from evor.data.generate import generate_dataset
from evor.errors import ConfigError, DataError, EvorError
from evor.train import checkpoints, load_checkpoint, load_config_file, load_run, make_config, train

TASK = "cube-single-play-singletask-task1-v0"
LONG = dict(total_steps=1500, log_every=50, checkpoint_every=100, eval_every=0)


@pytest.fixture(scope="module")
def reference(cube_single_data, tmp_path_factory):
    """The uninterrupted run every interrupted one must reproduce bitwise."""
    run = train(make_config("tiny", task=TASK, data_dir=str(cube_single_data), **LONG),
                tmp_path_factory.mktemp("ref") / "run", show_progress=False)
    return [np.asarray(x) for x in jax.tree.leaves(run.state)]


def _cli_train(cube_single_data, run_dir, resume=False):
    args = [sys.executable, "-m", "evor.cli", "train", "--task", TASK, "--preset", "tiny", "--data-dir",
            str(cube_single_data), "--run-dir", str(run_dir), "--quiet"]
    args += [f"--set={k}={v}" for k, v in LONG.items()]
    return subprocess.Popen(args + (["--resume"] if resume else []), stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _assert_same_as_reference(run_dir, reference):
    final = load_checkpoint(checkpoints(run_dir)[-1])
    assert final["step"] == LONG["total_steps"]
    for a, b in zip(jax.tree.leaves(final["state"]), reference):
        np.testing.assert_array_equal(np.asarray(a), b)


def test_sigkill_at_random_moments_then_resume_reaches_the_same_parameters(cube_single_data, reference, tmp_path):
    rng = np.random.default_rng(2024)
    outcomes = []
    for trial in range(3):
        run_dir = tmp_path / f"trial{trial}"
        proc = _cli_train(cube_single_data, run_dir)
        time.sleep(float(rng.uniform(4.0, 14.0)))  # anywhere from start-up to mid-training
        killed = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        at = [c.name for c in checkpoints(run_dir)]
        resumed = _cli_train(cube_single_data, run_dir, resume=(run_dir / "config.json").exists())
        _, err = resumed.communicate(timeout=300)
        assert resumed.returncode == 0, err.decode()[-2000:]
        _assert_same_as_reference(run_dir, reference)
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows] == list(range(50, LONG["total_steps"] + 1, 50))
        outcomes.append((killed, at[-1] if at else None))
    print("SIGKILL trials (killed while running, newest checkpoint at the kill):", outcomes)
    assert any(killed for killed, _ in outcomes)  # at least one trial really died mid-run


def test_a_run_directory_in_use_by_another_process_is_refused_and_released_when_it_dies(cube_single_data, tmp_path):
    run_dir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom evor.rundir import claim\n"
                               "with claim(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(120)\n",
                               str(run_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        config = make_config("tiny", task=TASK, data_dir=str(cube_single_data), total_steps=100, log_every=50, eval_every=0)
        with pytest.raises(EvorError, match=rf"in use by another evor process \(pid {holder.pid}\)"):
            train(config, run_dir, show_progress=False)
        assert not (run_dir / "config.json").exists() and not checkpoints(run_dir)  # nothing was touched
    finally:
        holder.kill()
        holder.wait()
    train(config, run_dir, show_progress=False)  # the kernel dropped the lock with its holder
    assert load_checkpoint(checkpoints(run_dir)[-1])["step"] == 100


def test_corrupted_latest_checkpoint_falls_back_to_the_previous_one(cube_single_data, reference, tmp_path):
    run_dir = tmp_path / "run"
    train(make_config("tiny", task=TASK, data_dir=str(cube_single_data), **LONG), run_dir, show_progress=False,
          stop_after=300)
    latest = checkpoints(run_dir)[-1]
    blob = bytearray(latest.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    latest.write_bytes(bytes(blob))
    with pytest.warns(UserWarning, match=f"{latest.name}.*checksum mismatch"):
        assert load_run(run_dir).step == 200
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(make_config("tiny", task=TASK, data_dir=str(cube_single_data), **LONG), run_dir, resume=True,
              show_progress=False)
    _assert_same_as_reference(run_dir, reference)


def test_planted_nan_stops_the_run_naming_the_step_and_keeps_the_last_finite_checkpoint(cube_single_data, tmp_path,
                                                                                        monkeypatch):
    config = make_config("tiny", task=TASK, data_dir=str(cube_single_data), **LONG)
    run_dir = tmp_path / "run"
    train(config, run_dir, show_progress=False, stop_after=100)
    real_table = EVOR.make_table

    def poisoned(self, dataset):
        table = real_table(self, dataset)
        return dict(table, partial_returns=table["partial_returns"].at[:].set(np.nan))

    monkeypatch.setattr(EVOR, "make_table", poisoned)
    with pytest.raises(EvorError, match=r"diverged at step 150.*non-finite loss.*step_00000100\.ckpt"):
        train(config, run_dir, resume=True, show_progress=False)
    assert [c.name for c in checkpoints(run_dir)] == ["step_00000100.ckpt"]
    state = load_checkpoint(checkpoints(run_dir)[-1])["state"]
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state))


def test_full_disk_is_reported_and_leaves_no_file(tmp_path, monkeypatch):
    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez_compressed", no_space)
    with pytest.raises(EvorError, match="No space left on device"):
        generate_dataset("pointmaze-medium-navigate-v0", out_dir=tmp_path, episodes=1, workers=1, show_progress=False)
    assert list(tmp_path.iterdir()) == []


def test_config_files_are_checked(tmp_path):
    (tmp_path / "bad.json").write_text('{"total_steps": 10,}')
    with pytest.raises(ConfigError, match=r"bad\.json: invalid JSON at line 1"):
        load_config_file(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="could not be read"):
        load_config_file(tmp_path / "missing.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="JSON object"):
        load_config_file(tmp_path / "list.json")


# --------------------------------------------------------------------------- fuzzing

_KEYS = ["observations", "actions", "rewards", "terminals", "timeouts", "next_observations", "extra"]
_DTYPES = [np.float32, np.float64, np.int64, np.bool_, np.uint8]
_SPECIAL = [0.0, 1.0, -1.0, 0.5, 2.0, np.nan, np.inf, -np.inf, 1e30]


@st.composite
def dataset_files(draw):
    length = draw(st.integers(0, 6))
    arrays = {}
    for key in draw(st.lists(st.sampled_from(_KEYS), unique=True, max_size=len(_KEYS))):
        rows = draw(st.sampled_from([length, length, length + 1, 0]))
        shape = draw(st.sampled_from([(rows,), (rows, 2), (rows, 1), (), (rows, 2, 2)]))
        if draw(st.booleans()) and draw(st.booleans()):
            arrays[key] = np.array(["x"] * max(rows, 1))  # a string column
            continue
        values = draw(st.lists(st.sampled_from(_SPECIAL), min_size=1, max_size=4))
        flat = np.resize(np.array(values), int(np.prod(shape)) if shape else 1)
        with np.errstate(invalid="ignore", over="ignore"):
            arrays[key] = flat.reshape(shape).astype(draw(st.sampled_from(_DTYPES)))
    return arrays


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(arrays=dataset_files(), suffix=st.sampled_from([".npz", ".hdf5"]))
def test_fuzzed_dataset_files_load_or_raise_the_projects_error(tmp_path, arrays, suffix):
    import h5py

    path = tmp_path / f"fuzz{suffix}"
    if suffix == ".npz":
        np.savez(path, **arrays)
    else:
        with h5py.File(path, "w") as f:
            for key, value in arrays.items():
                f[key] = value.astype("S") if value.dtype.kind == "U" else value
    try:
        dataset = import_dataset(path)
    except DataError as exc:
        assert str(exc)
    else:
        assert len(dataset) > 0 and np.isfinite(dataset.observations).all()
        assert np.abs(dataset.actions).max() <= 1.0 + 1e-4


_CONFIG_FIELDS = ["total_steps", "batch_size", "log_every", "eval_every", "seed", "task", "agent", "inference",
                  "success_timing", "eval_episodes", "bogus", "agent_name"]
_JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers(-5, 2000) | st.floats(allow_nan=True) |
                            st.text(max_size=5), lambda inner: st.lists(inner, max_size=3) |
                            st.dictionaries(st.sampled_from(["hidden_dims", "tau_q", "num_candidates", "discount",
                                                           "nope"]), inner, max_size=3), max_leaves=6)


@settings(max_examples=200, deadline=None)
@given(fields=st.dictionaries(st.sampled_from(_CONFIG_FIELDS), _JSON_VALUES, max_size=4))
def test_fuzzed_configs_build_or_raise_the_projects_error(fields):
    try:
        config = make_config("tiny", **fields)
    except EvorError as exc:  # ConfigError, or DataError for a task name that is no OGBench task
        assert str(exc)
    else:
        config.validate()
