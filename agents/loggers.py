"""Where a training run writes: metrics.csv, TensorBoard, Weights & Biases (online or offline)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np


def truncate_csv(path: Path, before_iteration: int) -> None:
    """Keep the rows of iterations < `before_iteration`: a resumed run rewrites the rest exactly."""
    if not path.exists():
        return
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    col = rows[0].index("iteration")
    kept = [rows[0]] + [r for r in rows[1:] if len(r) == len(rows[0]) and int(r[col]) < before_iteration]
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        csv.writer(f).writerows(kept)
    tmp.replace(path)


def append_csv(path: Path, rows: list[dict]) -> None:
    """Append rows; a column that the file lacks is added to its header (earlier rows leave it empty)."""
    if not rows:
        return
    exists = path.exists() and path.stat().st_size > 0
    header = []
    if exists:
        with path.open(newline="") as f:
            header = next(csv.reader(f))
    new = [k for row in rows for k in row if k not in header]
    if exists and new:
        with path.open(newline="") as f:
            old = list(csv.DictReader(f))
        header += list(dict.fromkeys(new))
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=header)
            writer.writeheader()
            writer.writerows(old)
        tmp.replace(path)
    elif not exists:
        header = list(dict.fromkeys(k for row in rows for k in row))
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        if not exists:
            writer.writeheader()
        writer.writerows(rows)
        f.flush()


def namespaced(key: str, from_update: bool) -> str:
    """A metric's TensorBoard/W&B tag, grouped as CleanRL groups them: `losses/` for the agent's update,
    `time/` for the seconds of each stage, `charts/` for the rest; a key with its own namespace
    (`surrogate/...`, `calls/...`) keeps it."""
    if "/" in key:
        return key
    if from_update:
        return f"losses/{key}"
    if key.startswith("t_"):
        return f"time/{key[2:]}"
    return f"charts/{key}"


class RunLog:
    """One iteration at a time to CSV (bare keys), TensorBoard and optionally W&B (`namespaced` tags)."""

    def __init__(self, out: Path, start_iteration: int, config: dict, wandb_mode: str | None = None, wandb_id: str | None = None):
        from torch.utils.tensorboard import SummaryWriter

        self.out = out
        self.metrics_path = out / "metrics.csv"
        truncate_csv(self.metrics_path, start_iteration)
        # purge_step drops events a killed run wrote past its last checkpoint.
        self.tb = SummaryWriter(str(out / "tensorboard"), purge_step=start_iteration if start_iteration else None)
        self.wandb = None
        self.wandb_id = wandb_id
        if wandb_mode:
            try:
                import wandb
            except ImportError:
                raise ImportError("--wandb needs Weights & Biases: pip install 'latticegym[wandb]'") from None

            self.wandb = wandb.init(
                project="latticegym", dir=str(out), mode=wandb_mode, config=config, id=wandb_id, resume="allow", name=out.name, reinit="finish_previous"
            )
            self.wandb_id = self.wandb.id

    def log(self, iteration: int, metrics: dict[str, float], histograms: dict[str, np.ndarray], update_keys=()) -> None:
        """Write one iteration: a metrics.csv row, TensorBoard scalars and histograms, and W&B when enabled;
        `update_keys` name the metrics that the agent's update returned."""
        append_csv(self.metrics_path, [{"iteration": iteration, **metrics}])
        tagged = {namespaced(k, k in update_keys): v for k, v in metrics.items()}
        for name, value in tagged.items():
            if value is not None and math.isfinite(value):
                self.tb.add_scalar(name, value, iteration)
        for name, values in histograms.items():
            values = np.asarray(values, dtype=float)
            values = values[np.isfinite(values)]
            if len(values):
                self.tb.add_histogram(name, values, iteration)
        self.tb.flush()
        if self.wandb is not None:
            import wandb

            payload = dict(tagged)
            payload.update({f"hist/{k}": wandb.Histogram(np.asarray(v)[np.isfinite(v)]) for k, v in histograms.items() if np.isfinite(v).any()})
            self.wandb.log(payload, step=iteration)

    def close(self) -> None:
        """Flush and close the TensorBoard writer and the W&B run."""
        self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()
