"""Shared by the tests: small crystals built with pymatgen, the CLI run in a fresh process (with its peak
memory), and a quick training config."""

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
from pymatgen.core import Lattice, Structure

from latticegym.agents.trainer import TrainConfig


def rocksalt() -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def perovskite() -> Structure:
    return Structure(
        Lattice.cubic(3.905),
        ["Sr", "Ti", "O", "O", "O"],
        [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]],
    )


def diamond() -> Structure:
    return Structure.from_spacegroup("Fd-3m", Lattice.cubic(3.567), ["C"], [[0, 0, 0]]).get_primitive_structure()


def triclinic(seed: int = 0) -> Structure:
    rng = np.random.default_rng(seed)
    lattice = Lattice.from_parameters(4.1, 5.3, 6.2, 81.0, 97.0, 104.0)
    return Structure(lattice, ["Li", "Fe", "P", "O", "O", "O", "O"], rng.random((7, 3)))


def run_cli(*args, timeout: float = 300):
    return subprocess.run([sys.executable, "-m", "latticegym.cli", *args], capture_output=True, text=True, timeout=timeout)


# Runs the CLI as the only child of a fresh Python, then prints the child's peak RSS (kB; Linux).
PEAK_RSS = "import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)"


def run_cli_measured(*args, timeout: float = 300) -> tuple[subprocess.CompletedProcess, float]:
    """`run_cli`, plus the command's peak resident memory in GB."""
    done = subprocess.run([sys.executable, "-c", PEAK_RSS, sys.executable, "-m", "latticegym.cli", *args], capture_output=True, text=True, timeout=timeout)
    return done, int(done.stdout.strip().splitlines()[-1]) / 1024**2


def cli(tmp: Path, *args: str, env: dict | None = None, ulimit_kb: int | None = None) -> tuple[subprocess.CompletedProcess, int]:
    """Run `latticegym ARGS` in `tmp`; the result and its peak RSS in kB."""
    command = [sys.executable, "-c", PEAK_RSS, sys.executable, "-m", "latticegym.cli", *args]
    limit = (lambda: __import__("resource").setrlimit(__import__("resource").RLIMIT_FSIZE, (ulimit_kb * 1024, ulimit_kb * 1024))) if ulimit_kb else None
    done = subprocess.run(command, cwd=tmp, capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {}), "OMP_NUM_THREADS": "1"}, preexec_fn=limit)
    lines = done.stdout.strip().splitlines()
    return done, int(lines[-1]) if lines and lines[-1].isdigit() else 0


TINY = TrainConfig(env_id="LatticeGym/PerovskiteLowHHI-v0", iterations=2, batch_size=6, steps=10, seed=0)
QUICK = replace(TINY, steps=4)  # where only the run files matter
