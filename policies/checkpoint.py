"""Saving and loading diffusion policies; the priors shipped with the package."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from ..files import CheckpointError, atomic_save, load_checkpoint, non_finite
from ..crystal import MAX_ATOMS
from .diffusion import DiffusionPolicy, PriorSpec
from .network import DenoiserConfig

SHIPPED = Path(__file__).parent / "checkpoints"
FORMAT = 1


def save_policy(policy: DiffusionPolicy, path: str | Path) -> Path:
    """Write weights plus everything needed to rebuild the policy; atomic, so a kill never leaves half a file."""
    path = Path(path)
    bad = non_finite(policy.network.state_dict())
    if bad:
        raise ValueError(f"refusing to write {path}: the policy has non-finite weights (NaN or inf) in {len(bad)} tensors, e.g. {bad[0]}")
    payload = {
        "format": FORMAT,
        "spec": asdict(policy.spec),
        "denoiser": asdict(policy.network.config),
        "state_dict": {k: v.detach().cpu() for k, v in policy.network.state_dict().items()},
    }
    atomic_save(payload, path)
    return path


def policy_from_payload(payload: dict, num_steps: int = 100, device="cpu", source: str = "checkpoint") -> DiffusionPolicy:
    """Rebuild a policy from `save_policy`'s dict; anything else is a CheckpointError that says why."""
    if "format" not in payload and "iteration" in payload:
        raise CheckpointError(f"{source} is a training checkpoint, not a policy; pass the run's policy.pt or the run directory")
    if "format" not in payload and "ema" in payload:
        raise CheckpointError(f"{source} is a pretraining checkpoint, not a policy; pass the run's prior.pt")
    if payload.get("format") != FORMAT:
        raise CheckpointError(f"{source} is not a latticegym prior: format {payload.get('format')!r}, this version reads {FORMAT}")
    try:
        spec = PriorSpec(**payload["spec"])
        spec.num_atoms = {int(k): int(v) for k, v in spec.num_atoms.items()}
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{source} is not a latticegym prior: {type(exc).__name__}: {str(exc)[:300]}") from exc
    if not spec.num_atoms or not all(1 <= n <= MAX_ATOMS for n in spec.num_atoms):
        raise CheckpointError(f"{source} asks for crystals of {max(spec.num_atoms, default=0)} atoms; latticegym handles 1..{MAX_ATOMS}")
    try:
        policy = DiffusionPolicy(spec, DenoiserConfig(**payload["denoiser"]), num_steps=1)
        policy.network.load_state_dict(payload["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{source} is not a latticegym prior: {type(exc).__name__}: {text[:300]}") from exc
    bad = non_finite(payload["state_dict"])
    if bad:
        raise CheckpointError(f"{source} has non-finite weights (NaN or inf) in {len(bad)} tensors, e.g. {bad[0]}; it cannot be sampled")
    policy.set_num_steps(num_steps)  # outside the try: a step count the prior cannot take is the caller's error, not the file's
    return policy.to(check_device(device)).eval()


def check_device(device) -> str:
    """`device` if torch can use it here, else a ValueError that lists the devices there are."""
    import torch

    name = str(device)
    try:
        torch.empty(0, device=name)
    except (RuntimeError, AssertionError) as exc:
        available = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        raise ValueError(f"device {name!r} is not available here ({type(exc).__name__}: {str(exc).splitlines()[0]}); devices: {', '.join(available)}") from None
    return name


def load_policy(path: str | Path, num_steps: int = 100, device="cpu") -> DiffusionPolicy:
    """A policy from a `.pt` file written by `save_policy`, or from a run directory (its policy.pt)."""
    path = Path(path)
    if path.is_dir():
        for name in ("policy.pt", "prior.pt"):
            if (path / name).exists():
                path = path / name
                break
        else:
            raise CheckpointError(f"{path} is a directory without policy.pt or prior.pt; pass a run directory or a policy file")
    return policy_from_payload(load_checkpoint(path, fallback=False), num_steps, device, source=str(path))


def available_priors() -> list[str]:
    """Names of the priors shipped with the package."""
    return sorted(p.stem for p in SHIPPED.glob("*.pt"))


def load_prior(name_or_path: str | Path, num_steps: int = 100, device="cpu") -> DiffusionPolicy:
    """A shipped prior by name (`perov_5`, `carbon_24`) or any checkpoint by path; works offline."""
    path = Path(name_or_path)
    if not path.exists():
        path = SHIPPED / f"{name_or_path}.pt"
        if not path.exists():
            raise FileNotFoundError(f"no prior named {name_or_path!r}; shipped priors: {', '.join(available_priors()) or 'none'}")
    return load_policy(path, num_steps, device)
