"""Held-out splits for training a head: by video, stratified by label, stable from run to run.

A video's clips are near-duplicates of each other, so they never straddle a split: a test
clip whose sibling was trained on would flatter every figure. Each video's place comes from
a hash of (seed, video_id), not from the table's row order, so retraining on the same labels
holds out the same videos, and a label's new videos move at most a few of its others.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict

import numpy as np


def held_out_videos(video_labels: dict[str, str], *, test_fraction: float, seed: int) -> set[str]:
    """The videos held out for testing: round(test_fraction * n) of each label's n videos,
    at least one where the label has two or more (so every class that can be tested is)."""
    _validate_test_fraction(test_fraction)
    by_label: dict[str, list[str]] = defaultdict(list)
    for video_id, label in video_labels.items():
        by_label[label].append(video_id)
    held: set[str] = set()
    for videos in by_label.values():
        if len(videos) < 2:
            continue  # one video: it is needed for training; the class is reported as untested
        count = min(len(videos) - 1, max(1, round(test_fraction * len(videos))))
        held.update(sorted(videos, key=lambda video_id: _rank(seed, video_id))[:count])
    return held


def files_kept_together(held: set[str], file_of: dict[str, str], labels: dict[str, str], *, seed: int) -> set[str]:
    """`held` with the videos of one file on one side: the side of the file's first video by rank,
    or training where holding it out would leave one of its labels with no training video.

    A library can list one file under two ids (a copy, a re-ingest): split by id, one copy was
    trained on and the other scored, and every figure was flattered (600 rows of 5 files with
    arbitrary labels scored accuracy 1.000 against a 0.400 baseline)."""
    members: dict[str, list[str]] = defaultdict(list)
    for video_id, file in file_of.items():
        members[file].append(video_id)
    shared = [videos for videos in members.values() if len(videos) > 1]
    kept = set(held)
    for videos in shared:
        first = min(videos, key=lambda video_id: _rank(seed, video_id))
        kept.difference_update(videos)
        if first in held:
            kept.update(videos)
    trained = {labels[video_id] for video_id in labels if video_id not in kept}
    for videos in shared:  # a label must keep a video to learn from
        if any(labels[video_id] not in trained for video_id in videos if video_id in kept):
            kept.difference_update(videos)
            trained.update(labels[video_id] for video_id in videos)
    return kept


TRAIN_ONLY = -1  # the fold of a rare label's rows: in every fold's training, never held out


def fold_of(groups: list[str], labels: list[str], *, folds: int) -> np.ndarray | None:
    """A fold number per row for cross-validation, the rows of one group (video) together and each
    label's groups dealt round-robin over the folds.

    A label with fewer groups than folds cannot be held out in every fold: its rows get
    TRAIN_ONLY, so they are learned from in every fold and scored in none (one rare label no
    longer turns the search off for all the others). None when fewer than two labels have
    enough groups: there would be nothing to tell apart in a held-out fold.
    """
    label_of_group = dict(zip(groups, labels, strict=True))
    by_label: dict[str, list[str]] = defaultdict(list)
    for group, label in label_of_group.items():
        by_label[label].append(group)
    if sum(1 for members in by_label.values() if len(members) >= folds) < 2:
        return None
    fold_of_group: dict[str, int] = {}
    for members in by_label.values():
        for position, group in enumerate(sorted(members, key=lambda group: _rank(0, group))):
            fold_of_group[group] = position % folds if len(members) >= folds else TRAIN_ONLY
    return np.array([fold_of_group[group] for group in groups])


def _rank(seed: int, video_id: str) -> bytes:
    return hashlib.sha256(f"{seed}\0{video_id}".encode()).digest()


def _validate_test_fraction(test_fraction: float) -> None:
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction={test_fraction}: give the share of each label's videos to hold out, between 0 and 1")
