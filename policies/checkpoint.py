"""Saving and loading diffusion policies; the priors shipped with the package."""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import torch

from .diffusion import DiffusionPolicy, PriorSpec
from .network import DenoiserConfig

SHIPPED = Path(__file__).parent / "checkpoints"
FORMAT = 1


def save_policy(policy: DiffusionPolicy, path: str | Path) -> Path:
    """Write weights plus everything needed to rebuild the policy; atomic, so a kill never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "spec": asdict(policy.spec),
        "denoiser": asdict(policy.network.config),
        "state_dict": {k: v.detach().cpu() for k, v in policy.network.state_dict().items()},
    }
    atomic_save(payload, path)
    return path


def atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def policy_from_payload(payload: dict, num_steps: int = 100, device: str | torch.device = "cpu") -> DiffusionPolicy:
    if payload.get("format") != FORMAT:
        raise ValueError(f"unsupported checkpoint format {payload.get('format')!r} (this version reads {FORMAT})")
    spec = PriorSpec(**payload["spec"])
    spec.num_atoms = {int(k): int(v) for k, v in spec.num_atoms.items()}
    policy = DiffusionPolicy(spec, DenoiserConfig(**payload["denoiser"]), num_steps=num_steps)
    policy.network.load_state_dict(payload["state_dict"])
    return policy.to(device).eval()


def load_policy(path: str | Path, num_steps: int = 100, device: str | torch.device = "cpu") -> DiffusionPolicy:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return policy_from_payload(torch.load(path, map_location="cpu", weights_only=False), num_steps, device)


def available_priors() -> list[str]:
    return sorted(p.stem for p in SHIPPED.glob("*.pt"))


def load_prior(name_or_path: str | Path, num_steps: int = 100, device: str | torch.device = "cpu") -> DiffusionPolicy:
    """A shipped prior by name (`perov_5`, `carbon_24`) or any checkpoint by path; works offline."""
    path = Path(name_or_path)
    if not path.exists():
        path = SHIPPED / f"{name_or_path}.pt"
        if not path.exists():
            raise FileNotFoundError(f"no prior named {name_or_path!r}; shipped priors: {', '.join(available_priors()) or 'none'}")
    return load_policy(path, num_steps, device)
