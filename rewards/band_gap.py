"""A band-gap predictor for perovskites, trained with matgl on the perov_5 labels, and its property source.

Only ~4% of perov_5 has a gap, so one regressor would learn "always 0". The predictor is two matgl
MEGNet models: a metal/non-metal classifier (BCE weighted by the class ratio) and a gap regressor
trained on the non-metals only. Prediction: the regressed gap where P(non-metal) exceeds a threshold chosen on the validation split
(best F1 for the rare class), else 0.

    python -m latticegym.rewards.band_gap --data ../shared/data/perov_5_val.csv.gz --out rewards/data/band_gap_perov_5.pt
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from pymatgen.core import Structure

from ..files import load_checkpoint
from ..targets import BAND_GAP_WINDOW
from .base import PropertySource

SHIPPED = Path(__file__).parent / "data" / "band_gap_perov_5.pt"


@dataclass
class BandGapConfig:
    """Training settings of the band-gap predictor (`python -m latticegym.rewards.band_gap`)."""

    data: str
    out: str
    label: str = "ind_gap"
    epochs_classifier: int = 40
    epochs_regressor: int = 150
    batch_size: int = 32
    lr: float = 1e-3
    cutoff: float = 5.0
    blocks: int = 2
    split_seed: int = 0
    seed: int = 0


def _megnet(elements: Sequence[str], cfg_cutoff: float, blocks: int, classify: bool):
    from matgl.models import MEGNet

    return MEGNet(element_types=tuple(elements), cutoff=cfg_cutoff, nblocks=blocks, is_classification=classify)


def _loader(structures, labels, elements, cutoff, batch_size, shuffle, seed=0):
    from matgl.ext.pymatgen import Structure2Graph
    from matgl.graph.data import MGLDataset, collate_fn_graph

    converter = Structure2Graph(element_types=tuple(elements), cutoff=cutoff)
    with tempfile.TemporaryDirectory() as root:
        dataset = MGLDataset(structures=list(structures), labels={"y": list(map(float, labels))}, converter=converter, save_cache=False, root=root)
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, collate_fn=collate_fn_graph, generator=generator)


def _forward(module, batch) -> tuple[torch.Tensor, torch.Tensor]:
    g, lat, state, y = batch
    return module(g=g, lat=lat, state_attr=state).reshape(-1), y


class BandGapPredictor:
    """Two MEGNet models (matgl) trained on perov_5: P(gap > 0) and the gap in eV where there is one.

    Args:
        elements: the element vocabulary.
        cutoff: graph cutoff in Å.
        blocks: MEGNet blocks.
        classifier_state: classifier weights (None: untrained).
        regressor_state: regressor weights.
        metrics: held-out metrics recorded at training.
        threshold: P(gap) above which a crystal is called gapped, set on validation.
    """
    def __init__(self, elements: list[str], cutoff: float, blocks: int, classifier_state=None, regressor_state=None, metrics=None, threshold: float = 0.5):
        from matgl.utils.training import ModelLightningModule

        self.elements, self.cutoff, self.blocks = list(elements), cutoff, blocks
        # ModelLightningModule attaches positions and periodic shifts from the lattice before the model call.
        self.classifier = ModelLightningModule(model=_megnet(elements, cutoff, blocks, classify=True))
        self.regressor = ModelLightningModule(model=_megnet(elements, cutoff, blocks, classify=False))
        if classifier_state is not None:
            self.classifier.model.load_state_dict(classifier_state)
            self.regressor.model.load_state_dict(regressor_state)
        self.metrics = metrics or {}
        self.threshold = threshold  # P(gap) above which a crystal is called non-metallic; set on validation

    def save(self, path: str | Path) -> None:
        """Write both models and their metadata (tensors and plain data only)."""
        torch.save(
            {
                "elements": self.elements,
                "cutoff": self.cutoff,
                "blocks": self.blocks,
                "classifier": self.classifier.model.state_dict(),
                "regressor": self.regressor.model.state_dict(),
                "metrics": self.metrics,
                "threshold": self.threshold,
            },
            path,
        )

    @classmethod
    def load(cls, path: str | Path = SHIPPED) -> BandGapPredictor:
        """Load a predictor written by `save` (without executing code); default: the shipped one."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no band-gap predictor at {path}; train one with `python -m latticegym.rewards.band_gap`")
        d = load_checkpoint(path, fallback=False)
        return cls(d["elements"], d["cutoff"], d["blocks"], d["classifier"], d["regressor"], d["metrics"], d.get("threshold", 0.5))

    @torch.no_grad()
    def predict(self, structures: Sequence[Structure]) -> tuple[np.ndarray, np.ndarray]:
        """(gap in eV, probability of a gap) per structure."""
        unknown = sorted({e.symbol for s in structures for e in s.composition.elements} - set(self.elements))
        if unknown:
            raise ValueError(f"the band-gap predictor knows no {', '.join(unknown)}")
        self.classifier.eval()
        self.regressor.eval()
        loader = _loader(structures, np.zeros(len(structures)), self.elements, self.cutoff, 256, shuffle=False)
        probs, gaps = [], []
        for batch in loader:
            probs.append(_forward(self.classifier, batch)[0])
            gaps.append(_forward(self.regressor, batch)[0].clamp(min=0.0))
        p, gap = torch.cat(probs).numpy(), torch.cat(gaps).numpy()
        return np.where(p > self.threshold, gap, 0.0), p


class BandGap(PropertySource):
    """Band gap (eV) from the shipped perov_5 predictor, or another trained with this module."""

    name = "band_gap"
    unit = "eV"
    cost = "cheap"

    def __init__(self, model: str | Path = SHIPPED):
        super().__init__()
        self.model_path = model
        self._predictor: BandGapPredictor | None = None

    def compute(self, structures: Sequence[Structure]):
        if self._predictor is None:
            self._predictor = BandGapPredictor.load(self.model_path)
        return self._predictor.predict(structures)[0]


def _fit(module, loader, epochs: int, lr: float, loss_fn, label: str) -> None:
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * len(loader), eta_min=lr / 20)
    for epoch in range(epochs):
        module.train()
        total = 0.0
        for batch in loader:
            pred, y = _forward(module, batch)
            loss = loss_fn(pred, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() / len(loader)
        if (epoch + 1) % 10 == 0 or epoch == 0:
            print(f"{label} epoch {epoch + 1}/{epochs} loss {total:.4f}", flush=True)


def train(cfg: BandGapConfig) -> BandGapPredictor:
    """Train the classifier and the regressor on the config's data split; returns the predictor with its metrics."""
    from ..datasets import read_csv

    torch.manual_seed(cfg.seed)
    data = read_csv(cfg.data)
    splits = data.split(seed=cfg.split_seed)  # the seeded split the perov_5 prior was trained with
    elements = sorted({e.symbol for s in data.structures for e in s.composition.elements})
    gap = {k: splits[k].properties[cfg.label].to_numpy(float) for k in splits}
    has_gap = {k: gap[k] > 0 for k in splits}
    predictor = BandGapPredictor(elements, cfg.cutoff, cfg.blocks)

    start = time.perf_counter()
    n_pos = has_gap["train"].sum()
    # The classifier outputs a probability (sigmoid inside MEGNet): weight the rare class by the ratio.
    weight = float((len(has_gap["train"]) - n_pos) / max(n_pos, 1))

    def weighted_bce(p, y):
        p = p.clamp(1e-6, 1 - 1e-6)
        return -(weight * y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean()

    train_all = _loader(splits["train"].structures, has_gap["train"], elements, cfg.cutoff, cfg.batch_size, True, cfg.seed)
    _fit(predictor.classifier, train_all, cfg.epochs_classifier, cfg.lr, weighted_bce, "classifier")
    idx = np.flatnonzero(has_gap["train"])
    train_pos = _loader([splits["train"].structures[i] for i in idx], gap["train"][idx], elements, cfg.cutoff, 16, True, cfg.seed)
    _fit(predictor.regressor, train_pos, cfg.epochs_regressor, cfg.lr, lambda p, y: torch.nn.functional.l1_loss(p, y), "regressor")

    metrics = {"train_seconds": round(time.perf_counter() - start, 1), "label": cfg.label, "train_size": len(splits["train"]), "train_with_gap": int(n_pos)}
    calibrate(predictor, splits["val"], cfg.label)
    metrics.update(evaluate(predictor, splits, cfg.label))
    predictor.metrics = metrics
    Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
    predictor.metrics["config"] = asdict(cfg)
    predictor.save(cfg.out)
    return predictor


def calibrate(predictor: BandGapPredictor, val, label: str = "ind_gap") -> float:
    """Set the classification threshold that maximises F1 of the rare (gapped) class on validation."""
    positive = val.properties[label].to_numpy(float) > 0
    _, p = predictor.predict(val.structures)

    def f1(th):
        called = p > th
        tp = (called & positive).sum()
        return 2 * tp / max(called.sum() + positive.sum(), 1)

    predictor.threshold = float(max(np.linspace(0.05, 0.95, 91), key=f1))
    return predictor.threshold


def evaluate(predictor: BandGapPredictor, splits: dict, label: str = "ind_gap") -> dict:
    """Held-out metrics: classification of gap/no gap, gap MAE, and how often a predicted gap in the
    task's window is a real one (precision) and how many real ones it finds (recall)."""
    metrics = {"threshold": predictor.threshold}
    for split in ("val", "test"):
        structures = splits[split].structures
        truth = splits[split].properties[label].to_numpy(float)
        positive = truth > 0
        pred, p = predictor.predict(structures)
        called = p > predictor.threshold
        recall_gap = float((called & positive).sum() / max(positive.sum(), 1))
        recall_metal = float((~called & ~positive).sum() / max((~positive).sum(), 1))
        gapped = [structures[i] for i in np.flatnonzero(positive)]
        metrics[split] = {
            "size": int(len(truth)),
            "with_gap": int(positive.sum()),
            "accuracy": float((called == positive).mean()),
            "majority_baseline_accuracy": float(1 - positive.mean()),
            "balanced_accuracy": 0.5 * (recall_gap + recall_metal),
            "recall_gap": recall_gap,
            "precision_gap": float((called & positive).sum() / max(called.sum(), 1)),
            "mae_all": float(np.abs(pred - truth).mean()),
            "mae_regressor_on_gapped": float(np.abs(_regress(predictor, gapped) - truth[positive]).mean()) if gapped else None,
        }
        lo, hi = BAND_GAP_WINDOW
        in_pred, in_true = (pred >= lo) & (pred <= hi), (truth >= lo) & (truth <= hi)
        metrics[split]["window"] = {
            "eV": [lo, hi],
            "predicted_in": int(in_pred.sum()),
            "truly_in": int(in_true.sum()),
            "precision": float((in_pred & in_true).sum() / max(in_pred.sum(), 1)),
            "recall": float((in_pred & in_true).sum() / max(in_true.sum(), 1)),
        }
    return metrics


@torch.no_grad()
def _regress(predictor: BandGapPredictor, structures) -> np.ndarray:
    predictor.regressor.eval()
    loader = _loader(structures, np.zeros(len(structures)), predictor.elements, predictor.cutoff, 256, shuffle=False)
    return torch.cat([_forward(predictor.regressor, b)[0].clamp(min=0.0) for b in loader]).numpy()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", default=str(SHIPPED))
    parser.add_argument("--epochs-classifier", type=int, default=40)
    parser.add_argument("--epochs-regressor", type=int, default=150)
    parser.add_argument("--recalibrate", action="store_true", help="only re-set the threshold of the model at --out and re-evaluate it")
    parser.add_argument("--evaluate", action="store_true", help="only print the held-out metrics of the model at --out")
    args = parser.parse_args(argv)
    if args.evaluate:
        from ..datasets import read_csv

        print(json.dumps(evaluate(BandGapPredictor.load(args.out), read_csv(args.data).split(seed=0)), indent=1))
        return
    if args.recalibrate:
        from ..datasets import read_csv

        predictor = BandGapPredictor.load(args.out)
        splits = read_csv(args.data).split(seed=0)
        calibrate(predictor, splits["val"])
        predictor.metrics.update(evaluate(predictor, splits))
        predictor.save(args.out)
    else:
        predictor = train(BandGapConfig(data=args.data, out=args.out, epochs_classifier=args.epochs_classifier, epochs_regressor=args.epochs_regressor))
    Path(args.out).with_suffix(".json").write_text(json.dumps(predictor.metrics, indent=1))
    print(json.dumps(predictor.metrics, indent=1))


if __name__ == "__main__":
    main()
