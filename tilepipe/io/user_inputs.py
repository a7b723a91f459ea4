"""What a user points the ``apply`` target at: slide files as they have them and a folder of models, listed and checked.

Torch-free: the workflow lists both at parse time, so every problem is
reported (with the config key and the path) before any job runs.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from tilepipe.errors import InputError
from tilepipe.io.kaggle import SLIDE_SUFFIXES, check_id, check_regular_file, slide_id_of

__all__ = ["list_model_files", "list_slides"]

_FOLD_DIR = re.compile(r"fold(\d+)")
_FIRST_PLACE = re.compile(r"model_seed\d+_fold(\d+)_bestscore\.pth")


def list_slides(spec: str | os.PathLike | list, key: str = "apply.slides") -> dict[str, Path]:
    """Return ``{slide id: path}`` for ``spec``: a folder (its slide files, sorted by name) or a list of files.

    Slide files end in one of :data:`tilepipe.io.kaggle.SLIDE_SUFFIXES`; the
    id is the name without it (``[A-Za-z0-9_-]+``). Raises
    :class:`InputError` naming ``key`` or the path: a missing folder or
    file, a folder without slides, a file with another suffix, two files
    for one id, a broken link.
    """
    if isinstance(spec, (str, os.PathLike)) and Path(spec).is_dir():
        folder = Path(spec)
        paths = [p for p in sorted(folder.iterdir()) if slide_id_of(p.name) and not p.name.startswith(".")]
        if not paths:
            raise InputError(folder, f"{key}: no slide files ({', '.join(SLIDE_SUFFIXES)}) in this folder")
    elif isinstance(spec, (str, os.PathLike)):
        if not Path(spec).exists():
            raise InputError(spec, f"{key}: no such folder or slide file")
        paths = [Path(spec)]
    else:
        paths = [Path(p) for p in spec]
        if not paths:
            raise InputError(None, f"{key}: an empty list of slides")
    slides: dict[str, Path] = {}
    for path in paths:
        stem = slide_id_of(path.name)
        if stem is None:
            raise InputError(path, f"{key}: not a slide file name (expected one of {', '.join(SLIDE_SUFFIXES)})")
        if not (path.exists() or path.is_symlink()):
            raise InputError(path, f"{key}: file is missing")
        slide_id = check_id(stem, path)
        check_regular_file(path)
        if slide_id in slides:
            raise InputError(path, f"{key}: two files for slide {slide_id}: {slides[slide_id]} and {path}")
        slides[slide_id] = path
    return slides


def list_model_files(folder: str | os.PathLike, key: str = "apply.models") -> list[Path]:
    """Return the fold model files in ``folder``, by fold: ``fold{k}/model.pt`` or ``model_seed*_fold{k}_bestscore.pth``.

    Raises :class:`InputError` naming ``key`` and the folder when it is
    missing, holds no model, or holds two files for one fold.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, f"{key}: no such folder")
    by_fold: dict[int, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        match = _FOLD_DIR.fullmatch(path.name)
        if match and (path / "model.pt").is_file():
            by_fold.setdefault(int(match.group(1)), []).append(path / "model.pt")
        match = _FIRST_PLACE.fullmatch(path.name)
        if match:
            by_fold.setdefault(int(match.group(1)), []).append(check_regular_file(path))
    if not by_fold:
        raise InputError(folder, f"{key}: no fold{{k}}/model.pt or model_seed0_fold{{k}}_bestscore.pth here")
    for fold, paths in by_fold.items():
        if len(paths) > 1:
            raise InputError(folder, f"{key}: two models for fold {fold}: {', '.join(p.name for p in paths)}")
    return [by_fold[fold][0] for fold in sorted(by_fold)]
