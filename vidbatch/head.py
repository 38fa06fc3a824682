"""A linear classification head trained on frozen backbone embeddings (transfer learning).

Pure numpy, no Ray and no torch: the embeddings are already computed, and a multinomial
logistic regression on them is a small convex problem. It is solved by accelerated
gradient descent with a step size from the problem's own curvature bound, so there is no
learning rate to tune and the same data always gives the same head.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

# The grid `choose_l2` searches; weight decay per example, on standardised features.
L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
DEFAULT_L2 = 1e-2
MAX_ITERATIONS = 5000
# Newton's method while its Hessian (this many parameters squared) stays small.
NEWTON_MAX_PARAMETERS = 1200
NEWTON_MAX_ITERATIONS = 100
# Stop when the gradient's norm falls below this (the loss is then flat to ~1e-10).
GRADIENT_TOLERANCE = 1e-5
# A label written as a plain decimal number (ratings "1".."10", "0.5"): such labels are put in the order of their values.
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")


def label_order(labels: Iterable[str]) -> tuple[str, ...]:
    """The distinct labels in the order a head's classes and its reports list them: by value when
    every label is a number ("2" before "10", where text order put "10" first), else as text.
    (A head file lists its classes with their weights, so heads saved in text order read as before.)"""
    distinct = set(labels)
    if all(_NUMBER.fullmatch(label) for label in distinct):
        return tuple(sorted(distinct, key=lambda label: (float(label), label)))  # "1" and "01" kept apart, in text order
    return tuple(sorted(distinct))


@dataclass(frozen=True)
class LinearHead:
    """softmax(((x - mean) / scale) @ weight.T + bias) over `classes`."""

    classes: tuple[str, ...]
    weight: np.ndarray  # (classes, dim) float64
    bias: np.ndarray  # (classes,)
    mean: np.ndarray  # (dim,)
    scale: np.ndarray  # (dim,)
    l2: float
    converged: bool = True  # the solver reached GRADIENT_TOLERANCE

    @property
    def dim(self) -> int:
        return int(self.weight.shape[1])

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        _validate_features(features, dim=self.dim)
        return _softmax(self._logits(_standardise(features, self.mean, self.scale)))

    def predict(self, features: np.ndarray) -> tuple[list[str], np.ndarray]:
        """The most probable class of each row, and its probability."""
        probs = self.probabilities(features)
        best = probs.argmax(axis=1)
        return [self.classes[i] for i in best], probs[np.arange(len(best)), best]

    def _logits(self, standardised: np.ndarray) -> np.ndarray:
        return standardised @ self.weight.T + self.bias

    def to_dict(self) -> dict[str, Any]:
        return {
            "classes": list(self.classes),
            "weight": self.weight.tolist(),
            "bias": self.bias.tolist(),
            "feature_mean": self.mean.tolist(),
            "feature_scale": self.scale.tolist(),
            "l2": self.l2,
            "converged": self.converged,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LinearHead:
        classes = tuple(str(name) for name in data["classes"])
        weight = np.asarray(data["weight"], dtype=np.float64)
        bias = np.asarray(data["bias"], dtype=np.float64)
        mean = np.asarray(data["feature_mean"], dtype=np.float64)
        scale = np.asarray(data["feature_scale"], dtype=np.float64)
        if weight.ndim != 2 or weight.shape[0] != len(classes) or bias.shape != (len(classes),):
            raise ValueError(f"weight {weight.shape} and bias {bias.shape} do not fit {len(classes)} classes")
        if mean.shape != (weight.shape[1],) or scale.shape != (weight.shape[1],):
            raise ValueError(f"feature_mean {mean.shape} / feature_scale {scale.shape} do not fit dim {weight.shape[1]}")
        if len(set(classes)) != len(classes):
            raise ValueError(f"classes name a label twice: {sorted(c for c in set(classes) if classes.count(c) > 1)}")
        for name, values in (("weight", weight), ("bias", bias), ("feature_mean", mean), ("feature_scale", scale)):
            if not np.isfinite(values).all():
                raise ValueError(f"{name} holds NaN or Inf")
        if (scale <= 0).any():
            raise ValueError("feature_scale holds values that are not positive")
        return cls(
            classes=classes,
            weight=weight,
            bias=bias,
            mean=mean,
            scale=scale,
            l2=float(data["l2"]),
            converged=bool(data.get("converged", True)),
        )


def train_head(features: np.ndarray, labels: list[str], *, l2: float = DEFAULT_L2) -> LinearHead:
    """Fit a multinomial logistic regression with weight decay `l2` to (features, labels)."""
    _validate_features(features)
    _validate_labels(labels, rows=len(features))
    _validate_l2(l2)
    classes = label_order(labels)
    index = {label: i for i, label in enumerate(classes)}
    targets = np.array([index[label] for label in labels], dtype=np.int64)
    mean, scale = _standardisation(features)
    x = _standardise(features, mean, scale)
    weight, bias, converged = _fit(x, targets.astype(np.int64), len(classes), l2)
    return LinearHead(classes=classes, weight=weight, bias=bias, mean=mean, scale=scale, l2=l2, converged=converged)


def choose_l2(
    features: np.ndarray, labels: list[str], groups: list[str], *, folds: int = 3, grid: tuple[float, ...] = L2_GRID
) -> tuple[float, dict[float, float]]:
    """The weight decay with the best mean macro-F1 over `folds` folds split by group (a video's
    clips stay together), and each candidate's score. A class with fewer groups than folds is
    trained on in every fold and scored in none; falls back to DEFAULT_L2 when fewer than two
    classes have enough groups (head_split.fold_of)."""
    from vidbatch.head_metrics import evaluate
    from vidbatch.head_split import fold_of

    fold = fold_of(groups, labels, folds=folds)
    if fold is None:
        return DEFAULT_L2, {}
    scores: dict[float, float] = {}
    label_array = np.array(labels, dtype=object)
    for l2 in grid:
        f1s = []
        for k in range(folds):
            held = fold == k
            head = train_head(features[~held], list(label_array[~held]), l2=l2)
            predicted, _ = head.predict(features[held])
            f1s.append(evaluate(list(label_array[held]), predicted, classes=label_order(labels)).macro_f1)
        scores[l2] = float(np.mean(f1s))
    best = max(grid, key=lambda l2: (scores[l2], l2))  # ties go to the stronger decay
    return best, scores


def _fit(x: np.ndarray, targets: np.ndarray, num_classes: int, l2: float) -> tuple[np.ndarray, np.ndarray, bool]:
    """The weights and biases minimising the mean cross-entropy plus l2/2 * |weights|^2, and whether
    the gradient fell below GRADIENT_TOLERANCE.

    With fewer examples than dimensions (a few hundred labelled videos, 2048-d features) the
    optimal weights lie in the span of the examples, so a small problem is solved exactly in those
    coordinates (an SVD) by Newton's method, which does not slow down on the ill-conditioned
    problems a weak decay makes; a large one by accelerated gradient.
    """
    rows, dim = x.shape
    onehot = np.zeros((rows, num_classes))
    onehot[np.arange(rows), targets] = 1.0
    basis = None
    if rows < dim and num_classes * (rows + 1) <= NEWTON_MAX_PARAMETERS:
        left, singular, basis = np.linalg.svd(x, full_matrices=False)
        x = left * singular
    if num_classes * (x.shape[1] + 1) <= NEWTON_MAX_PARAMETERS:
        params, converged = _newton(x, onehot, l2)
    else:
        params, converged = _accelerated(x, onehot, l2)
    weight, bias = params[:, :-1], params[:, -1]
    return (weight @ basis if basis is not None else weight), bias, converged


def _objective(params: np.ndarray, x: np.ndarray, onehot: np.ndarray, l2: float) -> float:
    logits = x @ params[:, :-1].T + params[:, -1]
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-(log_probs * onehot).sum() / len(x) + 0.5 * l2 * (params[:, :-1] ** 2).sum())


def _newton(x: np.ndarray, onehot: np.ndarray, l2: float) -> tuple[np.ndarray, bool]:
    rows, dim = x.shape
    classes = onehot.shape[1]
    with_bias = np.concatenate([x, np.ones((rows, 1))], axis=1)
    decay = np.tile(np.append(np.full(dim, l2), 0.0), classes)  # the biases are not decayed
    params = np.zeros((classes, dim + 1))
    for _ in range(NEWTON_MAX_ITERATIONS):
        gradient = _gradient(params, x, onehot, l2)
        if np.linalg.norm(gradient) < GRADIENT_TOLERANCE:
            return params, True
        probs = _softmax(with_bias @ params.T)
        # Hessian of the mean cross-entropy: (diag(p) - p p^T) (x) x x^T, averaged over the rows.
        outer = np.einsum("ia,ib->iab", with_bias, with_bias)
        hessian = -np.einsum("ic,id,iab->cadb", probs, probs, outer)
        for c in range(classes):
            hessian[c, :, c, :] += np.einsum("i,iab->ab", probs[:, c], outer)
        size = classes * (dim + 1)
        matrix = hessian.reshape(size, size) / rows + np.diag(decay) + 1e-10 * np.eye(size)  # the shift of all biases is flat
        direction = -np.linalg.solve(matrix, gradient.reshape(size)).reshape(classes, dim + 1)
        params = _line_search(params, direction, gradient, x, onehot, l2)
    return params, bool(np.linalg.norm(_gradient(params, x, onehot, l2)) < GRADIENT_TOLERANCE)


def _line_search(
    params: np.ndarray, direction: np.ndarray, gradient: np.ndarray, x: np.ndarray, onehot: np.ndarray, l2: float
) -> np.ndarray:
    """Backtracking (Armijo) from the full Newton step."""
    start = _objective(params, x, onehot, l2)
    slope = float(np.vdot(gradient, direction))
    step = 1.0
    for _ in range(40):
        candidate = params + step * direction
        if _objective(candidate, x, onehot, l2) <= start + 1e-4 * step * slope:
            return candidate
        step /= 2
    return params


def _accelerated(x: np.ndarray, onehot: np.ndarray, l2: float) -> tuple[np.ndarray, bool]:
    """Accelerated gradient descent with adaptive restart."""
    dim = x.shape[1]
    classes = onehot.shape[1]
    # The softmax loss's curvature is at most 1/2 * ||x||^2 per example; with the bias as a
    # feature of 1 (orthogonal to the centred features), the mean loss's gradient is Lipschitz
    # with at most `smooth`. The weight decay adds l2 to the weights only, so each block gets
    # its own step: a large decay must not slow the (undecayed) biases down.
    smooth = 0.5 * (_top_eigenvalue(x) + 1.0)
    step = np.full((classes, dim + 1), 1.0 / (smooth + l2))
    step[:, dim] = 1.0 / smooth
    params = np.zeros((classes, dim + 1))
    momentum_point = params.copy()
    t = 1.0
    for _ in range(MAX_ITERATIONS):
        gradient = _gradient(momentum_point, x, onehot, l2)
        if np.linalg.norm(gradient) < GRADIENT_TOLERANCE:
            return momentum_point, True
        updated = momentum_point - step * gradient
        if np.vdot(gradient, updated - params) > 0:
            # The momentum points uphill: restart it (O'Donoghue and Candes), which keeps the
            # fast rate on strongly convex problems instead of oscillating.
            t = 1.0
        t_next = (1.0 + np.sqrt(1.0 + 4.0 * t * t)) / 2.0
        momentum_point = updated + ((t - 1.0) / t_next) * (updated - params)
        params, t = updated, t_next
    return params, bool(np.linalg.norm(_gradient(params, x, onehot, l2)) < GRADIENT_TOLERANCE)


def _gradient(params: np.ndarray, x: np.ndarray, onehot: np.ndarray, l2: float) -> np.ndarray:
    weight, bias = params[:, :-1], params[:, -1]
    error = (_softmax(x @ weight.T + bias) - onehot) / len(x)
    grad_weight = error.T @ x + l2 * weight  # the bias is not decayed
    return np.concatenate([grad_weight, error.sum(axis=0)[:, None]], axis=1)


def _top_eigenvalue(x: np.ndarray) -> float:
    """The largest eigenvalue of x.T @ x / rows (the Gram matrix of the smaller side)."""
    rows = len(x)
    gram = x @ x.T if rows <= x.shape[1] else x.T @ x
    return float(np.linalg.eigvalsh(gram / rows)[-1])


def _standardisation(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = features.mean(axis=0, dtype=np.float64)
    std = features.std(axis=0, dtype=np.float64)
    # A dimension that never varies in the training data carries nothing; dividing by ~0
    # would blow up any later example that differs there.
    return mean, np.where(std > 1e-8, std, 1.0)


def _standardise(features: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return (np.asarray(features, dtype=np.float64) - mean) / scale


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _validate_features(features: np.ndarray, *, dim: int | None = None) -> None:
    if features.ndim != 2 or len(features) == 0:
        raise ValueError(f"features must be a non-empty 2-d array (rows, dim), got shape {features.shape}")
    if dim is not None and features.shape[1] != dim:
        raise ValueError(f"features have {features.shape[1]} dimensions, the head takes {dim}")
    if not np.isfinite(features).all():
        raise ValueError("features hold NaN or Inf")


def _validate_labels(labels: list[str], *, rows: int) -> None:
    if len(labels) != rows:
        raise ValueError(f"{len(labels)} labels for {rows} rows of features")
    if len(set(labels)) < 2:
        raise ValueError(f"a head needs at least 2 classes to tell apart, got {sorted(set(labels))}")


def _validate_l2(l2: float) -> None:
    if not np.isfinite(l2) or l2 <= 0:
        raise ValueError(f"l2={l2}: the weight decay must be a positive number")
