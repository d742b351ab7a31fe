"""Resumable results: per-sample results of each (method, shard of samples) in one JSON file under the
output folder; a shard whose file exists is read back, not recomputed."""

from __future__ import annotations

import json
import os
from pathlib import Path


class ShardStore:
    """``DIR/config.json`` (what the results depend on, methods aside) and ``DIR/shards/METHOD/START-STOP.json``."""

    def __init__(self, folder: str | Path, config: dict):
        self.folder = Path(folder)
        self.config = config

    def check(self) -> None:
        """One clear error when the folder holds results of another configuration."""
        path = self.folder / "config.json"
        if path.exists():
            stored = json.loads(path.read_text())
            changed = sorted(
                key for key in {*stored, *self.config} if stored.get(key) != self.config.get(key)
            )
            if changed:
                raise ValueError(
                    f"{self.folder} holds results computed with other settings ({', '.join(changed)}); "
                    "use another -o folder, or remove it to start over"
                )

    def write_config(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "config.json").write_text(json.dumps(self.config, indent=2) + "\n")

    def path(self, method: str, start: int, stop: int) -> Path:
        return self.folder / "shards" / method.replace("/", "_") / f"{start:06d}-{stop:06d}.json"

    def load(self, method: str, start: int, stop: int) -> list[dict] | None:
        """The shard's per-sample results, or None if it was never completed."""
        path = self.path(method, start, stop)
        return json.loads(path.read_text()) if path.exists() else None

    def save(self, method: str, start: int, stop: int, results: list[dict]) -> None:
        """Write atomically (temporary file, then rename): an interrupted write leaves no shard behind."""
        path = self.path(method, start, stop)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps(results))
        partial.replace(path)


def shard_ranges(count: int, size: int) -> list[tuple[int, int]]:
    """[(start, stop)] covering samples 0..count-1 in shards of ``size``."""
    if size < 1:
        raise ValueError(f"--shard-size must be at least 1, got {size}")
    return [(start, min(start + size, count)) for start in range(0, count, size)]
