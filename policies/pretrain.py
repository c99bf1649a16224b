"""Pretraining the crystal diffusion prior on a CDVAE-format dataset, with exact resume."""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from ..crystal import CrystalBatch
from ..datasets import SPLIT_FRACTIONS, CrystalDataset, fit_splits, read_csv, split_dataset
from ..files import RunLock, atomic_save, atomic_text, clear_temporaries, load_checkpoint, restore_generator
from .checkpoint import load_prior, save_policy
from .diffusion import DiffusionPolicy, DiffusionState, PriorSpec
from .network import DenoiserConfig

RESUMABLE = {"epochs", "device", "out", "checkpoint_every", "minutes"}  # settings a resumed run may change


@dataclass
class PretrainConfig:
    """Pretraining settings (`latticegym pretrain`); saved in OUT/config.json and in every checkpoint.

    Attributes:
        data: CDVAE-format CSV(.gz); trained on the 90% outside its seeded test split.
        out: run directory (prior.pt, last.pt, tensorboard/).
        epochs: passes over the training split (fitted to `minutes` when that is set).
        batch_size: crystals per optimizer step.
        lr: peak learning rate of the cosine schedule.
        lr_min: its floor.
        ema_decay: decay of the exponential moving average whose weights are shipped.
        grad_clip: gradient-norm clip.
        hidden: denoiser width.
        layers: message-passing layers.
        frequencies: Fourier frequencies of the coordinate features.
        num_timesteps: training grid of the noise schedules.
        split_seed: seed of the 80/10/10 split.
        hold_out_val: train on the 80% only, so the logged `val/` loss is held out; by default the val
            split trains too and its fixed-noise loss is logged as `fit/`.
        seed: seed of the weights and the noise.
        checkpoint_every: epochs between checkpoints.
        name: prior name recorded in the checkpoint.
        device: torch device.
        minutes: wall-clock budget; 0 disables it.
        init: a prior (name or path) whose weights start the run.
    """

    data: str
    out: str
    epochs: int = 1000
    batch_size: int = 128
    lr: float = 1e-3
    lr_min: float = 1e-5
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    hidden: int = 128
    layers: int = 4
    frequencies: int = 10
    num_timesteps: int = 1000
    split_seed: int = 0
    hold_out_val: bool = False
    seed: int = 0
    checkpoint_every: int = 5  # epochs
    name: str = ""
    device: str = "cpu"
    minutes: float = 0.0  # wall-clock budget: when set, `epochs` is fitted to it from the first epoch's speed
    init: str = ""  # start from this prior's weights (same data and network shape), e.g. to continue a shipped prior


def _reasons(skipped: list[tuple[int, str]]) -> str:
    counts: dict[str, int] = {}
    for _, reason in skipped:
        key = reason.split(":")[0][:60]
        counts[key] = counts.get(key, 0) + 1
    return "".join(f"; {n} x {reason}" for reason, n in sorted(counts.items(), key=lambda kv: -kv[1])[:5])


def _size_bucketed_batches(sizes: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    # Crystals of similar size share a batch, so little compute goes to padding.
    order = rng.permutation(len(sizes))
    order = order[np.argsort(sizes[order], kind="stable")]
    chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(chunks)
    return chunks


def _take(state: DiffusionState, idx: np.ndarray) -> DiffusionState:
    sub = state.index(torch.as_tensor(idx))
    n = int(sub.mask.sum(1).max())
    return DiffusionState(sub.types[:, :n], sub.frac[:, :n], sub.lattice, sub.mask[:, :n])


def _lr(cfg: PretrainConfig, step: int, total: int) -> float:
    return cfg.lr_min + (cfg.lr - cfg.lr_min) * 0.5 * (1 + math.cos(math.pi * min(step / max(total, 1), 1.0)))


def default_name(data: str | Path) -> str:
    """A prior's name from its data file: `perov_5_val.csv.gz` -> `perov_5`. The name picks the COV
    cutoffs and the corrector step size, so a CDVAE split suffix must not stay in it."""
    return re.sub(r"_(train|val|test)$", "", Path(data).name.split(".")[0])


def build_policy(cfg: PretrainConfig, data: CrystalDataset, train: CrystalDataset) -> DiffusionPolicy:
    """A fresh policy for `data`: vocabulary from the whole file, atom counts and lattice scale from `train`."""
    stats, full = train.stats(), data.stats()
    scale = float(np.mean([s.volume ** (1 / 3) for s in train.structures]))
    spec = PriorSpec(
        elements=full.elements,  # the whole file's vocabulary, so held-out crystals encode too
        num_atoms=stats.num_atoms,
        lattice_scale=scale,
        lattice_clip=1.5 * max(float(np.abs(s.lattice.matrix).max()) / scale for s in train.structures),
        fingerprint=full.fingerprint,
        num_timesteps=cfg.num_timesteps,
        name=cfg.name or default_name(cfg.data),
        extra={
            "split_seed": cfg.split_seed,
            "split_fractions": list(SPLIT_FRACTIONS),
            "trained_on": fit_splits(cfg.hold_out_val),
            "data": Path(cfg.data).name,
        },
    )
    net = DenoiserConfig(num_types=len(spec.elements), hidden=cfg.hidden, layers=cfg.layers, frequencies=cfg.frequencies)
    return DiffusionPolicy(spec, net)


def pretrain(cfg: PretrainConfig, resume: bool = False, progress: bool = True) -> Path:
    """Train, checkpointing every few epochs to OUT/last.pt; returns OUT/prior.pt (EMA weights).

    Holds OUT's lock (`files.RunLock`) throughout, so two runs never write one directory."""
    with RunLock(cfg.out):
        clear_temporaries(cfg.out)
        return _pretrain(cfg, resume, progress)


def _pretrain(cfg: PretrainConfig, resume: bool, progress: bool) -> Path:
    out = Path(cfg.out)
    state_path = out / "last.pt"
    if cfg.epochs < 1:
        raise ValueError(f"--epochs must be at least 1, got {cfg.epochs}")
    if resume and not state_path.exists():
        raise FileNotFoundError(f"--resume: no checkpoint at {state_path}; drop --resume to start a new run there")
    if not resume and any((out / name).exists() for name in ("last.pt", "prior.pt")):
        raise FileExistsError(f"{out} already holds a pretraining run; pass --resume to continue it or choose another --out")
    saved = load_checkpoint(state_path) if resume else None
    if saved is not None:
        changed = {k: (saved["config"].get(k), v) for k, v in asdict(cfg).items() if k not in RESUMABLE and saved["config"].get(k) != v}
        if changed:
            raise ValueError(f"--resume with a different configuration (saved, now): {changed}")

    data = read_csv(cfg.data, skip_bad=True, progress=progress)
    if data.skipped:
        print(f"skipped {len(data.skipped)} unreadable rows of {cfg.data}, first: row {data.skipped[0][0]}: {data.skipped[0][1]}")
    splits = split_dataset(data, cfg.split_seed, cfg.hold_out_val)
    if len(splits["fit"]) == 0 or len(splits["val"]) == 0:
        raise ValueError(f"{cfg.data}: no usable crystals to train on ({len(data)} read, {len(data.skipped)} rows rejected{_reasons(data.skipped)})")
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)  # the initial weights
    policy = build_policy(cfg, data, splits["fit"]).to(device)
    ema = policy.frozen_copy()
    opt = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, weight_decay=0.0)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    start_epoch, step = 0, 0
    if cfg.init and saved is None:
        start = load_prior(cfg.init)
        if asdict(start.network.config) != asdict(policy.network.config) or start.spec.elements != policy.spec.elements:
            raise ValueError(f"--init {cfg.init}: its network {asdict(start.network.config)} or vocabulary does not match this run's")
        policy.network.load_state_dict(start.network.state_dict())
        ema.network.load_state_dict(start.network.state_dict())
        print(f"starting from the weights of {cfg.init}")
    if saved is not None:
        policy.network.load_state_dict(saved["model"])
        ema.network.load_state_dict(saved["ema"])
        opt.load_state_dict(saved["optimizer"])
        restore_generator(generator, saved["generator"], f"the generator of {state_path}")
        start_epoch, step = saved["epoch"], saved["step"]
        print(f"resuming {state_path} at epoch {start_epoch}")

    # Encoded once and kept on the device: batches are gathered there, with no host round trip.
    train_x = policy.encode(CrystalBatch.from_structures(splits["fit"].structures, policy.n_max))
    val_x = policy.encode(CrystalBatch.from_structures(splits["val"].structures, policy.n_max))
    val_tag = "val" if cfg.hold_out_val else "fit"  # a loss over crystals it trains on is no validation
    sizes = train_x.mask.sum(1).cpu().numpy()
    steps_per_epoch = math.ceil(len(sizes) / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    writer = SummaryWriter(str(out / "tensorboard"), purge_step=step if saved else None)
    atomic_text(out / "config.json", json.dumps(asdict(cfg), indent=1))
    print(f"{policy.network.num_parameters():,} parameters; {len(sizes)} training crystals ({len(val_x)} val, {'held out' if cfg.hold_out_val else 'trained on'}); {steps_per_epoch} steps per epoch")

    bar = tqdm(initial=start_epoch, total=cfg.epochs, desc="pretrain", unit="epoch", disable=not progress)
    began = first_end = time.perf_counter()
    epoch = start_epoch
    while epoch < cfg.epochs:
        t0 = time.perf_counter()
        policy.train()
        sums: dict[str, float] = {}
        for idx in _size_bucketed_batches(sizes, cfg.batch_size, np.random.default_rng([cfg.seed, epoch])):
            for group in opt.param_groups:
                group["lr"] = _lr(cfg, step, total_steps)
            parts = policy.loss(_take(train_x, idx).to(device), generator)
            if not torch.isfinite(parts["loss"]):
                raise FloatingPointError(f"non-finite loss at epoch {epoch + 1}, step {step + 1}; {out / 'last.pt'} holds the last good state")
            opt.zero_grad(set_to_none=True)
            parts["loss"].backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.grad_clip)
            opt.step()
            with torch.no_grad():
                for e, p in zip(ema.network.parameters(), policy.network.parameters()):
                    e.lerp_(p, 1 - cfg.ema_decay)
            step += 1
            for name, value in parts.items():
                sums[name] = sums.get(name, 0.0) + value.item() / steps_per_epoch
        for name, value in sums.items():
            writer.add_scalar(f"train/{name}", value, epoch + 1)
        writer.add_scalar("train/lr", _lr(cfg, step, total_steps), epoch + 1)
        writer.add_scalar("time/epoch_s", time.perf_counter() - t0, epoch + 1)
        bar.set_postfix(loss=f"{sums['loss']:.4f}")
        bar.update()
        if cfg.minutes and epoch - start_epoch < 5:  # fit the schedule to the budget; the first epoch pays for warm-up
            now, done = time.perf_counter(), epoch + 1 - start_epoch
            first_end = first_end if done > 1 else now
            per_epoch = (now - first_end) / (done - 1) if done > 1 else now - began
            cfg.epochs = epoch + 1 + max(0, int((cfg.minutes * 60 - (now - began)) / per_epoch))
            total_steps = steps_per_epoch * cfg.epochs
            bar.total = cfg.epochs
        last = epoch + 1 == cfg.epochs
        if (epoch + 1) % cfg.checkpoint_every == 0 or last:
            val = _validation_loss(ema, val_x, cfg, device)
            for name, value in val.items():
                writer.add_scalar(f"{val_tag}/{name}", value, epoch + 1)
            writer.flush()
            ema.spec.extra.update({"epochs": epoch + 1, "steps": step, f"{val_tag}_loss": val["loss"], "train_loss": sums["loss"]})
            save_policy(ema, out / "prior.pt")
            atomic_save(
                {
                    "config": asdict(cfg),
                    "model": policy.network.state_dict(),
                    "ema": ema.network.state_dict(),
                    "optimizer": opt.state_dict(),
                    "generator": generator.get_state(),
                    "epoch": epoch + 1,
                    "step": step,
                },
                state_path,
                keep_previous=True,
            )
        epoch += 1
    bar.close()
    writer.close()
    return out / "prior.pt"


@torch.no_grad()
def _validation_loss(policy: DiffusionPolicy, val_x: DiffusionState, cfg: PretrainConfig, device) -> dict[str, float]:
    """Mean loss over the val split with a fixed noise seed, so epochs are comparable."""
    policy.eval()
    generator = torch.Generator(device=device).manual_seed(12345)
    totals: dict[str, float] = {}
    n = len(val_x)
    for start in range(0, n, cfg.batch_size):
        idx = np.arange(start, min(start + cfg.batch_size, n))
        parts = policy.loss(_take(val_x, idx).to(device), generator)
        for name, value in parts.items():
            totals[name] = totals.get(name, 0.0) + value.item() * len(idx) / n
    return totals
