"""A run's log.jsonl, for ``ifbf.store.rundir.RunDir``: a header line {"schema", "config_hash"}, then one line per
log step and per curve validation (``ifbf.store.runtypes.StepRecord``, ``ValRecord``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from ifbf.errors import UnreadableRunFile
from ifbf.store.runtypes import LogRecord, log_record_from_json
from ifbf.store.safefile import SCHEMA, atomic_write_text, check_hash, check_schema, raise_for_write

LOG = "log.jsonl"


class RunLog:
    """log.jsonl of the run directory ``run``; ``expected_hash``: the config hash its header must carry."""

    def __init__(self, run: Path, expected_hash: Callable[[], str | None]) -> None:
        self.run, self.path, self.expected_hash = run, run / LOG, expected_hash

    def _header(self) -> str:
        return json.dumps({"schema": SCHEMA, "config_hash": self.expected_hash()}) + "\n"

    def append(self, record: LogRecord) -> None:
        """One line per log step; a new log starts with its header (schema version, config hash)."""
        fresh = not self.path.is_file() or self.path.stat().st_size == 0
        try:
            with self.path.open("a") as f:
                f.write((self._header() if fresh else "") + json.dumps(record.to_json()) + "\n")
        except OSError as err:
            raise_for_write(err, self.path)
            raise

    def read(self) -> list[LogRecord]:
        """The log's records (its header checked, left out); ``UnreadableRunFile``: torn, newer or foreign."""
        if not self.path.is_file():
            return []
        records = []
        lines = enumerate(self.path.read_text(errors="replace").splitlines(), 1)
        for number, line in ((n, line) for n, line in lines if line):
            try:
                data = json.loads(line)
            except json.JSONDecodeError:
                raise UnreadableRunFile(self.run, LOG, f"line {number} is not JSON: truncated or corrupt") from None
            if not isinstance(data, dict):
                raise UnreadableRunFile(self.run, LOG, f"line {number} is not a JSON object")
            if "schema" in data:
                check_schema(self.run, LOG, data["schema"])
                check_hash(self.run, LOG, data.get("config_hash"), self.expected_hash())
                continue
            try:
                records.append(log_record_from_json(data))
            except ValueError as err:
                raise UnreadableRunFile(self.run, LOG, f"line {number}: {err}") from None
        return records

    def truncate(self, last_iter: int) -> None:
        """Drop lines after ``last_iter`` (written by a run that died after its last checkpoint), and lines that do
        not parse (torn by a crash or a full disk): what resuming rewrites, it rewrites readable. The lines kept
        are kept as written."""
        if not self.path.is_file():
            return
        kept = []
        for line in self.path.read_text(errors="replace").splitlines():
            try:
                record = log_record_from_json(json.loads(line))
            except (json.JSONDecodeError, ValueError, AttributeError):  # torn, the header, or not an object
                continue
            if record.iter <= last_iter:
                kept.append(line + "\n")
        atomic_write_text(self.path, self._header() + "".join(kept))
