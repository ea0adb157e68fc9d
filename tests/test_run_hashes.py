"""Stored runs keep their identity: the config hash of every cell of every table, preset, seed 0..3 and
weights setting (none given, a file, from scratch) is the one the runs on disk were stored under
(tests/data/run_hashes.txt, written before issue 17). A new config field changes them all unless
``identity.LEGACY_DEFAULTS`` maps it to the value that reproduces the stored runs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ifbf.config import WeightsConfig
from ifbf.experiments import load_paper, load_preset, load_table, presets, table_cells

STORED = Path(__file__).parent / "data" / "run_hashes.txt"
WEIGHTS_CONTENT = b"fake weights"  # the file's sha256 enters the hash, not its path


def current_lines(weights_file: Path) -> list[str]:
    """The lines of run_hashes.txt as this code computes them: preset, weights, table, row, seed, hash, eval key."""
    keys = [f.name for f in dataclasses.fields(WeightsConfig)]
    settings = {"default": (), "file": tuple(f"model.weights.{k}={weights_file}" for k in keys),
                "none": tuple(f"model.weights.{k}=none" for k in keys)}
    lines = []
    for preset in presets():
        for tag, extra in settings.items():
            for number in load_paper().tables:
                for cell in table_cells(load_table(number), load_preset(preset), 4, extra):
                    lines.append(f"{preset} {tag} {number} {cell.row.name} {cell.seed} {cell.run_hash} {cell.eval_key}")
    return lines


def test_every_stored_run_keeps_its_hash(tmp_path):
    weights = tmp_path / "w.pth"
    weights.write_bytes(WEIGHTS_CONTENT)
    stored = STORED.read_text().splitlines()
    now = current_lines(weights)
    stored_cells = {line.rsplit(" ", 2)[0]: line for line in stored}
    changed = [f"{stored_cells[line.rsplit(' ', 2)[0]]}  ->  {line}" for line in now
               if line.rsplit(" ", 2)[0] in stored_cells and line != stored_cells[line.rsplit(" ", 2)[0]]]
    assert not changed, (
        f"{len(changed)} run hash(es) changed, so every stored run would be trained again. A new config field "
        "must not change the identity of existing configs: add it to identity.LEGACY_DEFAULTS (ifbf/identity.py) "
        "with the value that reproduces the stored runs. First changes:\n" + "\n".join(changed[:5]))
    assert set(stored_cells) <= {line.rsplit(" ", 2)[0] for line in now}, "a stored cell is no longer planned"
