"""Fault injection (docs/reliability.md): untrusted checkpoints, full and read-only disks while writing (run files
and every output), truncated, corrupt and foreign run files and preflight.json, temporary files of killed
writers. Every case asserts no traceback, the one-line message, the exit code, and that nothing is lost."""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TINY_TRAIN
from fakeruns import confusions, finish_run
from ifbf.store import safefile
from ifbf.commands.cli import main as ifbf
from ifbf.commands.reproduce import cli as reproduce
from ifbf.config import BASE_CONFIG, load_config
from ifbf.data.cache import open_cache, write_split
from ifbf.data.cityscapes import find_samples
from ifbf.engine.checkpoint import resume_state
from ifbf.engine.run import run
from ifbf.errors import NoSpace, UnreadableRunFile
from ifbf.experiments import load_preset, load_table
from ifbf.identity import config_hash
from ifbf.orchestrate.jobs import TrainJob
from ifbf.orchestrate.plan import build_plan
from ifbf.store.measurement import Measurement, preflight_from_json
from ifbf.store.rundir import SCHEMA, Environment, EvalResult, PerImage, RunDir, StepRecord, read_status, write_status

TINY = [*TINY_TRAIN, "train.iters=4", "runtime.ckpt_every=2"]


def tiny(*extra: str):
    return load_config(BASE_CONFIG, [*TINY, *extra])


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished tiny run: checkpoint.pth at iteration 4, checkpoint.prev.pth at 2."""
    out = tmp_path_factory.mktemp("trained") / "run"
    run(tiny(), out, progress=False)
    return out


def copy_of(trained: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(trained, tmp_path / "run"))


def one_line_error(argv: list[str], capsys, command=ifbf) -> str:
    """Run a command in-process; it must fail with exit 2 and exactly one stderr line (no traceback)."""
    assert command(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def full_disk(monkeypatch, name: str, after: int = 0) -> None:
    """Writes of ``name`` (its temporary file) fail with ENOSPC after ``after`` bytes; other files are written."""
    real = safefile.open_for_write

    class Full:
        def __init__(self, path: Path) -> None:
            self.f, self.written = real(path), 0

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.f.close()

        def write(self, data) -> int:
            room = max(0, after - self.written)
            self.f.write(bytes(data)[:room])
            self.written += min(room, len(data))
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safefile, "open_for_write", lambda p: Full(p) if p.name.startswith(f".{name}.tmp") else real(p))


# --- 1. no code from data files ------------------------------------------------------------------------

class _Payload:
    def __init__(self, how: str, marker: Path) -> None:
        self.how, self.marker = how, marker

    def __reduce__(self):
        if self.how == "os.system":
            return os.system, (f"touch {self.marker}",)
        return open, (str(self.marker), "w")


@pytest.mark.parametrize("how", ["os.system", "builtins.open"])
@pytest.mark.parametrize("action", ["evaluate", "resume", "export"])
def test_checkpoint_with_a_payload_is_refused(tmp_path, capsys, how, action):
    cfg = tiny()
    run_dir = RunDir(tmp_path / "run")
    run_dir.claim(cfg)
    marker = tmp_path / "pwned"
    torch.save({"iter": 4, "config_hash": config_hash(cfg), "model": {}, "x": _Payload(how, marker)},
               run_dir.checkpoint)
    argv = {"evaluate": ["evaluate", "--run", str(run_dir.path), "--no-progress"],
            "resume": ["train", "--out", str(run_dir.path), "--no-progress", *TINY],
            "export": ["export", "--run", str(run_dir.path), "--out", str(tmp_path / "export"), "--no-progress"]}
    err = one_line_error(argv[action], capsys)
    assert f"refusing to {action} {run_dir.checkpoint}: it holds more than tensors and plain types" in err
    assert ("posix.system" if how == "os.system" else "io.open") in err
    assert not marker.exists()


def test_server_result_is_bounded(tmp_path):
    from ifbf.engine.server_result import MAX_BYTES, ServerResultError, parse_server_result

    big = tmp_path / "result.json"
    big.write_text('{"road": 98.0' + " " * MAX_BYTES + "}")
    with pytest.raises(ServerResultError, match="bytes; a server result"):
        parse_server_result(big)
    nested = tmp_path / "nested.json"
    nested.write_text('{"classScores": [1, 2]}')
    with pytest.raises(ServerResultError, match="classScores"):
        parse_server_result(nested)
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ServerResultError):
        parse_server_result(deep)


# --- 2. checkpoints: earlier versions, corruption, full disk ----------------------------------------------

def _legacy(path: Path) -> None:
    """Rewrite ``path`` the way ifbf wrote checkpoints before: numpy's RNG state as its tuple (an ndarray
    inside), no schema, no checksum (the previous version's torch.save of the same dict)."""
    state = torch.load(path, weights_only=False)
    state.pop("schema"), state.pop("checksum")
    numpy = state["rng"]["numpy"]
    state["rng"]["numpy"] = (numpy["bit_generator"], numpy["key"].numpy().astype(np.uint32), numpy["pos"],
                             numpy["has_gauss"], numpy["gauss"])
    torch.save(state, path)


def _same_weights(a: Path, b: Path) -> bool:
    sa, sb = (torch.load(p / "checkpoint.pth", weights_only=True) for p in (a, b))
    return sa["iter"] == sb["iter"] and all(torch.equal(sa["model"][k], sb["model"][k]) for k in sa["model"])


@pytest.mark.parametrize("damage", ["truncated", "bit flip"])
def test_corrupt_checkpoint_evaluate_says_so_and_offers_previous(trained, tmp_path, capsys, damage):
    run_dir = copy_of(trained, tmp_path)
    data = bytearray((run_dir / "checkpoint.pth").read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    else:
        data[len(data) // 2] ^= 0x10  # inside the tensor data: torch itself would load it silently
    (run_dir / "checkpoint.pth").write_bytes(bytes(data))
    metrics = (run_dir / "metrics.json").read_bytes()
    err = one_line_error(["evaluate", "--run", str(run_dir), "--flip", "--no-progress"], capsys)
    assert f"cannot evaluate {run_dir / 'checkpoint.pth'}: truncated or corrupt" in err
    assert f"the previous checkpoint {run_dir / 'checkpoint.prev.pth'} is there" in err
    assert (run_dir / "metrics.json").read_bytes() == metrics


def test_corrupt_last_checkpoint_resumes_from_a_previous_one_of_the_old_format(trained, tmp_path, capsys):
    """checkpoint.pth bit-flipped, checkpoint.prev.pth (iteration 2) written by the previous ifbf version:
    training resumes from iteration 2 and ends with exactly the weights of the uninterrupted run."""
    run_dir = copy_of(trained, tmp_path)
    (run_dir / "metrics.json").unlink()
    shutil.rmtree(run_dir / "evaluations")
    data = bytearray((run_dir / "checkpoint.pth").read_bytes())
    data[len(data) // 2] ^= 0x01
    (run_dir / "checkpoint.pth").write_bytes(bytes(data))
    _legacy(run_dir / "checkpoint.prev.pth")
    run(tiny(), run_dir, progress=False)
    out = capsys.readouterr().out
    assert "checksum does not match" in out and "resuming from checkpoint.prev.pth" in out
    assert "from iteration 2" in out
    assert (run_dir / "checkpoint.pth.unreadable").is_file()
    assert _same_weights(trained, run_dir)


def test_full_disk_during_checkpoint_keeps_it_and_a_rerun_resumes(trained, tmp_path, capsys, monkeypatch):
    run_dir = copy_of(trained, tmp_path)
    for name in ("metrics.json", "checkpoint.pth"):
        (run_dir / name).unlink()
    shutil.rmtree(run_dir / "evaluations")
    os.replace(run_dir / "checkpoint.prev.pth", run_dir / "checkpoint.pth")  # the run stopped at iteration 2
    before = (run_dir / "checkpoint.pth").read_bytes()
    full_disk(monkeypatch, "checkpoint.pth", after=4096)
    err = one_line_error(["train", "--out", str(run_dir), "--no-progress", *TINY], capsys)
    assert f"no space left on {run_dir / 'checkpoint.pth'}" in err
    assert (run_dir / "checkpoint.pth").read_bytes() == before  # the previous checkpoint, intact
    assert not list(run_dir.glob(".checkpoint.pth.tmp*")) and not (run_dir / "metrics.json").exists()
    monkeypatch.undo()  # space freed
    run(tiny(), run_dir, progress=False)
    assert "from iteration 2" in capsys.readouterr().out
    assert _same_weights(trained, run_dir)


@pytest.fixture
def small_tmpfs(tmp_path):
    """A real 200 MiB tmpfs (root only): room for one checkpoint of the tiny run (116 MiB), not two."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200m", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_real_full_disk_during_checkpoint(trained, small_tmpfs, capsys):
    run_dir = small_tmpfs / "run"
    run_dir.mkdir()
    for name in ("config.yaml", "env.json", "log.jsonl"):
        shutil.copy(trained / name, run_dir / name)
    shutil.copy(trained / "checkpoint.prev.pth", run_dir / "checkpoint.pth")  # stopped at iteration 2
    before = (run_dir / "checkpoint.pth").read_bytes()
    err = one_line_error(["train", "--out", str(run_dir), "--no-progress", *TINY], capsys)
    assert f"no space left on {run_dir / 'checkpoint.pth'}" in err
    assert (run_dir / "checkpoint.pth").read_bytes() == before and not list(run_dir.glob(".checkpoint.pth.tmp*"))
    subprocess.run(["mount", "-o", "remount,size=500m", str(small_tmpfs)], check=True)  # space freed
    run(tiny(), run_dir, progress=False)
    assert "from iteration 2" in capsys.readouterr().out
    assert _same_weights(trained, run_dir)


# --- 2. full disk: metrics.json, per_image.npz, status.json, the decoded cache -----------------------------

@pytest.mark.parametrize("name", ["metrics.json", "per_image.npz"])
def test_full_disk_during_an_evaluation_keeps_earlier_ones(trained, tmp_path, capsys, monkeypatch, name):
    run_dir = copy_of(trained, tmp_path)
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.suffix in (".json", ".npz")}
    full_disk(monkeypatch, name, after=10)
    err = one_line_error(["evaluate", "--run", str(run_dir), "--flip", "--no-progress"], capsys)
    assert f"no space left on {run_dir}" in err and name in err
    after = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.suffix in (".json", ".npz")}
    assert {p: after[p] for p in before} == before  # every earlier file intact, byte for byte
    # nothing half-written: at most the new evaluation's counts, complete but not named by metrics.json
    assert all(p.name == "per_image.npz" and name == "metrics.json" for p in set(after) - set(before))
    monkeypatch.undo()
    assert ifbf(["evaluate", "--run", str(run_dir), "--flip", "--no-progress"]) == 0
    evaluations = RunDir(run_dir).metrics()["evaluations"]
    assert len(evaluations) == 2 and set(json.loads(before[run_dir / "metrics.json"])["evaluations"]) < set(evaluations)


def test_full_disk_fails_the_job_with_the_reason(trained, tmp_path, monkeypatch):
    run_dir = copy_of(trained, tmp_path)
    cfg = tiny()
    flip = tiny("eval.flip=true").eval
    full_disk(monkeypatch, "metrics.json")
    with pytest.raises(NoSpace):
        TrainJob.of(cfg, run_dir, [flip])()
    status = read_status(run_dir)
    assert status.state == "failed" and f"no space left on {run_dir / 'metrics.json'}" in status.error
    full_disk(monkeypatch, "status.json")
    with pytest.raises(NoSpace, match="no space left on .*status.json"):
        write_status(run_dir, "running")
    assert read_status(run_dir) == status  # the previous record, intact


def test_full_disk_while_caching_leaves_no_half_cache(synth_root, tmp_path, monkeypatch):
    def no_room(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_room)
    with pytest.raises(NoSpace, match="no space left on .*images.npy"):
        write_split(synth_root, "val", tmp_path / "cache", progress=False)
    samples = find_samples(synth_root, "val", with_labels=True)
    assert open_cache(synth_root, "val", samples, str(tmp_path / "cache")) is None  # PNGs are decoded instead
    monkeypatch.undo()
    write_split(synth_root, "val", tmp_path / "cache", progress=False)
    assert open_cache(synth_root, "val", samples, str(tmp_path / "cache")) is not None


# --- 3. corrupt or foreign run files: one bad run never hides a table ---------------------------------------

def _finish(training, miou: float, rng: np.random.Generator) -> None:
    """A finished fake run: metrics.json with per-image counts, a log, status done."""
    rd = finish_run(training, confusions(np.full((8, 19), miou), rng.integers(500, 1500, size=(8, 19))), miou)
    rd.append_log(StepRecord(30, {"total": 1.0}, imgs_per_s=2.0))
    rd.write_env(Environment(device="cpu", world_size=1))
    write_status(training.run_dir, "done")


@pytest.fixture(scope="module")
def ten_runs(tmp_path_factory) -> tuple[Path, dict[str, float]]:
    """Table 2 of the smoke preset: its trainings (ten), each finished with its own mIoU."""
    results = tmp_path_factory.mktemp("results")
    plan = build_plan([load_table(2)], load_preset("smoke"), 1, results)
    rng, values = np.random.default_rng(0), {}
    for i, training in enumerate(plan.trainings.values()):
        values[training.run_hash] = 0.30 + 0.02 * i
        _finish(training, values[training.run_hash], rng)
    return results, values


def _flip(path: Path, where: float, count: int = 64) -> None:
    """Invert ``count`` bytes of ``path`` from the fraction ``where`` of its length on."""
    data = bytearray(path.read_bytes())
    start = int(len(data) * where)
    data[start : start + count] = bytes(b ^ 0xFF for b in data[start : start + count])
    path.write_bytes(bytes(data))


def _edit_evaluation(path: Path, how: str) -> None:
    """metrics.json with its (first) evaluation made wrong the way ``how`` says."""
    data = json.loads(path.read_text())
    key = next(iter(data["evaluations"]))
    wrong = {"miou abc": {**data["evaluations"][key], "miou": "abc"}, "an evaluation a string": "abc",
             "miou NaN": {**data["evaluations"][key], "miou": float("nan")}}[how]
    data["evaluations"][key] = wrong
    path.write_text(json.dumps(data))  # NaN as the literal NaN, which Python's json reads


def _damage(run_dir: Path, name: str, how: str) -> str:
    """Damage one file of a run; returns the file name a reader must report."""
    if name == "per_image.npz":
        path = next(run_dir.glob("evaluations/*/per_image.npz"))
        if how == "64 bytes flipped":  # past the zip's first header: the compressed data (zlib.error) or its CRC
            _flip(path, 0.7)
        elif how == "other config":
            with np.load(path) as data:
                arrays = {k: data[k] for k in data.files}
            arrays["config_hash"] = np.array("0123456789ab")
            np.savez_compressed(path, **arrays)
        else:
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        return str(path.relative_to(run_dir))
    path = run_dir / name
    text = path.read_text()
    if how in ("miou abc", "an evaluation a string", "miou NaN"):
        _edit_evaluation(path, how)
    elif how == "truncated":
        path.write_text(text[: len(text) // 2])
    elif how == "empty":
        path.write_text("")
    elif name == "log.jsonl":
        header = {"schema": SCHEMA + 1} if how == "newer schema" else {"schema": SCHEMA, "config_hash": "0123456789ab"}
        path.write_text(json.dumps(header) + "\n" + text.split("\n", 1)[1])
    else:
        data = json.loads(text)
        data.update({"schema": SCHEMA + 1} if how == "newer schema" else {"config_hash": "0123456789ab"})
        path.write_text(json.dumps(data))
    return name


CASES = [("metrics.json", "truncated"), ("metrics.json", "empty"), ("metrics.json", "newer schema"),
         ("metrics.json", "other config"), ("metrics.json", "miou abc"), ("metrics.json", "an evaluation a string"),
         ("metrics.json", "miou NaN"), ("status.json", "truncated"), ("status.json", "newer schema"),
         ("log.jsonl", "truncated"), ("log.jsonl", "other config"), ("per_image.npz", "truncated"),
         ("per_image.npz", "other config"), ("per_image.npz", "64 bytes flipped"), ("env.json", "truncated")]


RERUN = ("64 bytes flipped", "an evaluation a string")


@pytest.mark.parametrize(("name", "how"), CASES)
def test_one_unreadable_run_among_ten(ten_runs, tmp_path, capsys, name, how):
    results, values = ten_runs
    results = Path(shutil.copytree(results, tmp_path / "results"))
    bad = sorted(values)[3]
    run_dir = results / "smoke" / "runs" / bad
    shown = _damage(run_dir, name, how)
    args = ["--table", "2", "--preset", "smoke", "--results", str(results)]
    # exit 1 whether or not the damaged file hides a value: a cell is marked unreadable (docs/reliability.md)
    assert reproduce([*args, "--report-only"]) == 1
    err = capsys.readouterr().err
    assert f"{run_dir}: unreadable {shown}" in err and "Traceback" not in err
    if how == "newer schema":
        assert f"needs an ifbf that reads schema {SCHEMA + 1}" in err
    table = (results / "smoke" / "table2.md").read_text()
    assert f"unreadable: {shown}" in table and str(run_dir) in table
    for run_hash, miou in values.items():
        if run_hash != bad or name != "metrics.json":
            assert f"{100 * miou:.2f}" in table  # the others (and a damaged run's intact value) reported
    assert reproduce([*args, "--plan"]) == 0
    out = capsys.readouterr().out
    assert f"{bad}  unreadable: " in out and f"{run_dir}: unreadable {shown}" in out
    assert sum(f"{h}  done" in out for h in values) == len(values) - 1  # all but the damaged one
    assert reproduce([*args, "--status"]) == 0
    out = capsys.readouterr().out
    assert f"unreadable: {shown}" in out and sum(" done " in line for line in out.splitlines()) == len(values) - 1
    if how in RERUN:  # the rerun reads the runs as --plan does: a few kinds of damage show it
        damaged = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
        assert reproduce([*args, "--executor", "local"]) == 1  # nothing submitted, nothing overwritten
        out, err = capsys.readouterr()
        assert f"not submitted: {run_dir}: unreadable {shown}" in out and "Traceback" not in err
        assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == damaged


def test_files_of_an_older_ifbf_load_and_a_newer_schema_is_refused(tmp_path):
    """Files without a schema field (as ifbf wrote them before) read as before; a newer one names its version."""
    cfg = tiny()
    rd = RunDir(tmp_path / "run")
    rd.claim(cfg)
    (rd.path / "metrics.json").write_text(json.dumps({"config_hash": config_hash(cfg), "iters": 4,
                                                      "evaluations": {"k": {"miou": 0.5}}}))
    (rd.path / "log.jsonl").write_text('{"iter": 2, "loss_total": 1.0}\n')
    (rd.path / "status.json").write_text(json.dumps({"state": "done"}))
    rd.per_image_path("k").parent.mkdir(parents=True)
    np.savez_compressed(rd.per_image_path("k"), names=np.array(["a"]), inter=np.ones((1, 19), np.int64),
                        union=np.ones((1, 19), np.int64))
    rd.check()
    assert rd.metrics()["evaluations"]["k"]["miou"] == 0.5 and rd.read_log() == [StepRecord(2, {"total": 1.0})]
    assert read_status(rd.path).state == "done" and rd.per_image("k").names == ["a"]
    rd.record_evaluation(cfg, cfg.eval, EvalResult(0.25, {}))  # rewritten: earlier entries kept, versioned
    assert rd.metrics()["schema"] == SCHEMA and rd.metrics()["evaluations"]["k"]["miou"] == 0.5
    (rd.path / "metrics.json").write_text(json.dumps({"schema": SCHEMA + 1, "config_hash": config_hash(cfg)}))
    with pytest.raises(UnreadableRunFile, match=f"unreadable metrics.json: .*needs an ifbf that reads schema {SCHEMA + 1}"):
        rd.metrics()


# --- 4. outputs: tables, figures, REPORT.md, results/README.md on a full or read-only disk ----------------------

@pytest.fixture
def mounts():
    """Real mounts, undone at the end (root only, else the test is skipped): ``mounts(path, *mount args)``."""
    done: list[Path] = []

    def mount(path: Path, *args: str) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0 or subprocess.run(["mount", *args, str(path)], capture_output=True).returncode:
            pytest.skip("real mounts need root")
        done.append(path)
        return path

    yield mount
    for path in reversed(done):
        subprocess.run(["umount", str(path)], check=True)


def read_only(mounts, path: Path) -> Path:
    """``path`` made read-only in place: a bind mount of itself, remounted ro."""
    mounts(path, "--bind", str(path))
    subprocess.run(["mount", "-o", "remount,ro,bind", str(path)], check=True)
    return path


def _outputs(results: Path) -> dict[Path, bytes]:
    """Every file under ``results`` but the runs (what the report writes), temporary ones included."""
    return {p: p.read_bytes() for p in results.rglob("*") if p.is_file() and "runs" not in p.relative_to(results).parts}


def _args(results: Path) -> list[str]:
    return ["--table", "2", "--preset", "smoke", "--results", str(results)]


@pytest.fixture(scope="module")
def reported(ten_runs, tmp_path_factory) -> Path:
    """The ten runs with their report written: the previous, good outputs."""
    results = Path(shutil.copytree(ten_runs[0], tmp_path_factory.mktemp("reported") / "results"))
    assert reproduce([*_args(results), "--report-only"]) == 0
    return results


@pytest.mark.parametrize("name", ["table2.md", "table2.csv", "table2_bars.png", "REPORT.md", "README.md"])
def test_full_disk_while_writing_the_report_keeps_the_previous_files(reported, tmp_path, capsys, monkeypatch, name):
    results = Path(shutil.copytree(reported, tmp_path / "results"))
    before = _outputs(results)
    full_disk(monkeypatch, name, after=4096)
    err = one_line_error([*_args(results), "--report-only"], capsys, reproduce)
    path = next(p for p in before if p.name == name)
    assert f"no space left on {path} (the previous file is intact)" in err
    after = _outputs(results)
    assert set(after) == set(before) and after[path] == before[path]  # nothing torn, no temporary file left
    monkeypatch.undo()
    assert reproduce([*_args(results), "--report-only"]) == 0


def _fill(folder: Path) -> None:
    """Fill the file system of ``folder`` to its last byte."""
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        for size in (1 << 20, 4096, 1):
            try:
                while os.write(fd, b"\0" * size):
                    pass
            except OSError as err:
                assert err.errno == errno.ENOSPC
    finally:
        os.close(fd)


def test_real_full_disk_while_writing_the_report(reported, tmp_path, capsys, mounts):
    disk = mounts(tmp_path / "disk", "-t", "tmpfs", "-o", "size=20m", "tmpfs")
    results = Path(shutil.copytree(reported, disk / "results"))
    before = _outputs(results)
    _fill(disk)
    err = one_line_error([*_args(results), "--report-only"], capsys, reproduce)
    assert f"no space left on {results / 'smoke' / 'table2.md'} (the previous file is intact)" in err
    assert _outputs(results) == before  # the previous tables intact, no 0-byte or torn file, no temporary
    (disk / "filler").unlink()
    assert reproduce([*_args(results), "--report-only"]) == 0


def test_read_only_results_the_report_is_one_line_and_reading_still_works(reported, tmp_path, capsys, mounts):
    results = Path(shutil.copytree(reported, tmp_path / "results"))
    before = _outputs(results)
    read_only(mounts, results)
    err = one_line_error([*_args(results), "--report-only"], capsys, reproduce)
    assert f"cannot write {results / 'smoke' / 'table2.md'}: read-only file system (nothing there was changed)" in err
    assert _outputs(results) == before
    assert reproduce([*_args(results), "--plan"]) == 0 and reproduce([*_args(results), "--status"]) == 0
    assert "Traceback" not in capsys.readouterr().err


def _never(*args, **kwargs):
    raise AssertionError("evaluated although its result could not be recorded")


def test_train_and_evaluate_in_a_read_only_run_are_one_line(trained, tmp_path, capsys, mounts, monkeypatch):
    run_dir = copy_of(trained, tmp_path)
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    read_only(mounts, run_dir)
    err = one_line_error(["train", "--out", str(run_dir), "--no-progress", *TINY], capsys)
    assert f"cannot write {run_dir / 'train.lock'}: read-only file system" in err
    monkeypatch.setattr("ifbf.engine.run.evaluate_run", _never)  # the check comes before the evaluation
    err = one_line_error(["evaluate", "--run", str(run_dir), "--flip", "--no-progress"], capsys)
    assert f"cannot write {run_dir}: read-only file system" in err
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize(("code", "why"), [(errno.EROFS, "read-only file system"), (errno.EACCES, "permission denied")])
def test_evaluate_checks_that_it_can_record_before_it_evaluates(trained, tmp_path, capsys, monkeypatch, code, why):
    """The same without root: the write check fails as a read-only or forbidden folder would."""
    run_dir = copy_of(trained, tmp_path)

    def refused(path: Path):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(safefile, "open_for_write", refused)
    monkeypatch.setattr("ifbf.engine.run.evaluate_run", _never)
    err = one_line_error(["evaluate", "--run", str(run_dir), "--flip", "--no-progress"], capsys)
    assert f"cannot write {run_dir}: {why}" in err and not list(run_dir.rglob(".*.tmp*"))


# --- 5. preflight.json: damaged, or not writable after measuring ---------------------------------------------

MEASURED = {"date": "2026-12-01 10:00 UTC", "device": "CPU", "setup_s": 2.0, "ckpt_s": 0.1, "spread": 0.1,
            "s_per_it": {"median": 0.2, "q1": 0.19, "q3": 0.21, "min": 0.18, "max": 0.25}, "unstable": False,
            "imgs_per_s": 10.0, "data_wait": 0.01, "peak_mem_gib": 0.5, "eval": {}}


class _Measured:
    """A preflight job that measured ``MEASURED``."""

    job_id, paths = str(2**22 + 12345), type("Paths", (), {"stderr": "/dev/null"})

    def result(self) -> Measurement:
        return preflight_from_json(MEASURED)


def _fake_preflight(monkeypatch) -> None:
    monkeypatch.setattr("ifbf.orchestrate.executors.Executor.submit",
                        lambda self, folder, jobs, max_requeues=None: [_Measured() for _ in jobs])
    monkeypatch.setattr("ifbf.orchestrate.reproduce._check_environment", lambda *a: None)


@pytest.mark.parametrize("damage", ['{"shapes": {"0123456789": {"da', "[]", '{"shapes": []}',
                                    '{"shapes": {"0123456789": {"date": 1}}}'])
def test_a_damaged_preflight_json_is_one_line_and_preflight_keeps_what_it_measures(ten_runs, tmp_path, capsys,
                                                                                  monkeypatch, damage):
    results = Path(shutil.copytree(ten_runs[0], tmp_path / "results"))
    trainings = len(ten_runs[1])  # one compute shape each (Table 2 changes the model in every row)
    path = results / "smoke" / "preflight.json"
    path.write_text(damage)
    for mode in ("--plan", "--status"):
        assert reproduce([*_args(results), mode]) == 0
        out, err = capsys.readouterr()
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
        assert err.startswith(f"warning: {results / 'smoke'}: unreadable preflight.json: ")
        assert f"{trainings} training(s)" in out
    _fake_preflight(monkeypatch)
    assert reproduce([*_args(results), "--executor", "local", "--preflight"]) == 0
    out, err = capsys.readouterr()
    assert "kept it as preflight.json.unreadable" in err and f"wrote {path}" in out
    assert path.with_name("preflight.json.unreadable").read_text() == damage
    assert len(json.loads(path.read_text())["shapes"]) == trainings
    assert reproduce([*_args(results), "--executor", "local", "--plan"]) == 0  # the shapes of the executor measured
    assert capsys.readouterr().out.count("measured 2026-12-01 on CPU") == trainings


def test_preflight_shows_its_measurements_when_preflight_json_cannot_be_written(ten_runs, tmp_path, capsys,
                                                                                monkeypatch):
    results = Path(shutil.copytree(ten_runs[0], tmp_path / "results"))
    _fake_preflight(monkeypatch)
    full_disk(monkeypatch, "preflight.json")
    assert reproduce([*_args(results), "--executor", "local", "--preflight"]) == 2
    out, err = capsys.readouterr()
    assert out.count("0.200 s/it (IQR 0.190-0.210)") == len(ten_runs[1])  # every figure shown before the write failed
    path = results / "smoke" / "preflight.json"
    assert err.strip() == (f"reproduce.py: error: no space left on {path} (the previous file is intact): free "
                           "space on that disk, then run the same command again (it resumes)")


# --- 6. temporary files of killed writers ---------------------------------------------------------------------

def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_temporary_files_of_dead_writers_are_removed_when_a_run_is_claimed_or_resumed(trained, tmp_path):
    run_dir = copy_of(trained, tmp_path)
    host, live = socket.gethostname(), subprocess.Popen(["sleep", "60"])
    counts = next(run_dir.glob("evaluations/*"))
    files = {"dead": run_dir / f".checkpoint.pth.tmp{_dead_pid()}@{host}",
             "dead, an older ifbf's name": run_dir / f".checkpoint.pth.tmp{_dead_pid()}",
             "dead, per-image counts": counts / f".per_image.npz.tmp{_dead_pid()}@{host}",
             "another host's, untouched for an hour": run_dir / f".checkpoint.pth.tmp{live.pid}@elsewhere",
             "live": run_dir / f".checkpoint.pth.tmp{live.pid}@{host}",
             "another host's, fresh": run_dir / f".metrics.json.tmp{_dead_pid()}@elsewhere"}
    for path in files.values():
        path.write_bytes(b"x" * 4096)
    an_hour_ago = time.time() - 3600
    os.utime(files["another host's, untouched for an hour"], (an_hour_ago, an_hour_ago))
    try:
        assert ifbf(["train", "--out", str(run_dir), "--no-progress", *TINY]) == 0  # finished: claimed, not trained
        assert {k for k, p in files.items() if not p.exists()} == {
            "dead", "dead, an older ifbf's name", "dead, per-image counts", "another host's, untouched for an hour"}
        again = run_dir / f".checkpoint.pth.tmp{_dead_pid()}@{host}"
        again.write_bytes(b"x")
        assert resume_state(RunDir(run_dir), tiny())["iter"] == 4 and not again.exists()
        assert files["live"].exists()
    finally:
        live.kill()
        live.wait()
