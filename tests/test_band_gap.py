import numpy as np
import torch

from latticegym.datasets import read_csv, write_csv
from latticegym.rewards.band_gap import BandGap, BandGapConfig, BandGapPredictor, train

from helpers import perovskite

torch.set_num_threads(1)


def test_shipped_predictor_loads_with_its_metrics_and_predicts():
    predictor = BandGapPredictor.load()
    assert predictor.metrics["test"]["size"] > 300 and 0 < predictor.threshold < 1
    gap, p = predictor.predict([perovskite()])
    assert gap.shape == (1,) and gap[0] >= 0 and 0 <= p[0] <= 1
    result = BandGap()([perovskite()])
    assert np.isfinite(result.values).all() and result.reasons == [""]


def test_unknown_elements_fail_that_crystal_only():
    s = perovskite()
    s.replace_species({"Sr": "U"})
    result = BandGap()([s, perovskite()])
    assert np.isnan(result.values[0]) and "knows no U" in result.reasons[0] and np.isfinite(result.values[1])


def test_training_writes_a_calibrated_predictor(perov_path, tmp_path):
    data = read_csv(perov_path, limit=120)
    csv = write_csv(data.structures, tmp_path / "small.csv", {"ind_gap": data.properties["ind_gap"]})
    predictor = train(BandGapConfig(data=str(csv), out=str(tmp_path / "bg.pt"), epochs_classifier=1, epochs_regressor=1))
    for split in ("val", "test"):
        assert {"accuracy", "balanced_accuracy", "recall_gap", "precision_gap", "mae_all"} <= set(predictor.metrics[split])
    loaded = BandGapPredictor.load(tmp_path / "bg.pt")
    assert loaded.threshold == predictor.threshold
    np.testing.assert_allclose(loaded.predict(data.structures[:3])[1], predictor.predict(data.structures[:3])[1], rtol=1e-5)
