"""An online surrogate of a reward's properties: a bootstrap ensemble of gradient-boosted trees on
composition (Magpie) and structure features, with a calibrated uncertainty.

It never replaces a real evaluation: it only ranks crystals that have not been evaluated. Its
figures are prospective: each batch is predicted by the model fitted before that batch was
evaluated, then joins the training data.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np
from pymatgen.core import Structure
from scipy.stats import spearmanr

from ..crystal import magpie, nearest_neighbour_distances


@lru_cache(maxsize=4096)
def _composition_features(formula: str) -> tuple[float, ...]:
    from pymatgen.core import Composition

    return tuple(magpie(impute_nan=True).featurize(Composition(formula)))


def structure_features(structure: Structure) -> np.ndarray:
    """Cell-shape and packing features that Magpie's composition statistics cannot see."""
    n = len(structure)
    volume = max(structure.volume, 1e-6)
    nearest = nearest_neighbour_distances(structure)
    abc = np.sort(structure.lattice.abc) / np.cbrt(volume / n)
    return np.array([n, volume / n, structure.density, *abc, *np.sort(structure.lattice.angles), nearest.min(), nearest.mean()])


def crystal_features(structures: Sequence[Structure]) -> np.ndarray:
    """Magpie composition features and `structure_features`, one row per crystal."""
    return np.array([[*_composition_features(s.composition.formula), *structure_features(s)] for s in structures], dtype=float)


@dataclass
class SurrogateConfig:
    """Settings of the ensemble.

    Attributes:
        members: bootstrap members; the spread of their predictions is the uncertainty.
        max_iter: boosting rounds per member.
        learning_rate: boosting learning rate.
        min_train: fewer evaluated crystals than this and the surrogate does not predict.
        trust_quantile: a crystal is trusted when its feature distance to the nearest training crystal
            is within this quantile of the training crystals' distances to each other (times `trust_margin`).
        trust_margin: how far past that quantile a crystal may lie and still be trusted.
    """

    members: int = 8
    max_iter: int = 150
    learning_rate: float = 0.1
    min_train: int = 16
    trust_quantile: float = 0.95
    trust_margin: float = 1.5


class Surrogate:
    """A bootstrap ensemble for one property, with its spread rescaled to be calibrated out of bag.

    Args:
        config: settings (default `SurrogateConfig()`).
        seed: seed of the bootstrap draws and the trees.
    """

    def __init__(self, config: SurrogateConfig | None = None, seed: int = 0):
        self.cfg = config or SurrogateConfig()
        self.seed = seed
        self.models: list = []
        self.scale = 1.0  # multiplies the ensemble std so that out-of-bag z-scores have unit variance
        self._x: np.ndarray | None = None
        self._mu = self._sd = None
        self._trust_radius = np.inf

    @property
    def ready(self) -> bool:
        return bool(self.models)

    def fit(self, x: np.ndarray, y: np.ndarray) -> None:
        """Fit the ensemble on features `x` and finite targets `y`; calibrate the spread out of bag."""
        from sklearn.ensemble import HistGradientBoostingRegressor

        keep = np.isfinite(y)
        x, y = np.asarray(x, float)[keep], np.asarray(y, float)[keep]
        if len(y) < self.cfg.min_train:
            self.models = []
            return
        self._mu, self._sd = x.mean(0), x.std(0) + 1e-9
        self._x = (x - self._mu) / self._sd
        n = len(y)
        rng = np.random.default_rng([self.seed, n])  # a function of the data, so a resumed run refits the same model
        self.models, oob_pred = [], [[] for _ in range(n)]
        for _ in range(self.cfg.members):
            idx = rng.integers(0, n, n)
            model = HistGradientBoostingRegressor(
                max_iter=self.cfg.max_iter, learning_rate=self.cfg.learning_rate, min_samples_leaf=min(20, max(2, n // 10)), random_state=int(rng.integers(2**31))
            ).fit(x[idx], y[idx])
            self.models.append(model)
            out = np.setdiff1d(np.arange(n), idx)
            for i, p in zip(out, model.predict(x[out]) if len(out) else []):
                oob_pred[i].append(p)
        # Out-of-bag: the mean over the members that did not see a crystal, against the ensemble spread.
        spread = np.maximum(self._member_predictions(x).std(0), 1e-9)
        z = [(y[i] - np.mean(p)) / spread[i] for i, p in enumerate(oob_pred) if len(p) >= 2]
        self.scale = float(np.clip(np.sqrt(np.mean(np.square(z))), 0.5, 20.0)) if len(z) >= 5 else 1.0
        nearest = self._nearest(self._x, exclude_self=True)
        self._trust_radius = float(np.quantile(nearest, self.cfg.trust_quantile)) * self.cfg.trust_margin

    def _member_predictions(self, x: np.ndarray) -> np.ndarray:
        return np.stack([m.predict(x) for m in self.models])

    def _nearest(self, z: np.ndarray, exclude_self: bool = False) -> np.ndarray:
        d = np.sqrt(((z[:, None, :] - self._x[None, :, :]) ** 2).mean(-1))
        if exclude_self:
            np.fill_diagonal(d, np.inf)
        return d.min(axis=1)

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Mean, calibrated std and whether each crystal lies within the trusted region of the training data."""
        if not self.ready:
            raise RuntimeError("the surrogate has not been fitted on enough crystals yet")
        x = np.asarray(x, float)
        members = self._member_predictions(x)
        trusted = self._nearest((x - self._mu) / self._sd) <= self._trust_radius
        return members.mean(0), members.std(0) * self.scale, trusted


PROSPECTIVE = ("mae", "spearman", "coverage_1sigma", "coverage_2sigma")


def prospective_stats(y: np.ndarray, mean: np.ndarray, std: np.ndarray) -> dict[str, float]:
    """How a model fitted before a batch predicted it: MAE, Spearman rank correlation, and the share
    inside the 1-sigma and 2-sigma intervals (0.683 and 0.954 when calibrated)."""
    keep = np.isfinite(y)
    y, mean, std = y[keep], mean[keep], np.maximum(std[keep], 1e-12)
    if len(y) < 3:
        return dict.fromkeys(PROSPECTIVE, float("nan"))
    z = np.abs(y - mean) / std
    rho = spearmanr(y, mean).statistic if np.ptp(y) > 0 and np.ptp(mean) > 0 else float("nan")
    return {"mae": float(np.abs(y - mean).mean()), "spearman": float(rho), "coverage_1sigma": float((z <= 1).mean()), "coverage_2sigma": float((z <= 2).mean())}


class RewardSurrogate:
    """One `Surrogate` per property of a CompositeReward's objectives, trained on every crystal the run evaluated.

    `observe` adds an evaluated batch (and returns the prospective figures of the model that had not
    seen it); `predicted_rewards` turns property draws into the reward's own shaped, combined values.
    """

    def __init__(self, reward, config: SurrogateConfig | None = None, seed: int = 0):
        self.reward = reward
        self.cfg = config or SurrogateConfig()
        self.names = [obj.name for obj in reward.objectives]
        self.models = {name: Surrogate(self.cfg, seed + i) for i, name in enumerate(self.names)}
        self.x: list[np.ndarray] = []
        self.y: dict[str, list[np.ndarray]] = {name: [] for name in self.names}

    @property
    def ready(self) -> bool:
        return all(m.ready for m in self.models.values())

    @property
    def size(self) -> int:
        return int(sum(len(x) for x in self.x))

    def observe(self, structures: Sequence[Structure], properties: dict[str, np.ndarray], ok: np.ndarray) -> dict[str, float]:
        """Add the evaluated crystals that the reward could score; refit; return the prospective figures."""
        idx = np.flatnonzero(ok)
        stats = {f"surrogate/{name}/{k}": float("nan") for name in self.names for k in PROSPECTIVE}  # the same columns every iteration
        if len(idx):
            x = crystal_features([structures[i] for i in idx])
            for name, model in self.models.items():
                y = np.asarray(properties[name], float)[idx]
                if model.ready:
                    stats.update({f"surrogate/{name}/{k}": v for k, v in prospective_stats(y, *model.predict(x)[:2]).items()})
                self.y[name].append(y)
            self.x.append(x)
            features = np.concatenate(self.x)
            for name, model in self.models.items():
                model.fit(features, np.concatenate(self.y[name]))
        stats["surrogate/train_size"] = float(self.size)
        return stats

    def predicted_rewards(self, structures: Sequence[Structure], draws: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Reward samples (draws x crystals) from each property's predictive normal, and the trusted mask."""
        x = crystal_features(structures)
        samples, trusted = {}, np.ones(len(structures), dtype=bool)
        for name, model in self.models.items():
            mean, std, ok = model.predict(x)
            samples[name] = mean + std * rng.standard_normal((draws, len(structures)))
            trusted &= ok
        rewards = np.stack([self.reward.shape_and_combine({name: samples[name][d] for name in self.names}) for d in range(draws)])
        return rewards, trusted

    def state_dict(self) -> dict:
        """The evaluated data; the models are refitted from it on load (fits are seeded by the data size)."""
        x = np.concatenate(self.x) if self.x else np.zeros((0, 0))
        return {"x": x, "y": {k: np.concatenate(v) if v else np.zeros(0) for k, v in self.y.items()}}

    def load_state_dict(self, state: dict) -> None:
        x = np.asarray(state["x"], float)
        self.x = [x] if len(x) else []
        self.y = {k: [np.asarray(v, float)] if len(x) else [] for k, v in state["y"].items()}
        if self.x:
            for name, model in self.models.items():
                model.fit(x, self.y[name][0])
