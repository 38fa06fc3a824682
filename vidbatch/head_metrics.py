"""Accuracy, precision, recall and F1 of a head's predictions, per class and averaged.

Conventions as scikit-learn's `classification_report`: a class never predicted has precision
0, a class never true has recall 0; the macro average weighs the same every class that is true
or predicted in the examples (a class predicted where it never is counts, with precision 0, as
scikit-learn counts it), the weighted average weighs each by its true count. A class neither
true nor predicted in the examples has no score at all (None; "-" in the table). The accuracy
of always guessing the training set's commonest label is reported beside the accuracy, so a
figure on unbalanced data can be judged.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ClassScores:
    label: str
    precision: float
    recall: float
    f1: float
    support: int  # how many examples truly have this label
    predicted: int  # how many examples were given this label

    @property
    def scored(self) -> bool:
        """Do the examples say anything about this class? Not when it is neither true nor predicted."""
        return bool(self.support or self.predicted)


@dataclass(frozen=True)
class Evaluation:
    examples: int
    accuracy: float
    majority_accuracy: float  # always guessing `majority_label`
    majority_label: str  # the training set's commonest label (the test set's when not given)
    per_class: tuple[ClassScores, ...]
    macro_precision: float
    macro_recall: float
    macro_f1: float
    weighted_f1: float
    # confusion[i][j]: examples of classes[i] predicted as classes[j]
    classes: tuple[str, ...]
    confusion: tuple[tuple[int, ...], ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "examples": self.examples,
            "accuracy": self.accuracy,
            "majority_accuracy": self.majority_accuracy,
            "majority_label": self.majority_label,
            "macro": {"precision": self.macro_precision, "recall": self.macro_recall, "f1": self.macro_f1},
            "weighted_f1": self.weighted_f1,
            "per_class": {
                s.label: {
                    "precision": s.precision if s.scored else None,
                    "recall": s.recall if s.scored else None,
                    "f1": s.f1 if s.scored else None,
                    "support": s.support,
                }
                for s in self.per_class
            },
            "confusion": {"classes": list(self.classes), "rows_true_columns_predicted": [list(row) for row in self.confusion]},
        }


def evaluate(
    truth: Sequence[str], predicted: Sequence[str], *, classes: Sequence[str], majority_label: str | None = None
) -> Evaluation:
    """Scores of `predicted` against `truth` over `classes` (the head's classes: a class with no
    test example still gets its row, with support 0). `majority_label` is the baseline's guess:
    the training set's commonest label (a guess made without seeing the test set)."""
    _validate_pairs(truth, predicted)
    classes = tuple(classes)
    _validate_classes(classes, truth, predicted)
    if majority_label is None:
        majority_label = min(Counter(truth).items(), key=lambda item: (-item[1], item[0]))[0]
    elif majority_label not in classes:
        raise ValueError(f"majority_label {majority_label!r} is not among the classes {list(classes)}")
    index = {label: i for i, label in enumerate(classes)}
    confusion = [[0] * len(classes) for _ in classes]
    for true, guess in zip(truth, predicted, strict=True):
        confusion[index[true]][index[guess]] += 1
    per_class = tuple(_class_scores(label, i, confusion) for i, label in enumerate(classes))
    # A class absent from both sides has no defined score; one only predicted has precision 0,
    # and leaving it out would hide those false positives from the macro precision.
    scored = [s for s in per_class if s.scored]
    total = len(truth)
    return Evaluation(
        examples=total,
        accuracy=sum(confusion[i][i] for i in range(len(classes))) / total,
        majority_accuracy=sum(1 for true in truth if true == majority_label) / total,
        majority_label=majority_label,
        per_class=per_class,
        macro_precision=_mean([s.precision for s in scored]),
        macro_recall=_mean([s.recall for s in scored]),
        macro_f1=_mean([s.f1 for s in scored]),
        weighted_f1=sum(s.f1 * s.support for s in per_class) / total,
        classes=classes,
        confusion=tuple(tuple(row) for row in confusion),
    )


def _class_scores(label: str, i: int, confusion: list[list[int]]) -> ClassScores:
    hits = confusion[i][i]
    predicted = sum(row[i] for row in confusion)
    support = sum(confusion[i])
    precision = hits / predicted if predicted else 0.0
    recall = hits / support if support else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return ClassScores(label=label, precision=precision, recall=recall, f1=f1, support=support, predicted=predicted)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def format_evaluation(evaluation: Evaluation) -> list[str]:
    shown = {label: shown_label(label) for label in evaluation.classes}
    width = max(12, *(len(text) for text in shown.values()))
    lines = [
        f"  accuracy {evaluation.accuracy:.3f} on {evaluation.examples} held-out examples "
        f"(always guessing the training set's commonest label, {shown[evaluation.majority_label]}: "
        f"{evaluation.majority_accuracy:.3f})",
        f"  {'label':<{width}} precision  recall     f1  support",
    ]
    for s in evaluation.per_class:
        if s.scored:
            lines.append(f"  {shown[s.label]:<{width}} {s.precision:9.3f} {s.recall:7.3f} {s.f1:6.3f} {s.support:8d}")
        else:  # no held-out example and never predicted: nothing to score, not a score of 0
            lines.append(f"  {shown[s.label]:<{width}} {'-':>9} {'-':>7} {'-':>6} {s.support:8d}")
    lines.append(
        f"  {'macro avg':<{width}} {evaluation.macro_precision:9.3f} {evaluation.macro_recall:7.3f} "
        f"{evaluation.macro_f1:6.3f} {evaluation.examples:8d}"
    )
    lines.append(f"  {'weighted avg':<{width}} {'':9} {'':7} {evaluation.weighted_f1:6.3f} {evaluation.examples:8d}")
    lines.append("  confusion (rows: true label, columns: predicted, in the order above):")
    lines.extend("    " + " ".join(f"{count:5d}" for count in row) for row in evaluation.confusion)
    return lines


def shown_label(label: str) -> str:
    """A label as the table shows it: quoted when it is empty, has spaces at an end, or holds a
    line break or tab (so 'red' and 'red ' do not look alike)."""
    return label if label.strip() == label and label and label.isprintable() else repr(label)


def _validate_pairs(truth: Sequence[str], predicted: Sequence[str]) -> None:
    if len(truth) != len(predicted):
        raise ValueError(f"{len(truth)} true labels against {len(predicted)} predictions")
    if not truth:
        raise ValueError("nothing to evaluate: no examples")


def _validate_classes(classes: tuple[str, ...], truth: Sequence[str], predicted: Sequence[str]) -> None:
    unknown = (set(truth) | set(predicted)) - set(classes)
    if unknown:
        raise ValueError(f"labels {sorted(unknown)} are not among the classes {list(classes)}")
