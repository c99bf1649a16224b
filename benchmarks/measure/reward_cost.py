"""Peak memory and time per crystal of one call of each task's reward, on real crystals.

    python -m latticegym.benchmarks.measure.reward_cost [--tasks PerovskiteFormationEnergy,...] [--batches 64,256]

Each (task, batch) runs in a fresh process: the reward is built and warmed up on two crystals (so
model loading is not counted), the kernel's peak-RSS mark is reset, and one call on `batch` real
crystals of the task's dataset follows. "peak" is the process's peak RSS during that call, models
included; "added" is how far it rose above the RSS before the call.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time
from pathlib import Path

DEFAULT_DATA = Path("../shared/data")
DATA_FILES = {"perov_5": "perov_5_val.csv.gz", "carbon_24": "carbon_24_val.csv.gz"}


def _rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _measure(task_name: str, batch: int, data_dir: str, queue) -> None:
    import torch

    torch.set_num_threads(1)
    from ...datasets import read_csv
    from ...envs.tasks import get_task

    task = get_task(task_name)
    structures = read_csv(Path(data_dir) / DATA_FILES[task.prior], skip_bad=True, limit=batch + 2).structures
    reward = task.make_reward()
    reward(structures[-2:])  # warm-up: model weights, references
    before = _rss_mb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM, the peak-RSS mark
    start = time.perf_counter()
    result = reward(structures[:batch])
    seconds = time.perf_counter() - start
    queue.put({"peak_mb": _rss_mb("VmHWM"), "added_mb": _rss_mb("VmHWM") - before, "s_per_crystal": seconds / batch, "ok": float(result.ok.mean())})


def measure(task_name: str, batch: int, data_dir: str) -> dict:
    """One reward call in a child process; its figures."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=_measure, args=(task_name, batch, data_dir, queue))
    child.start()
    child.join()
    if child.exitcode != 0:
        return {"error": f"exit code {child.exitcode}"}
    return queue.get()


def main(argv: list[str] | None = None) -> None:
    from ...envs.tasks import TASKS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated task names (default: all)")
    parser.add_argument("--batches", default="64,256", help="comma-separated batch sizes (default: %(default)s)")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="folder with the shared CSVs (default: %(default)s)")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    print(f"{'task':28s}{'batch':>6s}{'peak MB':>9s}{'added MB':>10s}{'s/crystal':>11s}{'ok':>6s}")
    for name in args.tasks.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            r = measure(name, batch, args.data)
            if "error" in r:
                print(f"{name:28s}{batch:6d}  {r['error']}", flush=True)
            else:
                print(f"{name:28s}{batch:6d}{r['peak_mb']:9.0f}{r['added_mb']:10.0f}{r['s_per_crystal']:11.4f}{r['ok']:6.2f}", flush=True)


if __name__ == "__main__":
    main()
