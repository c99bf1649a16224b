"""Figures of a sweep: learning curves, property histograms (prior vs fine-tuned), and a gallery of the best crystals."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..crystal import structure_from_cif  # noqa: E402

NOT_PROPERTIES = {"material_id", "iteration", "reward", "success", "discovery", "stable", "novel", "unique", "ok", "reason", "formula", "cif"}


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _runs(out: Path):
    """(task, agent, seed, run_dir) for every finished run of a sweep."""
    for run in sorted((out / "runs").glob("*/*/seed*")):
        if (run / "summary.json").exists():  # finished runs only, as in the table
            yield run.parts[-3], run.parts[-2], int(run.name.removeprefix("seed")), run


def learning_curves(out: Path) -> Path:
    """Discoveries (SUN successes) against property evaluations: a panel per task, mean line and min-max band per agent."""
    curves: dict[str, dict[str, list[pd.DataFrame]]] = {}
    for task, agent, _, run in _runs(out):
        curves.setdefault(task, {}).setdefault(agent, []).append(pd.read_csv(run / "metrics.csv"))
    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 3.6), squeeze=False)
    for ax, (task, agents) in zip(axes[0], curves.items()):
        for agent, frames in agents.items():
            x = np.linspace(0, min(f.evaluations.iloc[-1] for f in frames), 100)  # runs stop at different counts past the budget
            y = np.array([np.interp(x, np.r_[0, f.evaluations], np.r_[0, f.discoveries]) for f in frames])
            (line,) = ax.plot(x, y.mean(0), label=f"{agent} ({len(frames)} seeds)")
            ax.fill_between(x, y.min(0), y.max(0), color=line.get_color(), alpha=0.2)
        ax.set(title=task, xlabel="property evaluations", ylabel="discoveries (SUN successes)")
        ax.legend(fontsize=8)
    return _save(fig, out / "learning_curves.png")


def property_histograms(out: Path) -> Path:
    """Each task's properties in the first batch (the prior) against each agent's last batch, pooled over seeds."""
    data: dict[str, dict[str, list[pd.DataFrame]]] = {}
    for task, agent, _, run in _runs(out):
        ev = pd.read_csv(run / "evaluated.csv")
        data.setdefault(task, {}).setdefault("prior", []).append(ev[ev.iteration == 0])
        data[task].setdefault(agent, []).append(ev[ev.iteration == ev.iteration.max()])
    panels = []
    for task, groups in data.items():
        columns = [c for c in groups["prior"][0].columns if c not in NOT_PROPERTIES and pd.api.types.is_numeric_dtype(groups["prior"][0][c])]
        panels += [(task, c, groups) for c in columns]
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(4.5 * max(1, len(panels)), 3.4), squeeze=False)
    for ax, (task, column, groups) in zip(axes[0], panels):
        pooled = {name: pd.concat(frames)[column].dropna().to_numpy() for name, frames in groups.items()}
        finite = np.concatenate([v for v in pooled.values() if len(v)]) if pooled else np.zeros(1)
        bins = np.linspace(np.percentile(finite, 1), np.percentile(finite, 99), 30) if len(finite) > 1 else 10
        for name, values in pooled.items():
            ax.hist(values, bins=bins, density=True, alpha=0.45 if name == "prior" else 0.6, label=name, histtype="stepfilled" if name == "prior" else "step", linewidth=1.5)
        ax.set(title=f"{task}: {column}", xlabel=column, ylabel="density (pooled over seeds)")
        ax.legend(fontsize=8)
    return _save(fig, out / "property_histograms.png")


def gallery(out: Path, per_task: int = 6) -> Path:
    """The best distinct crystals of each task over all runs: atoms projected onto the ab plane, with formula and properties."""
    best: dict[str, pd.DataFrame] = {}
    for task, agent, seed, run in _runs(out):
        if (run / "best.csv").exists() and (run / "best.csv").stat().st_size:
            frame = pd.read_csv(run / "best.csv").assign(agent=agent, seed=seed)
            best[task] = pd.concat([best.get(task), frame]) if task in best else frame
    rows = max(1, len(best))
    fig, axes = plt.subplots(rows, per_task, figsize=(2.6 * per_task, 2.9 * rows), squeeze=False)
    for r, (task, frame) in enumerate(best.items()):
        frame = frame.sort_values("reward", ascending=False).drop_duplicates("formula").head(per_task)
        for c in range(per_task):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(frame):
                ax.axis("off")
                continue
            row = frame.iloc[c]
            s = structure_from_cif(row.cif)
            xy = s.cart_coords[:, :2]
            corners = np.array([[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]) @ s.lattice.matrix[:2, :2]
            ax.plot(corners[:, 0], corners[:, 1], color="0.6", lw=0.8)
            for el in s.composition.elements:
                idx = [i for i, site in enumerate(s) if site.specie == el]
                ax.scatter(xy[idx, 0], xy[idx, 1], s=60 + 6 * el.Z, label=el.symbol, edgecolors="k", linewidths=0.4)
            props = ", ".join(f"{k}={row[k]:.3g}" for k in frame.columns if k not in NOT_PROPERTIES | {"agent", "seed"} and isinstance(row[k], float))
            ax.set_title(f"{row.formula} ({row.agent})\nreward {row.reward:.3f}\n{props}", fontsize=7)
            ax.set_aspect("equal")
            ax.legend(fontsize=6, loc="lower right", markerscale=0.5)
        axes[r][0].set_ylabel(task, fontsize=8)
    return _save(fig, out / "gallery.png")


def make_all(out: str | Path) -> list[Path]:
    """Every plot of a sweep directory (learning curves, property histograms, gallery); returns the PNGs written."""
    out = Path(out)
    return [learning_curves(out), property_histograms(out), gallery(out)]
