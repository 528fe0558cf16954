"""Model size without loading the model: the parameter count from safetensors headers.

A safetensors file starts with an 8-byte little-endian header length and a JSON header giving every
tensor's shape, so counting parameters reads a few kilobytes, never the weights. Hosts use it to
refuse models above a size limit before spending the memory to load them.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

from tnd_core.errors import TndError

# a header larger than this is not a real safetensors header (real ones are kilobytes to a few megabytes)
MAX_HEADER_BYTES = 100 * 2**20


def safetensors_parameters(path: str | Path) -> int:
    """Number of parameters stored in one .safetensors file, read from its header."""
    path = Path(path)
    with path.open("rb") as handle:
        raw_length = handle.read(8)
        if len(raw_length) != 8:
            raise TndError(f"{path.name} is not a safetensors file: it is shorter than its header")
        (length,) = struct.unpack("<Q", raw_length)
        if length > MAX_HEADER_BYTES:
            raise TndError(f"{path.name} is not a safetensors file: its header claims {length} bytes")
        try:
            header = json.loads(handle.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise TndError(f"{path.name} is not a safetensors file: its header is not JSON") from None
    if not isinstance(header, dict):
        raise TndError(f"{path.name} is not a safetensors file: its header is not a mapping")
    total = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        shape = entry.get("shape") if isinstance(entry, dict) else None
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise TndError(f"{path.name} is not a safetensors file: tensor {name[:80]!r} has no valid shape")
        total += math.prod(shape)
    return total


def folder_parameters(folder: str | Path) -> int:
    """Parameters of the model saved in `folder` (every .safetensors file in it, shards included).

    Raises TndError when the folder holds no safetensors weights (e.g. only pickled .bin files).
    """
    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise TndError("the model folder holds no .safetensors weights")
    return sum(safetensors_parameters(f) for f in files)
