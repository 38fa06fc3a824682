"""`vidbatch train-head`: custom tags by transfer learning on an output's frozen embeddings.

Reads the labelled ok videos (or their clips), holds out a share of each label's videos,
picks the weight decay by cross-validation on the rest, trains a linear head there, and
scores it on the held-out videos: accuracy, precision, recall and F1. The head that is
written is the one those figures describe (trained without the held-out videos).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np

from vidbatch.config import StorageConfig
from vidbatch.errors import JobError
from vidbatch.head import LinearHead, choose_l2, label_order, train_head
from vidbatch.head_data import LEVELS, Examples, Level, read_examples
from vidbatch.head_metrics import Evaluation, evaluate, format_evaluation, shown_label
from vidbatch.head_split import files_kept_together, held_out_videos
from vidbatch.storage import filesystem, replaced_file
from vidbatch.uri_policy import redact_uri

HEAD_FORMAT = "vidbatch-linear-head/1"
UNTRAINED_NOTE = (
    "NOTE: the embeddings come from untrained weights (seeded random init): a head on them shows the "
    "pipeline works, not what a trained backbone would score"
)


@dataclass(frozen=True)
class TrainedHead:
    head: LinearHead
    examples: Examples
    label_column: str
    evaluation: Evaluation
    train_videos: int
    test_videos: int
    untested_classes: tuple[str, ...]  # labels with one video: trained on, not scored
    test_video_ids: tuple[str, ...]  # the held-out videos, sorted
    l2_scores: dict[float, float]
    l2_source: str  # "given", "cross-validation", or why the default was taken
    seed: int
    test_fraction: float
    output: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": HEAD_FORMAT,
            "level": self.examples.level,
            "label_column": self.label_column,
            "model_id": self.examples.model_id,
            "sampling_id": self.examples.sampling_id,
            "untrained_backbone": self.examples.untrained_backbone,
            "trained_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "trained_on": {
                "output": redact_uri(self.output),
                "videos_version": self.examples.videos_version,
                "clips_version": self.examples.clips_version,
            },
            "split": {
                "by": "video",
                "seed": self.seed,
                "test_fraction": self.test_fraction,
                "train_videos": self.train_videos,
                "test_videos": self.test_videos,
                "train_examples": len(self.examples.video_ids) - self.evaluation.examples,
                "test_examples": self.evaluation.examples,
                "untested_classes": list(self.untested_classes),
                "test_video_ids": list(self.test_video_ids),
            },
            "left_out": self.examples.left_out,
            "l2_search": {
                "source": self.l2_source,
                "macro_f1_by_l2": {str(k): v for k, v in self.l2_scores.items()} or None,
            },
            "evaluation": self.evaluation.to_dict(),
            "head": self.head.to_dict(),
        }


def train_on_output(
    output: str,
    storage: StorageConfig,
    *,
    label_column: str,
    level: Level = "video",
    test_fraction: float = 0.2,
    seed: int = 0,
    l2: float | None = None,
) -> TrainedHead:
    _validate_test_fraction(test_fraction)
    _validate_l2(l2)
    examples = read_examples(output, storage, label_column=label_column, level=level)
    video_labels = dict(zip(examples.video_ids, examples.labels, strict=True))
    _refuse_one_label(video_labels, label_column)
    held = files_kept_together(
        held_out_videos(video_labels, test_fraction=test_fraction, seed=seed), examples.file_of, video_labels, seed=seed
    )
    if not held:
        raise JobError(
            f"no label of {label_column!r} has 2 or more ok videos ({_per_label(video_labels)}): "
            "a head cannot be scored without held-out videos of a label it learned; label more videos"
        )
    is_test = np.array([video_id in held for video_id in examples.video_ids])
    train_ids = [video_id for video_id, test in zip(examples.video_ids, is_test, strict=True) if not test]
    train_labels = [label for label, test in zip(examples.labels, is_test, strict=True) if not test]
    train_features = examples.features[~is_test]
    scores: dict[float, float] = {}
    source = "given"
    if l2 is None:
        # folds by file too: a video's clips, and the videos of one file, stay in one fold
        l2, scores = choose_l2(train_features, train_labels, [examples.file_of.get(v, v) for v in train_ids])
        source = (
            "cross-validation" if scores else f"default {l2:g}: fewer than 2 labels have 3 training videos, too few for 3 folds"
        )
    head = train_head(train_features, train_labels, l2=l2)
    predicted, _ = head.predict(examples.features[is_test])
    truth = [label for label, test in zip(examples.labels, is_test, strict=True) if test]
    counts = Counter(video_labels.values())
    return TrainedHead(
        head=head,
        examples=examples,
        label_column=label_column,
        evaluation=evaluate(truth, predicted, classes=head.classes, majority_label=_commonest(train_labels)),
        train_videos=len(video_labels) - len(held),
        test_videos=len(held),
        untested_classes=tuple(label for label in label_order(counts) if counts[label] < 2),
        test_video_ids=tuple(sorted(held)),
        l2_scores=scores,
        l2_source=source,
        seed=seed,
        test_fraction=test_fraction,
        output=output,
    )


def _look_alike_warning(classes: tuple[str, ...]) -> list[str]:
    """Labels that differ only in case or in spaces at their ends ('Red', 'red '): a head learns each as
    a class of its own and splits their videos between them, which is seldom what the labeller meant."""
    by_form: dict[str, list[str]] = {}
    for label in classes:
        by_form.setdefault(" ".join(label.split()).casefold(), []).append(label)
    alike = [forms for forms in by_form.values() if len(forms) > 1]
    if not alike:
        return []
    shown = "; ".join(", ".join(map(shown_label, forms)) for forms in alike[:3])
    return [
        f"  WARNING: labels that differ only in case or spaces are separate classes ({shown}"
        f"{'; ...' if len(alike) > 3 else ''}): clean the label column if they mean one thing"
    ]


def _commonest(labels: list[str]) -> str:
    """The label a guess without the test set would give every video (ties: the first in label_order)."""
    counts = Counter(labels)
    return max(label_order(counts), key=lambda label: counts[label])  # max keeps the first of equals


def write_head(trained: TrainedHead, uri: str, storage: StorageConfig) -> None:
    with replaced_file(uri, storage, "w") as handle:
        json.dump(trained.to_dict(), handle)


def read_head(uri: str, storage: StorageConfig) -> dict[str, Any]:
    """A head file written by train-head; JobError naming the file when it is not one."""
    fs, path = filesystem(uri, storage)
    try:
        with fs.open(path, "r") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise JobError(
            f"--head {uri!r}: no such file; `vidbatch train-head OUTPUT --label-column L -o {uri}` writes one"
        ) from None
    except (OSError, ValueError) as exc:
        raise JobError(f"--head {uri!r} cannot be read as a head file ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != HEAD_FORMAT:
        raise JobError(f"--head {uri!r} is not a head file of vidbatch train-head (format {HEAD_FORMAT!r})")
    _validate_head_file(data, uri)
    return data


def _validate_head_file(data: dict[str, Any], uri: str) -> None:
    """A head file edited by hand or damaged: refused naming the field, before anything is written."""
    for key in ("model_id", "sampling_id", "label_column"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise JobError(f"--head {uri!r}: {key!r} is missing or not a string; write the head again with train-head")
    if data.get("level") not in LEVELS:
        raise JobError(f"--head {uri!r}: level {data.get('level')!r} is not one of {', '.join(LEVELS)}")
    head = data.get("head")
    try:
        if not isinstance(head, dict):
            raise ValueError("'head' is missing")
        LinearHead.from_dict(head)
    except (KeyError, TypeError, ValueError) as exc:
        raise JobError(f"--head {uri!r}: its weights cannot be used ({exc}); write the head again with train-head") from None


def format_report(trained: TrainedHead, head_uri: str) -> str:
    examples = trained.examples
    test_rows = trained.evaluation.examples
    if examples.level == "video":
        sizes = f"on {trained.train_videos} videos; scored on {test_rows} held-out videos"
    else:
        train_rows = len(examples.video_ids) - test_rows
        sizes = (
            f"on {train_rows} clips of {trained.train_videos} videos; "
            f"scored on {test_rows} clips of {trained.test_videos} held-out videos"
        )
    lines = [
        f"trained a linear head for {trained.label_column!r} ({len(trained.head.classes)} labels) {sizes}",
        f"  embeddings: {examples.model_id}, sampling {examples.sampling_id}; {_versions_read(examples)}",
        f"  weight decay {trained.head.l2:g} ({_l2_said(trained.l2_source)})",
    ]
    if examples.untrained_backbone:
        lines.insert(1, "  " + UNTRAINED_NOTE)
    lines.extend(_look_alike_warning(trained.head.classes))
    if not trained.head.converged:
        lines.append(
            "  WARNING: the solver stopped before the optimum (its gradient is above 1e-5): the head is usable, "
            "but a stronger --l2 gives one that is exactly the optimum"
        )
    if examples.left_out:
        lines.append("  left out: " + ", ".join(f"{reason} {count}" for reason, count in examples.left_out.items()))
    if trained.untested_classes:
        lines.append(
            f"  not scored (one video each, used for training): {', '.join(map(shown_label, trained.untested_classes))}; "
            "label a second video of each to score them"
        )
    lines.extend(format_evaluation(trained.evaluation))
    lines.append(f"  head: {head_uri}")
    return "\n".join(lines)


def _versions_read(examples: Examples) -> str:
    clips = "" if examples.clips_version is None else f", clips version {examples.clips_version}"
    return f"read from videos version {examples.videos_version}{clips}"


def _l2_said(source: str) -> str:
    if source == "given":
        return "as given"
    if source == "cross-validation":
        return "best macro F1 in 3-fold cross-validation on the training videos"
    return source


def _refuse_one_label(video_labels: dict[str, str], label_column: str) -> None:
    if len(set(video_labels.values())) < 2:
        raise JobError(
            f"every ok video with a {label_column!r} has the same one ({_per_label(video_labels)}): "
            "a head needs at least 2 labels to tell apart"
        )


def _per_label(video_labels: dict[str, str]) -> str:
    counts = Counter(video_labels.values())
    return ", ".join(f"{label!r}: {counts[label]}" for label in label_order(counts))


def _validate_test_fraction(test_fraction: float) -> None:
    if not 0 < test_fraction < 1:
        raise JobError(f"--test-fraction {test_fraction}: give the share of each label's videos to hold out, e.g. 0.2")


def _validate_l2(l2: float | None) -> None:
    if l2 is not None and not (np.isfinite(l2) and l2 > 0):
        raise JobError(f"--l2 {l2}: give a positive weight decay, e.g. 0.01 (or leave it out to choose by cross-validation)")
