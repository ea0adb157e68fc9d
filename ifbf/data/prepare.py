"""``ifbf data prepare``: a Cityscapes root from the two official zips, ready for training.

1. extract ``leftImg8bit_trainvaltest.zip`` and ``gtFine_trainvaltest.zip`` (their ``leftImg8bit/`` and
   ``gtFine/`` members) into ROOT, with a progress bar; files already there with the right size are kept;
2. create ``*_gtFine_labelTrainIds.png`` from every ``*_gtFine_polygons.json`` with cityscapesscripts'
   own conversion (``json2labelImg(..., "trainIds")``, what ``csCreateTrainIdLabelImgs`` runs), in a
   process pool; existing ones are kept;
3. verify (``ifbf.data.verify``) and write the manifest.

Every file is written under a temporary name and renamed, so an interrupted prepare resumes where it stopped.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path, PurePosixPath

from cityscapesscripts.preparation.json2labelImg import json2labelImg
from tqdm import tqdm

from ifbf.data.verify import CITYSCAPES, DOWNLOAD_URL, Expected, VerifyResult, verify, write_manifest
from ifbf.errors import IfbfError

# zip file name -> the top folder its members must live in (the official packages 3 and 1)
ZIPS = {"leftImg8bit_trainvaltest.zip": "leftImg8bit", "gtFine_trainvaltest.zip": "gtFine"}
POLYGONS = "_polygons.json"
TRAIN_IDS = "_labelTrainIds.png"
CHUNK = 1 << 20


class PrepareError(IfbfError):
    """A zip is missing, misnamed, corrupt or not the official package."""


def find_zips(zip_dir: Path) -> dict[str, Path]:
    """The two official zips in ``zip_dir``, checked by name; a clear error names what is missing."""
    if not zip_dir.is_dir():
        raise PrepareError(f"--zips {zip_dir} is not a folder (it should hold {' and '.join(ZIPS)})")
    missing = [name for name in ZIPS if not (zip_dir / name).is_file()]
    if missing:
        others = sorted(p.name for p in zip_dir.glob("*.zip"))
        found = f"; found {', '.join(others)}" if others else "; no zip there"
        raise PrepareError(
            f"{' and '.join(missing)} not in {zip_dir}: expected {' and '.join(ZIPS)}, the official packages "
            f"from {DOWNLOAD_URL} (names unchanged){found}"
        )
    return {name: zip_dir / name for name in ZIPS}


def _members(archive: zipfile.ZipFile, path: Path, top: str) -> list[zipfile.ZipInfo]:
    """The archive's files under ``top/``; anything else there means it is not the official package."""
    members = []
    for info in archive.infolist():
        parts = PurePosixPath(info.filename).parts
        if info.is_dir() or not parts or parts[0] != top:
            continue
        if ".." in parts or info.filename.startswith("/"):
            raise PrepareError(f"{path} holds an unsafe member name {info.filename!r}: not the official package")
        members.append(info)
    if not members:
        raise PrepareError(f"{path} has no {top}/ folder inside: not the official {path.name} "
                           f"(download: {DOWNLOAD_URL})")
    return members


def extract(path: Path, top: str, out: Path, progress: bool = True) -> int:
    """Extract ``top/...`` of the zip at ``path`` into ``out``; returns the number of files written."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise PrepareError(f"{path} is not a readable zip ({err}): download it again from {DOWNLOAD_URL}") from None
    with archive:
        members = _members(archive, path, top)
        todo = [m for m in members if not _extracted(out / m.filename, m)]
        need, free = sum(m.file_size for m in todo), shutil.disk_usage(out).free
        if need > free:
            raise PrepareError(f"extracting {path.name} needs {need / 1e9:.1f} GB, {out} has {free / 1e9:.1f} GB free")
        bar = tqdm(total=need, unit="B", unit_scale=True, desc=f"extract {path.name}",
                   disable=None if progress else True)
        with bar:
            for info in todo:
                target = out / info.filename
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
                try:
                    with archive.open(info) as src, open(tmp, "wb") as dst:
                        while chunk := src.read(CHUNK):
                            dst.write(chunk)
                            bar.update(len(chunk))
                except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as err:
                    tmp.unlink(missing_ok=True)
                    raise PrepareError(f"{path}: cannot extract {info.filename} ({err}): the zip is damaged, "
                                       f"download it again from {DOWNLOAD_URL}") from None
                os.replace(tmp, target)
    return len(todo)


def _extracted(target: Path, info: zipfile.ZipInfo) -> bool:
    try:
        return target.stat().st_size == info.file_size
    except OSError:
        return False


def _convert(polygons: Path) -> None:
    """One ``*_labelTrainIds.png`` from its polygons, exactly as cityscapesscripts' createTrainIdLabelImgs."""
    target = polygons.with_name(polygons.name.replace(POLYGONS, TRAIN_IDS))
    tmp = target.with_name(f".{target.stem}.tmp{os.getpid()}.png")  # json2labelImg picks the format by suffix
    json2labelImg(str(polygons), str(tmp), "trainIds")
    os.replace(tmp, target)


def create_train_ids(root: Path, workers: int | None = None, progress: bool = True) -> int:
    """Create the missing ``gtFine/*/*/*_labelTrainIds.png``; returns how many were created."""
    todo = [p for p in sorted((root / "gtFine").glob(f"*/*/*_gt*{POLYGONS}"))
            if not p.with_name(p.name.replace(POLYGONS, TRAIN_IDS)).is_file()]
    if not todo:
        return 0
    workers = workers or os.cpu_count() or 1
    bar = tqdm(total=len(todo), unit="label", desc="labelTrainIds", disable=None if progress else True)
    with bar, ProcessPoolExecutor(workers) as pool:
        for _ in pool.map(_convert, todo, chunksize=max(1, min(32, len(todo) // (4 * workers)))):
            bar.update()
    return len(todo)


def prepare(out: Path, zip_dir: Path | None = None, expected: Expected = CITYSCAPES, allow_partial: bool = False,
            workers: int | None = None, progress: bool = True) -> VerifyResult:
    """Extract (when ``zip_dir`` is given), create labelTrainIds, verify; the manifest is written on success."""
    if zip_dir is not None:
        zips = find_zips(zip_dir)  # both checked before anything is written
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise PrepareError(f"cannot create {out}: {err.strerror}") from None
        for name, path in zips.items():
            extract(path, ZIPS[name], out, progress)
    elif not (out / "gtFine").is_dir():
        raise PrepareError(f"{out / 'gtFine'} does not exist: give --zips DIR holding {' and '.join(ZIPS)}")
    create_train_ids(out, workers, progress)
    result = verify(out, expected, allow_partial=allow_partial, workers=workers, progress=progress)
    if result.ok:
        write_manifest(result)
    return result
