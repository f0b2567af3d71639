"""Checkpoints in a plain, versioned format: one ``.npz`` file, no pickle.

A leader's state (θ, optimiser moments, generator states, critic weights, the follower's warm
start, replay buffers) is a nest of dicts and lists of numbers, strings, numpy arrays and torch
tensors. :func:`save_checkpoint` stores the arrays as members of an ``.npz`` archive and the rest
as JSON (with a format version) in one more member, and writes the file atomically (a crash
leaves the previous checkpoint intact). :func:`load_checkpoint` reads it with
``allow_pickle=False``, so opening a checkpoint from someone else runs no code.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["FORMAT_VERSION", "CheckpointError", "load_checkpoint", "save_checkpoint"]

#: version of the checkpoint format written by :func:`save_checkpoint`
FORMAT_VERSION = 1
_STATE = "__state__"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read (damaged, or written by an incompatible version)."""


def _encode(obj: Any, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: _encode(v, arrays) for k, v in obj.items()}
        return {"__items__": [[_encode(k, arrays), _encode(v, arrays)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, arrays) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v, arrays) for v in obj]
    if isinstance(obj, np.ndarray):
        key = f"a{len(arrays)}"
        arrays[key] = obj
        return {"__array__": key}
    if type(obj).__module__ == "torch" and type(obj).__name__ == "Tensor":
        key = f"a{len(arrays)}"
        arrays[key] = obj.detach().cpu().numpy()
        return {"__tensor__": key}
    if isinstance(obj, (np.bool_, np.integer, np.floating)):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store a {type(obj).__name__} in a checkpoint")


def _decode(obj: Any, arrays: Any) -> Any:
    if isinstance(obj, list):
        return [_decode(v, arrays) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__array__" in obj:
        return np.array(arrays[obj["__array__"]])
    if "__tensor__" in obj:
        import torch

        return torch.from_numpy(np.array(arrays[obj["__tensor__"]]))
    if "__tuple__" in obj:
        return tuple(_decode(v, arrays) for v in obj["__tuple__"])
    if "__items__" in obj:
        return {_decode(k, arrays): _decode(v, arrays) for k, v in obj["__items__"]}
    return {k: _decode(v, arrays) for k, v in obj.items()}


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` (an ``.npz`` file), atomically."""
    path = Path(path)
    arrays: dict[str, np.ndarray] = {}
    tree = _encode(state, arrays)
    meta = json.dumps({"format": FORMAT_VERSION, "state": tree})
    buffer = io.BytesIO()
    np.savez(buffer, **arrays, **{_STATE: np.array(meta)})
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(buffer.getvalue())
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises:
        CheckpointError: the file is damaged or of another format version.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data[_STATE]))
            if meta.get("format") != FORMAT_VERSION:
                raise CheckpointError(f"checkpoint {path} has format {meta.get('format')!r}; "
                                      f"this version reads format {FORMAT_VERSION}")
            return _decode(meta["state"], data)
    except CheckpointError:
        raise
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, json.JSONDecodeError) as err:
        raise CheckpointError(f"checkpoint {path} is damaged ({err})") from None
