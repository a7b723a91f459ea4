"""Which of a stage's fold models predict a slide: the one that held a train slide out, or all of them.

Torch-free: it reads paths and the fold table only (``results/folds.csv``,
:func:`tilepipe.data.folds.read_folds`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from tilepipe.errors import InputError

__all__ = ["models_for_slide"]


def models_for_slide(
    paths: Iterable[str | os.PathLike],
    folds: Mapping[str, int],
    slide: str,
    folds_path: str | os.PathLike,
) -> list[str]:
    """Return the model files among ``paths`` (``.../fold{k}/model.pt``) that predict ``slide``.

    ``folds`` maps each train slide to its fold, as read from ``folds_path``.
    A slide in ``folds`` gets only the model of its fold, which never saw it
    (its out-of-fold prediction); any other slide (test, external) gets the
    whole ensemble. Raises :class:`InputError` naming ``folds_path`` when a
    train slide has no such model: its fold is ``-1`` (always in training,
    never held out) or its fold's model is not among ``paths``.
    """
    paths = [os.fspath(p) for p in paths]
    if slide not in folds:
        return paths
    fold = int(folds[slide])
    chosen = [p for p in paths if Path(p).parent.name == f"fold{fold}"]
    if fold < 0:
        raise InputError(
            folds_path, f"train slide {slide} is in no held-out fold (fold {fold}): it has no out-of-fold model"
        )
    if not chosen:
        folders = sorted(Path(p).parent.name for p in paths)
        raise InputError(
            folds_path, f"train slide {slide} is in fold {fold}, but no model of that fold is given: {folders}"
        )
    return chosen
