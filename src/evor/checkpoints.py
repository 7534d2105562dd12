"""Checkpoints: a run's parameters, optimiser state, RNG key and step, in a file that cannot run code.

File `checkpoints/step_XXXXXXXX.ckpt`:
    b"EVORCKPT2\\n" + sha256(payload) as 64 hex digits + b"\\n" + payload
where payload is an uncompressed `.npz` (read with `allow_pickle=False`): `leaf_00000`, ... the state's
arrays in the order `jax.tree_util.tree_flatten` gives them, `key` the RNG key, and `meta` a JSON
document (UTF-8 bytes as uint8) with the step, the format version and the path of every leaf. Loading
restores the pytree onto a template of the same structure (the agent's `init`, traced with
`jax.eval_shape`, so nothing is computed) and refuses a file whose paths, shapes or dtypes differ.

The checksum detects damage (a torn write, a flipped bit), not tampering: it sits in the same file.
What makes a shared checkpoint safe to open is the format: numbers and JSON only, nothing executable.
Checkpoints of evor < 0.2 were pickles (`step_XXXXXXXX.pkl`); unpickling runs whatever the file says,
so they are refused with the name of the one-time conversion (`evor checkpoint convert RUN_DIR
--trust-pickle`), which the user runs only on files they made or trust.

Writes are atomic (temporary name, fsync, rename), the newest `keep` are kept, and a damaged newest
file falls back to the previous one with a warning naming it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from evor.data.files import atomic_path
from evor.errors import EvorError

CHECKPOINTS_KEPT = 3
MAGIC = b"EVORCKPT2\n"
FORMAT_VERSION = 2
SUFFIX = ".ckpt"
LEGACY_SUFFIX = ".pkl"
_NAME = re.compile(r"^step_(\d{8})\.(ckpt|pkl)$")


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}{SUFFIX}"


def checkpoint_step(path: Path) -> int:
    """The step a checkpoint file holds, read from its name (`step_00030000.ckpt` -> 30000)."""
    match = _NAME.match(Path(path).name)
    if match is None:
        raise EvorError(f"{path}: not a checkpoint file name (expected step_XXXXXXXX{SUFFIX}).")
    return int(match.group(1))


def checkpoints(run_dir: Path) -> list[Path]:
    """A run's checkpoints, oldest first."""
    return sorted(Path(run_dir, "checkpoints").glob(f"step_*{SUFFIX}"))


def legacy_checkpoints(run_dir: Path) -> list[Path]:
    return sorted(Path(run_dir, "checkpoints").glob(f"step_*{LEGACY_SUFFIX}"))


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = checkpoints(run_dir)
    return found[-1] if found else None


def conversion_hint(run_dir: Path) -> str:
    return (f"{run_dir} holds pickle checkpoints (*.pkl) from an older evor. Loading a pickle can run "
            f"arbitrary code, so evor no longer reads them. If you made these files yourself or trust "
            f"whoever did, convert them once: `evor checkpoint convert {run_dir} --trust-pickle`.")


def refuse_legacy(run_dir: Path) -> None:
    """Raise, naming the conversion, when a run has only pickle checkpoints (nothing is unpickled)."""
    if not checkpoints(run_dir) and legacy_checkpoints(run_dir):
        raise EvorError(conversion_hint(run_dir))


# --------------------------------------------------------------------------- writing


def _paths(tree) -> list[str]:
    return [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def encode(step: int, state, key) -> bytes:
    """The checkpoint file's bytes (header, checksum, payload)."""
    leaves = [np.asarray(x) for x in jax.tree.leaves(state)]
    meta = {"format": FORMAT_VERSION, "step": int(step), "paths": _paths(state)}
    arrays = {f"leaf_{i:05d}": leaf for i, leaf in enumerate(leaves)}
    arrays["key"] = np.asarray(key)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    payload = buffer.getvalue()
    return MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload


def save_checkpoint(run_dir: Path, step: int, state, key: jax.Array, keep: int = CHECKPOINTS_KEPT,
                    keep_every: int = 0) -> Path:
    """Write step, state and RNG key atomically; keep the newest `keep` checkpoints, and every one whose
    step is a multiple of `keep_every` (when > 0)."""
    directory = Path(run_dir) / "checkpoints"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / checkpoint_name(step)
    blob = encode(step, state, key)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
    for old in checkpoints(run_dir)[:-keep]:
        if not (keep_every > 0 and checkpoint_step(old) % keep_every == 0):
            old.unlink()
    return path


# --------------------------------------------------------------------------- reading


def decode(blob: bytes, source, template=None) -> dict:
    """{"step", "state", "key"} from a file's bytes; EvorError naming `source` if it is not a valid one.

    With a `template` (a pytree of the same structure: arrays or jax.ShapeDtypeStruct) the state is
    restored onto it; without one, `state` is the list of leaves in their saved order."""
    if blob.startswith(b"\x80") or blob.startswith(b"EVORCKPT1\n"):
        raise EvorError(f"{source}: a pickle checkpoint from an older evor; it is not read (it could run code). "
                        f"Convert it once if you trust it: `evor checkpoint convert RUN_DIR --trust-pickle`.")
    header_end = len(MAGIC) + 64 + 1
    if not blob.startswith(MAGIC) or len(blob) < header_end:
        raise EvorError(f"{source}: not an evor checkpoint, or truncated.")
    digest, payload = blob[len(MAGIC):header_end - 1].decode(errors="replace"), blob[header_end:]
    if hashlib.sha256(payload).hexdigest() != digest:
        raise EvorError(f"{source}: checkpoint is corrupt (checksum mismatch).")
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as archive:
            meta = json.loads(archive["meta"].tobytes().decode())
            leaves = [archive[f"leaf_{i:05d}"] for i in range(len(meta["paths"]))]
            key = archive["key"]
    except (ValueError, KeyError, OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EvorError(f"{source}: checkpoint contents are malformed ({exc}).") from None
    if meta.get("format") != FORMAT_VERSION:
        raise EvorError(f"{source}: checkpoint format {meta.get('format')!r}; this evor reads {FORMAT_VERSION}.")
    if template is None:
        state = [jnp.asarray(x) for x in leaves]
    else:
        state = _restore(template, meta["paths"], leaves, source)
    return {"step": int(meta["step"]), "state": state, "key": jnp.asarray(key)}


def _restore(template, paths: list[str], leaves: list[np.ndarray], source):
    expected, treedef = jax.tree_util.tree_flatten(template)
    expected_paths = _paths(template)
    if paths != expected_paths:
        missing = sorted(set(expected_paths) - set(paths))[:3]
        extra = sorted(set(paths) - set(expected_paths))[:3]
        raise EvorError(f"{source}: checkpoint does not match this agent's state (missing {missing}, "
                        f"unexpected {extra}); was it written by another agent or config?")
    for path, want, got in zip(paths, expected, leaves):
        if tuple(want.shape) != got.shape or np.dtype(want.dtype) != got.dtype:
            raise EvorError(f"{source}: {path} has shape {got.shape} {got.dtype}, this agent expects "
                            f"{tuple(want.shape)} {np.dtype(want.dtype)}.")
    return jax.tree_util.tree_unflatten(treedef, [jnp.asarray(x) for x in leaves])


def load_checkpoint(path: Path, template=None) -> dict:
    """Read and verify a checkpoint (see `decode`); a damaged or foreign file raises EvorError naming it."""
    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise EvorError(f"{path}: checkpoint could not be read: {exc.strerror or exc}.") from None
    return decode(blob, path, template)


def load_latest_valid_checkpoint(run_dir: Path, template=None) -> dict | None:
    """The newest checkpoint that verifies; damaged ones are skipped with a warning naming them."""
    refuse_legacy(run_dir)
    for path in reversed(checkpoints(run_dir)):
        try:
            return load_checkpoint(path, template)
        except EvorError as exc:
            warnings.warn(f"{exc} Falling back to the previous checkpoint.", stacklevel=2)
    return None


# --------------------------------------------------------------------------- one-time conversion


def convert_legacy_checkpoints(run_dir: Path, template, trust_pickle: bool = False) -> list[Path]:
    """Rewrite a run's pickle checkpoints in the current format (same step, state and key; the
    pickles are removed once their replacement is written). Unpickling runs code: only with
    `trust_pickle`, for files the user made or trusts."""
    import pickle

    if not trust_pickle:
        raise EvorError("Converting pickle checkpoints unpickles them, which can run arbitrary code. Pass "
                        "--trust-pickle (trust_pickle=True) only for files you made yourself or trust.")
    legacy_magic = b"EVORCKPT1\n"
    written = []
    for path in legacy_checkpoints(run_dir):
        blob = path.read_bytes()
        header_end = len(legacy_magic) + 64 + 1
        if not blob.startswith(legacy_magic) or len(blob) < header_end:
            raise EvorError(f"{path}: not an evor pickle checkpoint, or truncated; left as it is.")
        payload = blob[header_end:]
        if hashlib.sha256(payload).hexdigest() != blob[len(legacy_magic):header_end - 1].decode(errors="replace"):
            raise EvorError(f"{path}: checkpoint is corrupt (checksum mismatch); left as it is.")
        data = pickle.loads(payload)  # the user vouched for this file
        state = _restore(template, _paths(data["state"]), jax.tree.leaves(data["state"]), path)
        written.append(save_checkpoint(run_dir, int(data["step"]), state, data["key"], keep=10 ** 9))
        path.unlink()
    return written
