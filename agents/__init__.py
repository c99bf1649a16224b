"""RL fine-tuning of the diffusion prior: PPO over denoising steps, MatInvent-style reward-weighted KL,
REINFORCE, trajectory replay, and the resumable trainer behind `latticegym train`."""
