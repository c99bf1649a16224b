"""Property evaluation on Ray actors: each actor holds its own copy of a source (its model loaded once).

`RaySource` is a PropertySource, so everything around it stays in the driver: the `Cached` wrapper
(one cache for all actors), the evaluation count (each crystal counted once, however often it is
retried), guards and filters. A batch is split into one chunk per actor; results come back in
order. If an actor dies mid-chunk, a fresh actor replaces it and the chunk is evaluated again, so
nothing is lost and nothing is counted twice.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
from pymatgen.core import Structure

from .base import PropertySource, PropertyValues


def connect(address: str | None = "local", num_cpus: int | None = None) -> None:
    """Join the cluster at `address` ("auto", "ray://host:10001"), or start one here with "local"."""
    import ray

    if not ray.is_initialized():
        ray.init(address=None if address in (None, "local") else address, num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)


class _Evaluator:
    def __init__(self, source: PropertySource):
        self.source = source

    def evaluate(self, structures: list[Structure]) -> PropertyValues:
        return self.source(structures)

    def pid(self) -> int:
        return os.getpid()


class RaySource(PropertySource):
    """A property source evaluated on Ray actors: the batch is split among them, and a dead actor is replaced and its share retried.

    Args:
        source: the source to run remotely (pickled once to the object store).
        num_workers: actors (default: as many as the free CPUs allow).
        num_gpus: GPUs per actor.
        num_cpus: CPUs per actor.
        max_retries: retries of a share whose actor died.
    """
    def __init__(self, source: PropertySource, num_workers: int | None = None, num_gpus: float = 0.0, num_cpus: float = 1.0, max_retries: int = 3):
        import ray

        super().__init__()
        if not ray.is_initialized():
            raise RuntimeError("Ray is not initialised: call latticegym.rewards.parallel.connect(address) first")
        self.source = source
        self.name, self.unit, self.cost = source.name, source.unit, source.cost
        self.max_retries = max_retries
        self._remote = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus)(_Evaluator)
        self._payload = ray.put(source)
        # Default: as many actors as free CPUs allow (rollout workers may hold some); more would wait forever.
        n = num_workers or max(1, int(ray.available_resources().get("CPU", 1) // num_cpus))
        self.workers = [self._remote.remote(self._payload) for _ in range(n)]
        self.restarts = 0

    def compute(self, structures: Sequence[Structure]):
        return self._evaluate(list(structures)).values

    def worker_pids(self) -> list[int]:
        """Process ids of the actors (for tests and monitoring)."""
        import ray

        return ray.get([w.pid.remote() for w in self.workers])

    def _evaluate(self, structures: list[Structure]) -> PropertyValues:
        import ray
        from ray.exceptions import RayActorError

        if not structures:
            return PropertyValues(np.zeros(0), [])
        chunks = [c.tolist() for c in np.array_split(np.arange(len(structures)), min(len(self.workers), len(structures)))]
        pending = {self.workers[i].evaluate.remote([structures[j] for j in chunk]): (i, chunk, 0) for i, chunk in enumerate(chunks)}
        results: dict[int, PropertyValues] = {}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            ref = done[0]
            worker, chunk, tries = pending.pop(ref)
            try:
                results[chunk[0]] = ray.get(ref)
            except RayActorError:
                if tries >= self.max_retries:
                    raise
                # The actor died (killed, out of memory, node lost): replace it and run the chunk again.
                self.workers[worker] = self._remote.remote(self._payload)
                self.restarts += 1
                pending[self.workers[worker].evaluate.remote([structures[j] for j in chunk])] = (worker, chunk, tries + 1)
        ordered = [results[c[0]] for c in chunks]
        return PropertyValues(np.concatenate([r.values for r in ordered]), [reason for r in ordered for reason in r.reasons])


def distribute(reward, num_workers: int | None = None, num_gpus: float = 0.0) -> int:
    """Move every costly property source of a CompositeReward onto Ray actors, in place; returns how many.

    Caches stay in the driver (`Cached` keeps wrapping, now around the RaySource); cheap sources
    (composition formulas) stay local, where they cost less than a remote call.
    """
    from .cache import Cached

    moved = 0
    for obj in getattr(reward, "objectives", []):
        holder, source = (obj.source, obj.source.source) if isinstance(obj.source, Cached) else (obj, obj.source)
        if source.cost == "cheap" or isinstance(source, RaySource):
            continue
        remote = RaySource(source, num_workers, num_gpus)
        if holder is obj:
            obj.source = remote
        else:
            holder.source = remote
        moved += 1
    return moved
