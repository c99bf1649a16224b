"""latticegym: crystal generation as reinforcement learning.

Importing the package registers the LatticeGym/* Gymnasium environments.
"""

from .envs.registration import register_envs

__version__ = "0.1.0"

register_envs()


def make_vec(env_id: str, num_envs: int = 8, **kwargs):
    """The batched env of a registered id: `gymnasium.make_vec(..., vectorization_mode="vector_entry_point")`."""
    import gymnasium

    return gymnasium.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", **kwargs)
