"""A compact periodic denoiser in the spirit of DiffCSP's CSPNet.

Messages between every pair of atoms in a cell see the two node states, the lattice inner
products L L^T (invariant to rotations) and Fourier features of the fractional-coordinate
difference (invariant to translations and periodic). The lattice output is Phi(h) L, which
rotates with L, so the whole network is E(3)-invariant/equivariant as DiffCSP's is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class DenoiserConfig:
    """Shape of the denoiser.

    Attributes:
        num_types: atom-type channels (the vocabulary size).
        hidden: width of node and edge features.
        layers: message-passing layers.
        frequencies: Fourier frequencies of the fractional-coordinate differences.
        time_dim: width of the timestep embedding.
    """

    num_types: int  # atom-type channels (size of the element vocabulary)
    hidden: int = 128
    layers: int = 4
    frequencies: int = 10  # Fourier frequencies per fractional axis
    time_dim: int = 64


def _mlp(inp: int, hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inp, hidden), nn.SiLU(), nn.Linear(hidden, out), nn.SiLU())


def time_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of continuous time t in [0, 1], so respaced samplers need no retraining."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=t.dtype) / half)
    angles = 1000.0 * t[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class CSPLayer(nn.Module):
    """One DiffCSP message-passing layer: edges from node pairs, the lattice's inner products and Fourier features of coordinate differences."""
    def __init__(self, hidden: int, frequencies: int):
        super().__init__()
        # The first edge layer is linear in [h_i, h_j, LL^T, fourier]; applying its node parts per
        # node and broadcasting them saves most of the pairwise work.
        self.edge_src = nn.Linear(hidden, hidden)
        self.edge_dst = nn.Linear(hidden, hidden, bias=False)
        self.edge_lattice = nn.Linear(9, hidden, bias=False)
        self.edge_fourier = nn.Linear(6 * frequencies, hidden, bias=False)
        self.edge_out = nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())
        self.node = _mlp(2 * hidden, hidden, hidden)
        self.norm = nn.LayerNorm(hidden)

    def forward(self, h: torch.Tensor, fourier: torch.Tensor, lattice_ip: torch.Tensor, pair_mask: torch.Tensor) -> torch.Tensor:
        x = self.norm(h)
        pre = (
            self.edge_src(x)[:, :, None]
            + self.edge_dst(x)[:, None, :]
            + self.edge_lattice(lattice_ip)[:, None, None]
            + self.edge_fourier(fourier)
        )
        messages = self.edge_out(pre) * pair_mask[..., None]
        agg = messages.sum(2) / pair_mask.sum(2, keepdim=True).clamp(min=1)
        return h + self.node(torch.cat([x, agg], dim=-1))


class CSPDenoiser(nn.Module):
    """Predicts type noise (B,N,K), a normalised coordinate score (B,N,3) and lattice noise (B,3,3)."""

    def __init__(self, config: DenoiserConfig):
        super().__init__()
        self.config = config
        h = config.hidden
        self.time_mlp = nn.Sequential(nn.Linear(config.time_dim, h), nn.SiLU(), nn.Linear(h, h))
        self.embed = nn.Linear(config.num_types + h, h)
        self.layers = nn.ModuleList(CSPLayer(h, config.frequencies) for _ in range(config.layers))
        self.final_norm = nn.LayerNorm(h)
        self.type_out = nn.Linear(h, config.num_types)
        self.coord_out = nn.Linear(h, 3, bias=False)
        self.lattice_out = nn.Linear(h, 9, bias=False)

    def forward(self, types: torch.Tensor, frac: torch.Tensor, lattice: torch.Tensor, mask: torch.Tensor, t: torch.Tensor):
        b, n, _ = types.shape
        maskf = mask.to(types.dtype)
        temb = self.time_mlp(time_embedding(t, self.config.time_dim))
        h = self.embed(torch.cat([types, temb[:, None].expand(b, n, -1)], dim=-1))

        diff = frac[:, None, :, :] - frac[:, :, None, :]  # f_j - f_i
        k = torch.arange(1, self.config.frequencies + 1, device=frac.device, dtype=frac.dtype)
        angles = 2 * math.pi * diff[..., None] * k
        fourier = torch.cat([angles.sin(), angles.cos()], dim=-1).reshape(b, n, n, -1)
        lattice_ip = (lattice @ lattice.transpose(1, 2)).reshape(b, 9)
        eye = torch.eye(n, dtype=torch.bool, device=mask.device)
        pair_mask = (mask[:, :, None] & mask[:, None, :] & ~eye).to(types.dtype)

        for layer in self.layers:
            h = layer(h, fourier, lattice_ip, pair_mask)
        h = self.final_norm(h)
        pooled = (h * maskf[..., None]).sum(1) / maskf.sum(1, keepdim=True).clamp(min=1)
        lattice_eps = self.lattice_out(pooled).reshape(b, 3, 3) @ lattice
        return self.type_out(h) * maskf[..., None], self.coord_out(h) * maskf[..., None], lattice_eps

    def num_parameters(self) -> int:
        """Trainable parameters."""
        return sum(p.numel() for p in self.parameters())
