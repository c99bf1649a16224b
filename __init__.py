"""latticegym: crystal generation as reinforcement learning.

Importing the package registers the LatticeGym/* Gymnasium environments (the moment Gymnasium itself is
imported, so that the layers below the envs never load it); `register_task` adds one of your own.
"""

from typing import Any

from wrapt import when_imported

from .envs.tasks import register_task as register_task

__version__ = "0.1.0"
DEFAULT_THREADS = 1  # torch intra-op threads the CLI uses; see `set_threads`

# Third-party modules whose chatter (prints, warnings) is hidden unless asked for.
CHATTY = r"(chgnet|matgl|dgl|pymatgen|torch|smact|matminer|spglib|ase)(\.|$)"


@when_imported("gymnasium")  # at once if Gymnasium is already imported
def _register(_gymnasium) -> None:
    from .envs.registration import register_envs

    register_envs()


def make_vec(env_id: str, num_envs: int = 8, **kwargs: Any):
    """The batched env of a registered id: `gymnasium.make_vec(..., vectorization_mode="vector_entry_point")`.

    Args:
        env_id: a registered id, e.g. "LatticeGym/PerovskiteLowHHI-v0".
        num_envs: crystals denoised in lockstep (>= 1).
        **kwargs: passed to the env constructor (`prior`, `reward`, `num_steps`, `device`).
    """
    import gymnasium

    return gymnasium.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", **kwargs)


def set_threads(threads: int = DEFAULT_THREADS) -> None:
    """Set torch's intra-op threads for this process.

    Our models are small, so a second thread buys little on an idle machine and, on a busy one,
    threads that wait for each other can slow a step many times (see the README's "Threads").
    """
    import torch

    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)


def quiet_libraries(verbose: bool = False) -> None:
    """Route latticegym's log records to stderr (INFO with `verbose`, else WARNING) and, unless
    `verbose`, hide the warnings that third-party libraries (CHGNet, torch, pymatgen...) emit."""
    import logging
    import warnings

    logger = logging.getLogger("latticegym")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO if verbose else logging.WARNING)
    if not verbose:
        for category in (UserWarning, DeprecationWarning, FutureWarning, RuntimeWarning):
            warnings.filterwarnings("ignore", category=category, module=CHATTY)
