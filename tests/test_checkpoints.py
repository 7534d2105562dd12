"""Checkpoints hold numbers and JSON only: they round-trip a state exactly, refuse foreign or damaged files,
and never unpickle what they are handed (pickles from older evor are converted only on request)."""

import hashlib
import json
import pickle
import subprocess
import sys

import jax
import numpy as np
import pytest

from evor.checkpoints import convert_legacy_checkpoints, decode, encode, load_checkpoint, save_checkpoint
from evor.errors import EvorError
from evor.train import _config_json, load_run, load_run_agent, make_config, state_template, train

TASK = "cube-single-play-singletask-task1-v0"


def _run_dir(tmp_path):
    """A run directory with its config and data facts (cube-single shapes) but no checkpoint yet."""
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps(_config_json(make_config("tiny", task=TASK))))
    facts = {"observation_dim": 28, "action_dim": 5, "reward_min": -1.0, "reward_max": 0.0}
    (run_dir / "versions.json").write_text(json.dumps({"train_data": facts}))
    return run_dir


def _legacy_blob(obj) -> bytes:
    """A file as evor < 0.2 wrote it: magic, SHA-256 of the pickle, the pickle."""
    payload = pickle.dumps(obj)
    return b"EVORCKPT1\n" + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload


class _WritesAFile:
    """Unpickling this runs code: it creates the file named at pickling time."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _agent(tmp_path):
    return load_run_agent(_run_dir(tmp_path))[1]


def test_a_state_round_trips_bit_for_bit_onto_its_template(tmp_path):
    agent = _agent(tmp_path)
    state = agent.init(jax.random.PRNGKey(3))
    key = jax.random.PRNGKey(7)
    path = save_checkpoint(tmp_path, 1200, state, key)
    assert path.name == "step_00001200.ckpt"
    loaded = load_checkpoint(path, state_template(agent))
    assert loaded["step"] == 1200
    np.testing.assert_array_equal(np.asarray(loaded["key"]), np.asarray(key))
    assert jax.tree.structure(loaded["state"]) == jax.tree.structure(state)
    for a, b in zip(jax.tree.leaves(loaded["state"]), jax.tree.leaves(state)):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_checkpoint_of_another_agent_or_size_is_refused_by_name(tmp_path):
    agent = _agent(tmp_path)
    blob = encode(5, {"actor": np.zeros(3)}, jax.random.PRNGKey(0))
    with pytest.raises(EvorError, match="does not match this agent's state"):
        decode(blob, "other.ckpt", state_template(agent))
    state = agent.init(jax.random.PRNGKey(0))
    bigger = jax.tree.map(lambda x: np.zeros(np.shape(x) + (1,), np.asarray(x).dtype), state)
    with pytest.raises(EvorError, match="has shape"):
        decode(encode(5, bigger, jax.random.PRNGKey(0)), "bigger.ckpt", state_template(agent))


@pytest.mark.parametrize("name", ["step_00000100.pkl", "step_00000100.ckpt"])
def test_a_crafted_pickle_is_refused_and_runs_nothing(tmp_path, name):
    # The file a malicious checkpoint would create when unpickled; under either file name evor must refuse
    # it without unpickling: a legacy .pkl name gets the conversion hint, a .ckpt name "not readable".
    run_dir = _run_dir(tmp_path)
    marker = tmp_path / "pwned"
    (run_dir / "checkpoints" / name).write_bytes(_legacy_blob({"step": 100, "state": _WritesAFile(marker),
                                                                "key": np.zeros(2, np.uint32)}))
    legacy_name = name.endswith(".pkl")
    expected = "evor checkpoint convert" if legacy_name else "pickle checkpoint from an older evor"
    with pytest.raises(EvorError, match=expected):
        load_run(run_dir, step=None if legacy_name else 100)
    assert not marker.exists()
    if legacy_name:  # resuming refuses before anything else happens
        with pytest.raises(EvorError, match="evor checkpoint convert"):
            train(make_config("tiny", task=TASK), run_dir, resume=True, show_progress=False)
        assert not marker.exists()
    # the command line says it in one paragraph, exit code 2, and runs nothing
    result = subprocess.run([sys.executable, "-m", "evor.cli", "eval", str(run_dir), "--episodes", "1"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert not marker.exists()


def test_conversion_needs_trust_then_rewrites_the_same_state(tmp_path):
    run_dir = _run_dir(tmp_path)
    agent = _agent(tmp_path / "other")
    state = jax.tree.map(np.asarray, agent.init(jax.random.PRNGKey(1)))
    key = np.asarray(jax.random.PRNGKey(2))
    legacy = run_dir / "checkpoints" / "step_00000200.pkl"
    legacy.write_bytes(_legacy_blob({"step": 200, "state": state, "key": key}))
    with pytest.raises(EvorError, match="trust"):
        convert_legacy_checkpoints(run_dir, state_template(agent))
    assert legacy.exists()
    result = subprocess.run([sys.executable, "-m", "evor.cli", "checkpoint", "convert", str(run_dir),
                             "--trust-pickle"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert not legacy.exists()
    run = load_run(run_dir)
    assert run.step == 200
    for a, b in zip(jax.tree.leaves(run.state), jax.tree.leaves(state)):
        np.testing.assert_array_equal(np.asarray(a), b)
