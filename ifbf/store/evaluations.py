"""A run's evaluation files, for ``ifbf.store.rundir.RunDir`` (which names them in its docstring): metrics.json
(every evaluation of the run under its eval key, the headline one, exports for the test server) and
evaluations/<eval key>/per_image.npz (each evaluation's per-image counts, written before metrics.json names
them). What they hold is typed in ``ifbf.store.runtypes`` (``EvalResult``, ``PerImage``)."""

from __future__ import annotations

import dataclasses
import io
import zipfile
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ifbf.config import Config, EvalConfig, to_dict
from ifbf.errors import UnreadableRunFile
from ifbf.identity import config_hash, eval_key
from ifbf.store.runtypes import PER_IMAGE_COUNTS, EvalResult, PerImage, metrics_problem, per_image_problem
from ifbf.store.safefile import SCHEMA, atomic_write_bytes, check_hash, check_schema, make_dirs, read_json, write_json

METRICS = "metrics.json"
PER_IMAGE = "per_image.npz"


class EvaluationFiles:
    """metrics.json and the per-image counts of the run directory ``path``; ``expected_hash``: the config hash
    its files must carry (None: no readable config.yaml yet)."""

    def __init__(self, path: Path, expected_hash: Callable[[], str | None]) -> None:
        self.path, self.expected_hash = path, expected_hash

    def metrics(self) -> dict[str, Any] | None:
        """metrics.json (None before the first evaluation); ``UnreadableRunFile``: empty, truncated, newer, foreign."""
        metrics = read_json(self.path, METRICS, self.expected_hash())
        if metrics is not None and (problem := metrics_problem(metrics)):
            raise UnreadableRunFile(self.path, METRICS, problem)
        return metrics

    def _metrics_or_new(self, cfg: Config) -> dict[str, Any]:
        return self.metrics() or {"config_hash": config_hash(cfg), "iters": cfg.train.iters, "evaluations": {}}

    def record(self, cfg: Config, eval_cfg: EvalConfig, result: EvalResult, main: bool = False,
               key: str | None = None) -> dict[str, Any]:
        """Add one evaluation to metrics.json (``key``: default ``eval_key``), keeping others; ``main``: headline.
        Its ``counts`` go to per_image.npz first: metrics.json naming the file means it is complete."""
        key = key or eval_key(eval_cfg)
        metrics = self._metrics_or_new(cfg)
        if result.counts is not None:
            path = self.record_per_image(key, result.counts.names, result.counts.counts, config_hash(cfg))
            result = dataclasses.replace(result, per_image=str(path.relative_to(self.path)))
        entry = {"eval": to_dict(eval_cfg), **result.to_json()}
        metrics.setdefault("evaluations", {})[key] = entry
        if main:
            metrics.update({"miou": result.miou, "iou": result.iou, "eval": entry["eval"]})
        write_json(self.path, METRICS, metrics)
        return metrics

    def record_export(self, cfg: Config, eval_cfg: EvalConfig, archive: Path) -> dict[str, Any]:
        """Note in metrics.json that the test-server upload for ``eval_cfg`` exists (scored: ``server_eval_key``)."""
        metrics = self._metrics_or_new(cfg)
        metrics.setdefault("exports", {})[eval_key(eval_cfg)] = str(archive.relative_to(self.path))
        write_json(self.path, METRICS, metrics)
        return metrics

    def evaluation(self, key: str) -> EvalResult | None:
        """The result stored under eval key ``key`` in metrics.json, or None."""
        entry = (self.metrics() or {}).get("evaluations", {}).get(key)
        return None if entry is None else EvalResult.from_json(entry)

    def handled(self) -> set[str]:
        """Eval keys done for this run: evaluated here, or exported for the test server."""
        metrics = self.metrics() or {}
        return set(metrics.get("evaluations", {})) | set(metrics.get("exports", {}))

    def per_image_path(self, key: str) -> Path:
        return self.path / "evaluations" / key / PER_IMAGE

    def record_per_image(self, key: str, names: list[str], counts: Mapping[str, np.ndarray],
                         run_hash: str | None = None) -> Path:
        """Write evaluation ``key``'s per-image counts (every ``PER_IMAGE_COUNTS`` entry), atomically."""
        arrays = {name: np.asarray(a, dtype=np.int64) for name, a in counts.items()}
        if problem := per_image_problem(arrays, len(names), required=PER_IMAGE_COUNTS):
            raise ValueError(f"per-image counts: {problem}")
        path = self.per_image_path(key)
        make_dirs(path.parent)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, names=np.array(names, dtype=str), **arrays,
                            schema=np.array(SCHEMA), config_hash=np.array(run_hash or self.expected_hash() or ""))
        atomic_write_bytes(path, buffer.getbuffer())
        return path

    def per_image(self, key: str) -> PerImage | None:
        """Evaluation ``key``'s per-image counts (None: an older run, a server result); ``UnreadableRunFile``:
        truncated, corrupt, newer or foreign."""
        path = self.per_image_path(key)
        if not path.is_file():
            return None
        name = str(path.relative_to(self.path))
        try:
            with np.load(path, allow_pickle=False) as data:
                check_schema(self.path, name, int(data["schema"]) if "schema" in data else None)
                check_hash(self.path, name, str(data["config_hash"]) or None if "config_hash" in data else None,
                           self.expected_hash())
                return PerImage.of({k: data[k] for k in data.files if k not in ("schema", "config_hash")})
        except (OSError, ValueError, TypeError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as err:
            kind = "zlib.error" if isinstance(err, zlib.error) else type(err).__name__
            raise UnreadableRunFile(self.path, name, f"truncated or corrupt ({kind}: {str(err)[:120]})") from None

    def check(self) -> None:
        """Read metrics.json and every per-image file it lists: ``UnreadableRunFile`` names the first that fails."""
        for key in (self.metrics() or {}).get("evaluations", {}):
            self.per_image(key)
