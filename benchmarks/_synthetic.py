"""Shared by the speed benchmarks: an agent at a preset's sizes on a synthetic dataset with
cube-single's shapes (28-d observations, 5-d actions), and a CPU pause switch for background jobs.

Speed does not depend on what the data says, only on its shapes, so no generated dataset is needed.
"""

import os
import signal
import subprocess
import time

import jax
import numpy as np

from evor.agents import build_agent, get_agent_class
from evor.data.dataset import Dataset
from evor.train import agent_config, load_preset

OBSERVATION_DIM, ACTION_DIM = 28, 5


def synthetic_dataset(num: int = 20_000, seed: int = 0, cutoffs: int = 1000) -> Dataset:
    """`cutoffs` trajectories: a 1M-transition OGBench dataset has 1000, and the size of EVOR's cut-off
    table (Monte-Carlo targets) depends on it; nothing else here depends on the trajectory length."""
    return Dataset.random(num, OBSERVATION_DIM, ACTION_DIM, episode_length=num // cutoffs, seed=seed)


def make_agent(name: str, preset: str, **fields):
    """(agent, batch size) with the preset's agent fields that this agent has, plus `fields`; a field given
    as None keeps its default (so a script's unset option passes straight through)."""
    fields = {k: v for k, v in fields.items() if v is not None}
    values = load_preset(preset)
    cls = get_agent_class(name)
    known = {f.name for f in __import__("dataclasses").fields(cls.Config)}
    config = agent_config(cls, {**{k: v for k, v in values.get("agent", {}).items() if k in known}, **fields})
    agent = build_agent(cls, config, OBSERVATION_DIM, ACTION_DIM, (-1.0, 0.0))
    return agent, values.get("batch_size", 256)


def timed(fn, repeats: int = 1):
    """Median wall seconds of fn() (which must block until its result is ready)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def block(tree):
    jax.block_until_ready(tree)
    return tree


class PausedJobs:
    """SIGSTOP processes whose command line matches `pattern` for the duration (so a benchmark does not
    share the CPU with a background study), SIGCONT them afterwards, even on error."""

    def __init__(self, pattern: str | None):
        self.pattern, self.pids = pattern, []

    def __enter__(self):
        # A benchmark killed with SIGTERM must still resume the paused jobs: turn it into SystemExit.
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(SystemExit(143)))
        if self.pattern:
            out = subprocess.run(["pgrep", "-f", self.pattern], capture_output=True, text=True).stdout
            matched = [int(p) for p in out.split() if int(p) != os.getpid() and not self._is_us(int(p))]
            # with their descendants: worker processes (multiprocessing spawn) do not repeat the command line
            self.pids = sorted(set(matched) | {c for p in matched for c in self._descendants(p)})
            for pid in self.pids:
                os.kill(pid, signal.SIGSTOP)
            if self.pids:
                print(f"paused {len(self.pids)} background process(es) matching '{self.pattern}'")
        return self

    @staticmethod
    def _descendants(pid: int) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
        children = [int(c) for c in out.split()]
        return children + [d for c in children for d in PausedJobs._descendants(c)]

    @staticmethod
    def _is_us(pid: int) -> bool:
        """This benchmark's own command line (and the shells that started it) also match the pattern."""
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                return b"--pause-pattern" in f.read()
        except OSError:
            return True

    def __exit__(self, *exc):
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass


def matmul_flops(fn, *args) -> float:
    """FLOPs of the matrix products in fn(*args), counted on its jaxpr with loop trip counts.

    XLA's cost analysis counts a loop body once, however many times it runs, and our flows integrate
    with fori_loop, so it undercounts an EVOR update ~3x. Here every dot_general costs 2 x (batch x free x
    contracting) sizes and a scan's body counts `length` times. Elementwise work is left out (small next
    to the matmuls of 256-512 wide layers), so this is a slight undercount.
    """
    return _jaxpr_flops(jax.make_jaxpr(fn)(*args).jaxpr)


def _jaxpr_flops(jaxpr) -> float:
    total = 0.0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            (lhs_contract, _), (lhs_batch, _) = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            contract = np.prod([lhs[d] for d in lhs_contract]) if lhs_contract else 1
            total += 2.0 * np.prod(eqn.outvars[0].aval.shape) * contract
        sub = [v for v in eqn.params.values() if hasattr(v, "jaxpr") or hasattr(v, "eqns")]
        branches = eqn.params.get("branches")
        if branches:
            total += max(_jaxpr_flops(b.jaxpr) for b in branches)
            continue
        inner = sum(_jaxpr_flops(getattr(v, "jaxpr", v)) for v in sub)
        total += inner * (eqn.params.get("length", 1) if name == "scan" else 1)
    return total
