"""atomic_output: a complete artifact (old or new) is at the path at every moment, even across a kill."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tilepipe import atomic

PARTS = 4


class Killed(BaseException):
    """The process dies: this and every later file-system operation fails."""


def make_artifact(path: Path, tag: str) -> None:
    path.mkdir()
    for i in range(PARTS):
        (path / f"part{i}").write_text(f"{tag} {i}")


def artifact_at(path: Path) -> str | None:
    """The tag of the complete artifact at ``path``, or None (missing, partial or mixed)."""
    if not path.is_dir():
        return None
    names = sorted(p.name for p in path.iterdir())
    if names != [f"part{i}" for i in range(PARTS)]:
        return None
    tags = {(path / name).read_text().split()[0] for name in names}
    return tags.pop() if len(tags) == 1 else None


class Watcher:
    """Wraps the file-system calls atomic_output can make; checks the path after each, dies at call ``kill_at``."""

    CALLS = (
        (os, "rename"),
        (os, "replace"),
        (os, "unlink"),
        (os, "rmdir"),
        (shutil, "rmtree"),
        (atomic, "_exchange"),
    )

    def __init__(self, monkeypatch, final: Path, kill_at: int | None, exchange_supported: bool = True):
        self.final = final
        self.kill_at = kill_at
        self.calls = 0
        self.killed = False
        self.seen: list[str | None] = []
        for module, name in self.CALLS:
            original = getattr(module, name, None)
            if original is None:
                continue
            if name == "_exchange" and not exchange_supported:
                original = lambda a, b: False  # noqa: E731 - renameat2 unsupported (e.g. NFS)
            monkeypatch.setattr(module, name, self.wrap(original))

    def wrap(self, original):
        def call(*args, **kwargs):
            if self.killed:
                raise Killed
            self.calls += 1
            if self.calls == self.kill_at:
                self.killed = True
                raise Killed
            result = original(*args, **kwargs)
            self.seen.append(artifact_at(self.final))
            return result

        return call


def replace_old_with_new(final: Path) -> None:
    with atomic.atomic_output(final) as tmp:
        make_artifact(tmp, "new")


@pytest.mark.parametrize("exchange_supported", [True, False], ids=["renameat2", "renames"])
def test_replacing_a_directory_keeps_a_complete_artifact_at_the_path_through_any_kill(
    tmp_path, monkeypatch, exchange_supported
):
    kill_at = 1
    while True:
        folder = tmp_path / f"kill{kill_at}"
        folder.mkdir()
        final = folder / "slide.zarr"
        make_artifact(final, "old")
        with monkeypatch.context() as patch:
            watcher = Watcher(patch, final, kill_at, exchange_supported)
            try:
                replace_old_with_new(final)
                finished = True
            except Killed:
                finished = False
        where = f"killed before file-system call {kill_at}" if not finished else "uninterrupted"
        if exchange_supported:
            assert None not in watcher.seen, f"{where}: nothing complete at the path after a call ({watcher.seen})"
            assert artifact_at(final) in ("old", "new"), where
        # The rerun after the kill fails: the last complete artifact is at the path, nothing else beside it.
        with pytest.raises(RuntimeError), atomic.atomic_output(final):
            raise RuntimeError("the rerun fails")
        assert artifact_at(final) in ("old", "new"), where
        assert [p.name for p in folder.iterdir()] == ["slide.zarr"], where
        if finished:
            assert artifact_at(final) == "new"
            assert watcher.seen, "the watcher saw no file-system call"
            break
        # A rerun that succeeds replaces it and leaves nothing beside it.
        replace_old_with_new(final)
        assert artifact_at(final) == "new" and [p.name for p in folder.iterdir()] == ["slide.zarr"], where
        kill_at += 1
    assert kill_at > 2, "atomic_output replaced the directory in fewer than two file-system calls"


def test_rename_fallback_puts_the_old_directory_back_when_the_new_one_cannot_be_moved_in(tmp_path, monkeypatch):
    final = tmp_path / "slide.zarr"
    make_artifact(final, "old")
    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    real_rename = os.rename

    def rename(src, dst, *args, **kwargs):
        if Path(dst) == final and ".tmp-" in Path(src).name:
            raise OSError("disk error while moving the new store into place")
        return real_rename(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OSError, match="disk error"):
        replace_old_with_new(final)
    assert artifact_at(final) == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["slide.zarr"]


def test_failure_inside_leaves_the_old_file_or_directory_and_no_temporary(tmp_path):
    directory, file = tmp_path / "d.zarr", tmp_path / "f.csv"
    make_artifact(directory, "old")
    file.write_text("old")

    def write_half_then_fail(path: Path) -> None:
        with atomic.atomic_output(path) as tmp:
            tmp.write_text("half")
            raise ValueError

    for path in (directory, file):
        with pytest.raises(ValueError):
            write_half_then_fail(path)
    assert artifact_at(directory) == "old" and file.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.zarr", "f.csv"]


@pytest.mark.parametrize(("old", "new"), [("file", "file"), ("dir", "file"), ("file", "dir"), (None, "dir")])
def test_replaces_files_and_directories_of_either_kind(tmp_path, old, new):
    final = tmp_path / "out"
    if old == "file":
        final.write_text("old")
    elif old == "dir":
        make_artifact(final, "old")
    with atomic.atomic_output(final) as tmp:
        if new == "file":
            tmp.write_text("new")
        else:
            make_artifact(tmp, "new")
    assert (final.read_text() if new == "file" else artifact_at(final)) == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
