"""sha256 of large files (ImageNet weights, dataset manifests), cached by (path, size, mtime).

A 170 MB checkpoint takes about a second to hash; plans hash the weights of every row, so the digest
is kept in a small JSON cache ($XDG_CACHE_HOME/ifbf/sha256.json, default ~/.cache/ifbf) and reused
while the file's size and modification time are unchanged. Torch-free: config hashing imports it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

CHUNK = 1 << 20


def cache_file() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "ifbf" / "sha256.json"


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(path: Path, data: dict) -> None:
    """Atomic replace; a cache that cannot be written (read-only home) only costs a re-hash."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        pass


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_digest(path: str | Path) -> str:
    """Hex sha256 of ``path``, from the cache when its size and mtime are those recorded there."""
    path = Path(path).resolve()
    stat = path.stat()
    key = str(path)
    cache = cache_file()
    entries = _read_cache(cache)
    entry = entries.get(key)
    if isinstance(entry, dict) and entry.get("size") == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns:
        return str(entry["sha256"])
    digest = sha256_of(path)
    entries = _read_cache(cache)  # re-read: another process may have added entries meanwhile
    entries[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
    _write_cache(cache, entries)
    return digest
