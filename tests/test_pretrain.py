import json

import pytest
import torch
from helpers import perovskite
from latticegym.cli import main
from latticegym.datasets import read_csv, training_data, write_csv
from latticegym.policies import pretrain as pretrain_module
from latticegym.policies.checkpoint import load_policy
from latticegym.policies.pretrain import PretrainConfig, default_name, pretrain
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


@pytest.fixture
def tiny_data(tmp_path):
    structures = []
    for i, (a, b) in enumerate([("Sr", "Ti"), ("Ba", "Ti"), ("Ca", "Zr"), ("Sr", "Zr"), ("Ba", "Hf")] * 4):
        s = perovskite()
        s.replace_species({"Sr": a, "Ti": b})
        s.scale_lattice(s.volume * (1 + 0.02 * i))
        s.perturb(0.05)
        structures.append(s)
    return write_csv(structures, tmp_path / "tiny.csv")


def _config(data, out, epochs):
    return PretrainConfig(data=str(data), out=str(out), epochs=epochs, batch_size=8, hidden=16, layers=1, frequencies=2, checkpoint_every=1)


def test_pretrain_writes_a_loadable_prior_with_metadata(tiny_data, tmp_path):
    path = pretrain(_config(tiny_data, tmp_path / "run", 2), progress=False)
    policy = load_policy(path)
    spec = policy.spec
    assert spec.elements == [8, 20, 22, 38, 40, 56, 72]
    assert spec.num_atoms == {5: 18}  # the 90% outside the test split
    assert spec.fingerprint == read_csv(tiny_data).stats().fingerprint
    assert spec.extra["epochs"] == 2 and spec.extra["split_seed"] == 0
    assert spec.extra["trained_on"] == ["train", "val"]
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2]
    assert len(events.Scalars("fit/loss")) == 2 and "val/loss" not in events.Tags()["scalars"]
    fit = training_data(spec, tiny_data)
    assert len(fit) == 18 and not set(read_csv(tiny_data).split(seed=0)["test"].cifs) & set(fit.cifs)


def test_hold_out_val_trains_on_80_percent_and_logs_a_held_out_loss(tiny_data, tmp_path):
    cfg = _config(tiny_data, tmp_path / "run", 1)
    cfg.hold_out_val = True
    spec = load_policy(pretrain(cfg, progress=False)).spec
    assert spec.num_atoms == {5: 16} and spec.extra["trained_on"] == ["train"] and "val_loss" in spec.extra
    assert len(training_data(spec, tiny_data)) == 16
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    assert len(events.Scalars("val/loss")) == 1


def test_resume_after_a_kill_continues_exactly(tiny_data, tmp_path, monkeypatch):
    straight = pretrain(_config(tiny_data, tmp_path / "a", 3), progress=False)

    real_save = pretrain_module.atomic_save

    def save_then_die(obj, path, **kwargs):
        real_save(obj, path, **kwargs)
        if obj.get("epoch") == 1:
            raise KeyboardInterrupt("killed right after the first checkpoint")

    monkeypatch.setattr(pretrain_module, "atomic_save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        pretrain(_config(tiny_data, tmp_path / "b", 3), progress=False)
    monkeypatch.setattr(pretrain_module, "atomic_save", real_save)
    resumed = pretrain(_config(tiny_data, tmp_path / "b", 3), resume=True, progress=False)

    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == 9  # 3 epochs of 18 crystals in batches of 8
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=0)
    assert load_policy(straight).spec.extra["fit_loss"] == load_policy(resumed).spec.extra["fit_loss"]
    events = EventAccumulator(str(tmp_path / "b" / "tensorboard"))
    events.Reload()
    # Two event files; their names sort by a per-process counter (".10" before ".9"), so order by time.
    assert [e.step for e in sorted(events.Scalars("train/loss"), key=lambda e: e.wall_time)] == [1, 2, 3]


def test_resume_refuses_a_changed_config(tiny_data, tmp_path):
    pretrain(_config(tiny_data, tmp_path / "c", 1), progress=False)
    changed = _config(tiny_data, tmp_path / "c", 2)
    changed.lr = 0.5
    with pytest.raises(ValueError, match="different configuration.*lr"):
        pretrain(changed, resume=True, progress=False)


def test_cli_pretrain_then_sample(tiny_data, tmp_path):
    out = tmp_path / "cli"
    assert main(["pretrain", "--data", str(tiny_data), "--out", str(out), "--epochs", "1", "--hidden", "16", "--layers", "1", "--batch-size", "8"]) == 0
    samples = tmp_path / "s.csv"
    assert main(["sample", "--prior", str(out / "prior.pt"), "--num", "5", "--steps", "4", "--seed", "3", "--out", str(samples)]) == 0
    data = read_csv(samples, skip_bad=True)
    assert len(data) + len(data.skipped) == 5


def test_sample_unknown_prior_is_a_clear_error(tmp_path, capsys):
    assert main(["sample", "--prior", "nope", "--num", "1", "--out", str(tmp_path / "x.csv")]) == 1
    assert "no prior named 'nope'" in capsys.readouterr().err


def test_prior_quality_scores_a_prior_and_the_real_ceiling_against_the_held_out_split(tiny_data, tmp_path):
    from latticegym.benchmarks.measure import prior_quality

    cfg = _config(tiny_data, tmp_path / "run", 1)
    cfg.name = "perov_5"  # for the published COV cutoffs
    prior = pretrain(cfg, progress=False)
    out = tmp_path / "quality.json"
    prior_quality.main(["--prior", str(prior), "--data", str(tiny_data), "--num", "6", "--steps", "2", "--novelty", "--out", str(out)])
    ours, real = json.loads(out.read_text())
    assert ours["network"] == "16x1" and ours["metrics"]["num_samples"] == 6 and ours["metrics"]["cov_precision"] is not None
    assert real["prior"] == "real data, same size" and real["metrics"]["num_samples"] == 6
    assert real["metrics"]["struct_validity"] == 1.0 and len(ours["nn"]) == 3


def test_a_prior_is_named_for_its_dataset_not_its_split_file():
    assert default_name("../shared/data/perov_5_val.csv.gz") == "perov_5"
    assert default_name("carbon_24_train.csv") == "carbon_24" and default_name("my_set.csv") == "my_set"


def test_pretrain_on_unusable_data_says_how_many_rows_and_why(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("material_id,cif\na,not a cif\nb,\nc,also not\n")
    with pytest.raises(ValueError, match=r"no usable crystals .*3 rows rejected"):
        pretrain(PretrainConfig(data=str(bad), out=str(tmp_path / "out"), epochs=1), progress=False)
