"""Reading and checking the dataset layouts.

``txt``: ``train.txt`` / ``test.txt`` with ``<relative path> <integer label> [<second label>]``
per line (the official layout). ``folder``: ``train/<class>/<image>`` and ``test/<class>/<image>``.
``images``: any folder tree of images with no labels and no split: every image is a training
image (label ``UNLABELLED``); what needs true labels is skipped.
``read_split`` returns the samples of one split or raises; ``check_dataset`` collects every problem.
"""

from __future__ import annotations

import os
import statistics
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from udml_cli.errors import DatasetError

LAYOUTS = ("txt", "folder", "images")  # images: any tree of unlabelled images, no split


@dataclass(frozen=True)
class DatasetRef:
    name: str
    root: Path
    layout: str  # "txt", "folder" or "images"
    spec: str = ""  # what resolves to it again: a registered/built-in name or an absolute path

    @property
    def labelled(self) -> bool:
        """False for a plain collection of images: no classes, no test split."""
        return self.layout != "images"


IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}
SPLITS = ("train", "test")
UNLABELLED = -1  # the label of every image of an ``images`` collection


@dataclass(frozen=True)
class Sample:
    path: Path  # absolute
    label: int
    rel: str  # as written in the split file / relative to the root
    label2: int | None = None


@dataclass
class Problem:
    severity: str  # "error" or "warning"
    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.message}"


@dataclass
class SplitReport:
    samples: list[Sample] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def listable(name: str) -> bool:
    """A file name every list udml writes can hold as it is: valid UTF-8 and no control
    character or line break (a newline or tab would split a row of files.jsonl's readers,
    ``--paths``, ``--write-labels``, ``skipped.txt``)."""
    return not any(unicodedata.category(c) in _UNLISTABLE for c in name)


_UNLISTABLE = {"Cc", "Cs", "Zl", "Zp"}  # controls, undecodable bytes, line/paragraph separators


def walk_images(root: Path, recursive: bool = True) -> Iterator[os.DirEntry]:
    """The image files under ``root`` (``recursive``: its whole tree), unsorted, as ``scandir``
    entries (they carry their stat); hidden files and folders are skipped and linked folders not
    followed (one could loop). A name no list can hold (see ``listable``) is skipped with one
    warning naming the first. Every listing of a folder of images goes through here."""
    stack = [str(root)]
    unlisted: list[str] = []
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir(follow_symlinks=False):
                if recursive and listable(entry.name):
                    stack.append(entry.path)
                elif recursive:
                    unlisted.append(entry.path + "/")
            elif entry.is_file() and os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS:
                if listable(entry.name):
                    yield entry
                else:
                    unlisted.append(entry.path)
    if unlisted:
        from udml_cli.errors import warn

        first = ascii(unlisted[0])
        warn(
            f"skipped {len(unlisted)} files or folders whose names hold a line break, a control "
            f"character or bytes that are not UTF-8 (first: {first}); rename them to include them"
        )


def image_files(root: Path, recursive: bool = True) -> list[Path]:
    """The image files under ``root`` (see ``walk_images``), sorted."""
    return sorted(Path(entry.path) for entry in walk_images(root, recursive))


def scan_images(root: Path) -> list[tuple[Path, os.stat_result]]:
    """``(path, stat)`` of every image file under ``root``, sorted by path (one ``scandir`` per
    folder: 10× faster than ``rglob`` + ``stat`` on 2,000 files)."""
    return sorted(((Path(e.path), e.stat()) for e in walk_images(root)), key=lambda item: item[0])


def has_images(root: Path) -> bool:
    return next(walk_images(root), None) is not None


def detect_layout(root: Path) -> str | None:
    if (root / "train.txt").is_file() or (root / "test.txt").is_file():
        return "txt"
    if (root / "train").is_dir() or (root / "test").is_dir():
        return "folder"
    if has_images(root):
        return "images"
    return None


def _parse_images(ref: DatasetRef, split: str) -> SplitReport:
    report = SplitReport()
    if split != "train":
        report.problems.append(Problem(
            "error", f"{split}/", None,
            "an unlabelled collection has no test split: evaluate on a labelled dataset "
            "(--eval-dataset NAME)",
        ))  # fmt: skip
        return report
    root = ref.root.resolve()
    for img in image_files(root):
        report.samples.append(Sample(img, UNLABELLED, img.relative_to(root).as_posix()))
    return report


def _inside(root: Path, rel: str) -> Path | None:
    """The absolute path of ``rel`` if it stays inside ``root``, else None."""
    candidate = (root / rel).resolve()
    try:
        candidate.relative_to(root.resolve())
    except ValueError:
        return None
    return candidate


def _parse_txt(ref: DatasetRef, split: str) -> SplitReport:
    report = SplitReport()
    name = f"{split}.txt"
    path = ref.root / name
    if not path.is_file():
        report.problems.append(Problem("error", name, None, "file missing"))
        return report
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        report.problems.append(Problem("error", name, None, f"cannot read: {e}"))
        return report
    seen: dict[str, int] = {}
    for lineno, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split()
        if len(parts) not in (2, 3):
            report.problems.append(
                Problem(
                    "error", name, lineno, f"malformed line {line!r}: expected '<path> <label>'"
                )
            )
            continue
        rel, labels = parts[0], parts[1:]
        try:
            ints = [int(x) for x in labels]
        except ValueError:
            report.problems.append(
                Problem("error", name, lineno, f"label {' '.join(labels)!r} is not an integer")
            )
            continue
        if any(not -(2**63) <= x < 2**63 for x in ints):
            report.problems.append(
                Problem(
                    "error",
                    name,
                    lineno,
                    f"label {' '.join(labels)!r} does not fit a 64-bit integer",
                )
            )
            continue
        full = _inside(ref.root, rel)
        if full is None:
            report.problems.append(
                Problem("error", name, lineno, f"path {rel!r} escapes the dataset root")
            )
            continue
        if rel in seen:
            report.problems.append(
                Problem(
                    "error", name, lineno, f"duplicate entry {rel!r} (first on line {seen[rel]})"
                )
            )
            continue
        seen[rel] = lineno
        if not full.is_file():
            report.problems.append(Problem("error", name, lineno, f"missing file {rel!r}"))
            continue
        report.samples.append(Sample(full, ints[0], rel, ints[1] if len(ints) > 1 else None))
    return report


def _folder_classes(ref: DatasetRef) -> dict[str, int]:
    names = set()
    for split in SPLITS:
        d = ref.root / split
        if d.is_dir():
            names.update(p.name for p in d.iterdir() if p.is_dir() and listable(p.name))
    return {n: i for i, n in enumerate(sorted(names))}


def _parse_folder(ref: DatasetRef, split: str, classes: dict[str, int]) -> SplitReport:
    report = SplitReport()
    d = ref.root / split
    if not d.is_dir():
        report.problems.append(Problem("error", f"{split}/", None, "folder missing"))
        return report
    for cls in sorted(p for p in d.iterdir() if p.is_dir() and p.name in classes):
        for img in image_files(cls):
            rel = img.relative_to(ref.root).as_posix()
            report.samples.append(Sample(img.resolve(), classes[cls.name], rel))
    return report


def parse_split(ref: DatasetRef, split: str) -> SplitReport:
    if split not in SPLITS:
        raise DatasetError(f"unknown split '{split}': use one of {', '.join(SPLITS)}")
    if ref.layout == "txt":
        report = _parse_txt(ref, split)
    elif ref.layout == "images":
        report = _parse_images(ref, split)
    else:
        report = _parse_folder(ref, split, _folder_classes(ref))
    if not report.samples and not any(p.severity == "error" for p in report.problems):
        where = f"{split}.txt" if ref.layout == "txt" else f"{split}/"
        report.problems.append(Problem("error", where, None, "split is empty"))
    return report


def read_split(ref: DatasetRef, split: str) -> list[Sample]:
    """The samples of one split; the first problem, if any, as one clear error."""
    report = parse_split(ref, split)
    errors = [p for p in report.problems if p.severity == "error"]
    if errors:
        more = (
            f" (+{len(errors) - 1} more; run `udml dataset check {ref.root}`)"
            if len(errors) > 1
            else ""
        )
        raise DatasetError(f"dataset '{ref.name}' ({ref.root}): {errors[0]}{more}")
    return report.samples


def split_stats(samples: list[Sample]) -> dict:
    counts: dict[int, int] = {}
    for s in samples:
        counts[s.label] = counts.get(s.label, 0) + 1
    sizes = sorted(counts.values())
    if counts.keys() == {UNLABELLED}:
        return {"images": len(samples), "classes": None, "min_per_class": None,
                "median_per_class": None, "max_per_class": None}  # fmt: skip
    return {
        "images": len(samples),
        "classes": len(counts),
        "min_per_class": sizes[0] if sizes else 0,
        "median_per_class": statistics.median(sizes) if sizes else 0,
        "max_per_class": sizes[-1] if sizes else 0,
    }


def _decode_problem(path: Path) -> str | None:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
    except Exception as e:  # Pillow raises many kinds for broken files
        return f"cannot decode image: {type(e).__name__}: {e}"
    return None


def check_dataset(ref: DatasetRef, deep: bool = False, progress=None) -> dict:
    """Every problem of both splits, per-split statistics, and the overlap warning."""
    splits = SPLITS if ref.labelled else ("train",)
    reports = {split: parse_split(ref, split) for split in splits}
    problems = [p for r in reports.values() for p in r.problems]
    if deep:
        total = sum(len(r.samples) for r in reports.values())
        task = progress.add_task("decoding images", total=total) if progress else None
        for r in reports.values():
            for s in r.samples:
                msg = _decode_problem(s.path)
                if msg:
                    problems.append(Problem("error", s.rel, None, msg))
                if progress:
                    progress.advance(task)
    train_labels = {s.label for s in reports["train"].samples}
    test_labels = {s.label for s in reports["test"].samples} if ref.labelled else set()
    overlap = train_labels & test_labels
    if overlap:
        shown = ", ".join(str(x) for x in sorted(overlap)[:5])
        problems.append(
            Problem(
                "warning",
                "train/test",
                None,
                f"{len(overlap)} classes appear in both splits ({shown}…); the zero-shot "
                "protocol wants them disjoint",
            )
        )
    return {
        "dataset": ref.name,
        "root": str(ref.root),
        "layout": ref.layout,
        "labelled": ref.labelled,
        "splits": {split: split_stats(r.samples) for split, r in reports.items()},
        "problems": [p.__dict__ | {"text": str(p)} for p in problems],
        "errors": sum(p.severity == "error" for p in problems),
        "warnings": sum(p.severity == "warning" for p in problems),
        "ok": not any(p.severity == "error" for p in problems),
    }
