"""Files a run writes and reads: atomic saves that keep the last good copy, loads that never execute
code, and an exclusive lock on a run directory.

Like `crystal.py` and `datasets.py` this is a base module: it imports nothing else from latticegym,
so policies, rewards and agents can all use it.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import pickle
import sys
import warnings
import zipfile
from pathlib import Path
from typing import BinaryIO, Callable

import numpy as np
import torch
from pymatgen.core import Structure

LOCK_NAME = ".lock"


def restore_generator(generator: torch.Generator, saved: torch.Tensor, what: str) -> None:
    """Continue a saved torch random stream in `generator`.

    CPU and CUDA generators keep different states, so a run moved between them (a GPU run finished on
    a CPU) continues from a seed drawn from the saved state, with a warning naming `what`.
    """
    saved = saved.cpu()
    if saved.numel() == generator.get_state().numel():
        generator.set_state(saved)
        return
    seed = int.from_bytes(hashlib.sha256(saved.numpy().tobytes()).digest()[:8], "little") >> 1
    generator.manual_seed(seed)
    warnings.warn(f"{what} was saved on another kind of device; it continues on {generator.device} with a new random stream (seed {seed}, drawn from the saved state)", stacklevel=2)


def same_content(a: str | Path | None, b: str | Path | None) -> bool:
    """Whether two paths name files with the same bytes (a data file moved with a run between machines)."""
    if a is None or b is None or not Path(a).is_file() or not Path(b).is_file():
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        return hashlib.file_digest(fa, "sha256").digest() == hashlib.file_digest(fb, "sha256").digest()


class CheckpointError(ValueError):
    """A file that is not a readable latticegym checkpoint; the message says which file and why."""


def previous(path: Path) -> Path:
    """Where `atomic_save(..., keep_previous=True)` keeps the copy it replaced."""
    return path.with_name(path.name + ".prev")


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object], keep_previous: bool = False) -> Path:
    """Write `path` through `write(handle)` so that a kill or a full disk never leaves half a file.

    The data goes to a temporary beside `path` whose name is this process's own (so two processes
    never share one), is flushed to disk, then renamed over `path`. With `keep_previous` the file it
    replaces survives as `path.prev`, for `load_checkpoint` to fall back to. On failure the
    temporary is removed, `path` is untouched and an OSError names the file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
    except (OSError, RuntimeError) as exc:
        tmp.unlink(missing_ok=True)
        kept = f"; the last good {path.name} is kept" if path.exists() else ""
        raise OSError(f"could not write {path} ({_first_line(exc)}){kept}") from exc
    if keep_previous and path.exists():
        os.replace(path, previous(path))
    os.replace(tmp, path)
    return path


def read_cache(path: Path, load: Callable[[Path], object], valid: Callable[[object], bool]):
    """What a cache file holds, or None when it is missing, unreadable or not what we write (a warning names it; it is rebuilt)."""
    if not path.exists():
        return None
    try:
        content = load(path)
        if valid(content):
            return content
        why = "it does not hold what latticegym writes there"
    except Exception as exc:  # truncated, not JSON/npz, unreadable: any of them means rebuild
        why = f"{type(exc).__name__}: {_first_line(exc)}"
    warnings.warn(f"ignoring the cache file {path} ({why}); rebuilding it", stacklevel=2)
    return None


def write_cache(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """`atomic_write` of a cache file, or a warning when the cache cannot be written: a cache never costs the work it holds."""
    try:
        atomic_write(path, write)
    except OSError as exc:
        warnings.warn(f"the cache {path} could not be written ({_first_line(exc)}); the result is used but not kept", stacklevel=2)


def atomic_text(path: str | Path, text: str) -> Path:
    """`atomic_write` of a text file (UTF-8)."""
    return atomic_write(path, lambda handle: handle.write(text.encode()))


def atomic_save(obj, path: str | Path, keep_previous: bool = False) -> None:
    """`atomic_write` of `obj` with torch.save."""
    atomic_write(path, lambda handle: torch.save(obj, handle), keep_previous)


def clear_temporaries(folder: str | Path) -> list[Path]:
    """Remove the `*.tmp` files a killed save left in `folder`; returns what was removed."""
    stale = sorted(Path(folder).glob("*.tmp"))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def load_checkpoint(path: str | Path, fallback: bool = True) -> dict:
    """Read a dict saved by `atomic_save` with `weights_only=True`: tensors and plain data only, no code runs.

    A corrupt or truncated file falls back, with a warning naming it, to the `.prev` copy when there
    is one (and `fallback`); otherwise a CheckpointError says what is wrong with the file.
    """
    path = Path(path)
    try:
        return _load(path)
    except CheckpointError as exc:
        prev = previous(path)
        if not fallback or not prev.exists():
            raise
        warnings.warn(f"{exc}; falling back to the previous checkpoint {prev}", stacklevel=2)
        return _load(prev)


def _load(path: Path) -> dict:
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory, not a checkpoint file")
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): not a latticegym checkpoint")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path} is not a torch checkpoint (no zip archive: truncated, or another kind of file)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{path} was refused: it holds Python objects other than tensors and plain data, which latticegym never writes ({_first_line(exc)})") from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise CheckpointError(f"{path} is not a readable torch checkpoint (truncated or another format): {_first_line(exc)}") from exc
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a latticegym checkpoint (a dict)")
    return obj


# Checkpoints hold only what `weights_only=True` reads: tensors, numbers, strings and containers.
# `to_plain` turns the few richer objects a run saves into those, and `from_plain` turns them back,
# rebuilding only dataclasses that have opted in with `@saveable`: an allow-list, not arbitrary code.
_SAVEABLE: dict[str, type] = {}


def saveable(cls: type) -> type:
    """Class decorator: instances of this dataclass may be written to and rebuilt from a checkpoint."""
    _SAVEABLE[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return cls


def to_plain(obj):
    """`obj` with Structures, numpy arrays and `@saveable` dataclasses turned into plain data."""
    if isinstance(obj, Structure):
        return {"__structure__": json.dumps(obj.as_dict())}
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            return {"__object_array__": [to_plain(x) for x in obj.tolist()]}
        return {"__ndarray__": torch.from_numpy(np.ascontiguousarray(obj).copy())}
    if isinstance(obj, np.generic):
        return obj.item()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        name = f"{type(obj).__module__}.{type(obj).__qualname__}"
        if name not in _SAVEABLE:
            raise TypeError(f"{name} is not marked @saveable, so it cannot go into a checkpoint")
        return {"__dataclass__": name, "fields": {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}}
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}  # a Counter becomes a plain dict
    if isinstance(obj, tuple) and type(obj) is tuple:
        return tuple(to_plain(x) for x in obj)
    if isinstance(obj, (list, tuple)):  # lists, and named tuples as lists
        return [to_plain(x) for x in obj]
    return obj


def from_plain(obj):
    """The inverse of `to_plain`."""
    if isinstance(obj, dict):
        if "__structure__" in obj:
            return _structure(obj["__structure__"])
        if "__ndarray__" in obj:
            return obj["__ndarray__"].numpy()
        if "__object_array__" in obj:
            items = [from_plain(x) for x in obj["__object_array__"]]
            out = np.empty(len(items), dtype=object)
            out[:] = items
            return out
        if "__dataclass__" in obj:
            cls = _SAVEABLE.get(obj["__dataclass__"])
            if cls is None:
                raise CheckpointError(f"checkpoint names {obj['__dataclass__']}, which latticegym does not save")
            return cls(**{k: from_plain(v) for k, v in obj["fields"].items()})
        return {k: from_plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [from_plain(x) for x in obj]
    if isinstance(obj, tuple):
        return tuple(from_plain(x) for x in obj)
    return obj


def _structure(text: str) -> Structure:
    """A Structure from its saved `as_dict` JSON, built by hand: monty's decoder would import any `@module` a site property names."""
    try:
        d = json.loads(text)
        matrix = d["lattice"]["matrix"]
        species, coords, properties = [], [], []
        for site in d["sites"]:
            (occupant,) = site["species"]
            species.append(occupant["element"])
            coords.append(site["abc"])
            properties.append(site.get("properties") or {})
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"a saved structure is malformed ({type(exc).__name__}: {exc})") from None
    for props in properties:
        for name, value in props.items():
            text = json.dumps(value)
            if "@module" in text or "@class" in text:
                raise CheckpointError(f"a saved structure's site property {name!r} names a class ({text[:80]}); refusing to import it")
    names = sorted({k for props in properties for k in props})
    site_properties = {k: [props.get(k) for props in properties] for k in names}
    return Structure(matrix, species, coords, site_properties=site_properties)


def non_finite(state_dict: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors that hold NaN or infinity."""
    return [k for k, v in state_dict.items() if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all()]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class RunLockedError(RuntimeError):
    """Another live process holds the run directory."""


class RunLock:
    """An exclusive lock on a run directory, held for the life of the process that takes it.

    The lock is an `flock` on `DIR/.lock`, which the kernel drops when the holder exits, even on
    SIGKILL, so a killed run never leaves a stale lock. The file names the holder's pid and command.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self._handle = None

    def acquire(self) -> RunLock:
        """Take the lock or raise RunLockedError naming the process that holds it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        handle = open(self.folder / LOCK_NAME, "a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown process"
            handle.close()
            raise RunLockedError(f"{self.folder} is in use by {holder}; wait for it to finish or choose another --out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()} ({' '.join(sys.argv)[:200]})\n")
        handle.flush()
        self._handle = handle
        return self

    def release(self) -> None:
        """Drop the lock (also dropped when the process exits)."""
        if self._handle is not None:
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
