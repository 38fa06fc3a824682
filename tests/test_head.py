"""The transfer-learning head's pure parts: metrics, the solver, the held-out split."""

from __future__ import annotations

import numpy as np
import pytest

from vidbatch.head import DEFAULT_L2, L2_GRID, LinearHead, _gradient, choose_l2, label_order, train_head
from vidbatch.head_metrics import evaluate, format_evaluation
from vidbatch.head_split import TRAIN_ONLY, fold_of, held_out_videos


def test_metrics_match_a_hand_count():
    truth = ["cat", "cat", "cat", "dog", "dog", "owl"]
    predicted = ["cat", "dog", "cat", "dog", "cat", "cat"]
    scores = evaluate(truth, predicted, classes=["cat", "dog", "owl", "yak"])
    by_label = {s.label: s for s in scores.per_class}
    # cat: 2 hits of 4 predicted, of 3 true; dog: 1 of 2, of 2; owl: never predicted; yak: no example
    assert (by_label["cat"].precision, by_label["cat"].recall) == (0.5, pytest.approx(2 / 3))
    assert by_label["cat"].f1 == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert (by_label["dog"].precision, by_label["dog"].recall, by_label["dog"].f1) == (0.5, 0.5, 0.5)
    assert (by_label["owl"].precision, by_label["owl"].recall, by_label["owl"].f1, by_label["owl"].support) == (0, 0, 0, 1)
    assert by_label["yak"].support == 0
    assert scores.accuracy == pytest.approx(3 / 6)
    assert scores.majority_accuracy == pytest.approx(3 / 6)
    # Averages over the classes that have examples (cat, dog, owl), not the unsupported yak.
    assert scores.macro_f1 == pytest.approx((by_label["cat"].f1 + 0.5 + 0) / 3)
    assert scores.macro_precision == pytest.approx((0.5 + 0.5 + 0) / 3)
    assert scores.weighted_f1 == pytest.approx((3 * by_label["cat"].f1 + 2 * 0.5) / 6)
    assert scores.confusion == ((2, 1, 0, 0), (1, 1, 0, 0), (1, 0, 0, 0), (0, 0, 0, 0))
    text = "\n".join(format_evaluation(scores))
    assert "accuracy 0.500 on 6 held-out examples" in text and "owl" in text


def test_macro_average_counts_a_class_predicted_where_it_never_is():
    # scikit-learn's classification_report on the same labels: cat P 1 R 1/2, dog P 1 R 1,
    # owl (no example, predicted once) P 0 R 0; the macro average is over all three.
    scores = evaluate(["cat", "cat", "dog", "dog"], ["cat", "owl", "dog", "dog"], classes=["cat", "dog", "owl", "yak"])
    assert scores.macro_precision == pytest.approx((1 + 1 + 0) / 3)
    assert scores.macro_recall == pytest.approx((0.5 + 1 + 0) / 3)
    assert scores.macro_f1 == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert scores.weighted_f1 == pytest.approx((2 * (2 / 3) + 2 * 1) / 4)


def test_the_baseline_guesses_the_training_set_s_label_and_unscored_classes_say_so():
    """Before: the baseline guessed the test set's commonest label (a guess no model could make), and
    a class with no test example that was never predicted showed 0.000 like a class that failed."""
    scores = evaluate(["a", "b", "b"], ["a", "b", "a"], classes=["a", "b", "rare"], majority_label="a")
    assert (scores.majority_label, scores.majority_accuracy) == ("a", pytest.approx(1 / 3))
    assert evaluate(["a", "b", "b"], ["a", "b", "a"], classes=["a", "b"]).majority_label == "b"  # without one given
    rare = scores.to_dict()["per_class"]["rare"]
    assert rare == {"precision": None, "recall": None, "f1": None, "support": 0}
    text = "\n".join(format_evaluation(scores))
    assert "always guessing the training set's commonest label, a: 0.333" in text
    assert [line.split() for line in text.splitlines() if line.split()[:1] == ["rare"]] == [["rare", "-", "-", "-", "0"]]
    # labels that differ only in spaces are quoted apart
    spaced = "\n".join(format_evaluation(evaluate(["red", "red "], ["red", "red "], classes=["red", "red "])))
    assert "'red '" in spaced
    with pytest.raises(ValueError, match="majority_label 'zebra'"):
        evaluate(["a"], ["a"], classes=["a"], majority_label="zebra")


def test_metrics_refuse_what_they_cannot_score():
    with pytest.raises(ValueError, match="2 true labels against 1 predictions"):
        evaluate(["a", "b"], ["a"], classes=["a", "b"])
    with pytest.raises(ValueError, match=r"\['c'\] are not among the classes"):
        evaluate(["a", "c"], ["a", "a"], classes=["a", "b"])
    with pytest.raises(ValueError, match="no examples"):
        evaluate([], [], classes=["a"])


def _clusters(rows_per_class: int, *, dim: int = 32, spread: float = 0.3, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, dim))
    features = np.concatenate([centre + spread * rng.normal(size=(rows_per_class, dim)) for centre in centres])
    labels = [name for name in ("alpha", "beta", "gamma") for _ in range(rows_per_class)]
    return features.astype(np.float32), labels


def test_the_head_separates_held_out_points_of_separable_classes():
    features, labels = _clusters(40)
    train = np.arange(len(labels)) % 4 != 0
    head = train_head(features[train], [label for label, t in zip(labels, train, strict=True) if t])
    predicted, scores = head.predict(features[~train])
    truth = [label for label, t in zip(labels, train, strict=True) if not t]
    assert predicted == truth
    assert head.classes == ("alpha", "beta", "gamma")
    assert np.all((scores > 0.5) & (scores <= 1.0))
    assert np.allclose(head.probabilities(features[~train]).sum(axis=1), 1.0)


def test_the_solver_reaches_the_regularised_optimum():
    """Overlapping classes: a solver stopped early would leave a gradient; at the optimum it vanishes."""
    features, labels = _clusters(30, spread=3.0, seed=1)
    head = train_head(features, labels, l2=0.05)
    x = (features.astype(np.float64) - head.mean) / head.scale
    onehot = np.eye(3)[[head.classes.index(label) for label in labels]]
    params = np.concatenate([head.weight, head.bias[:, None]], axis=1)
    assert np.linalg.norm(_gradient(params, x, onehot, 0.05)) < 1e-4
    # ...and the same data always gives the same head.
    again = train_head(features, labels, l2=0.05)
    assert np.array_equal(again.weight, head.weight) and np.array_equal(again.bias, head.bias)


def test_a_feature_that_never_varies_does_not_blow_up_later_examples():
    features, labels = _clusters(10)
    features[:, 0] = 0.25
    head = train_head(features, labels)
    assert head.scale[0] == 1.0
    probe = features[:3].copy()
    probe[:, 0] = 5.0  # differs where training never did
    assert np.isfinite(head.probabilities(probe)).all()


def test_the_head_survives_its_file_format():
    features, labels = _clusters(10)
    head = train_head(features, labels)
    copy = LinearHead.from_dict(head.to_dict())
    assert copy.predict(features)[0] == head.predict(features)[0]
    assert np.allclose(copy.probabilities(features), head.probabilities(features))
    broken = head.to_dict() | {"bias": [0.0]}
    with pytest.raises(ValueError, match="do not fit 3 classes"):
        LinearHead.from_dict(broken)


def test_labels_that_are_numbers_are_classes_in_the_order_of_their_values():
    """Ratings "1", "2", "10" were classes in text order ("1", "10", "2"), and so the report's rows and columns."""
    features, labels = _clusters(20)
    numbers = [{"alpha": "2", "beta": "10", "gamma": "1"}[label] for label in labels]
    head = train_head(features, numbers)
    assert head.classes == ("1", "2", "10")
    assert head.predict(features)[0] == numbers  # each class still learns its own examples
    assert label_order(["0.5", "10", "-1", "2", "01", "1"]) == ("-1", "0.5", "01", "1", "2", "10")
    assert label_order(["cat", "10", "2"]) == ("10", "2", "cat")  # not all numbers: text order, as before
    # A head saved before, in text order, reads and predicts with its own order.
    saved = LinearHead.from_dict(head.to_dict() | {"classes": ["1", "10", "2"]} | _rows_in(head, [0, 2, 1]))
    assert saved.classes == ("1", "10", "2") and saved.predict(features)[0] == numbers


def _rows_in(head: LinearHead, order: list[int]) -> dict[str, list]:
    return {"weight": head.weight[order].tolist(), "bias": head.bias[order].tolist()}


def test_training_refuses_what_cannot_be_learned():
    features, labels = _clusters(5)
    with pytest.raises(ValueError, match="at least 2 classes"):
        train_head(features[:5], labels[:5])
    with pytest.raises(ValueError, match="14 labels for 15 rows"):
        train_head(features, labels[:-1])
    with pytest.raises(ValueError, match="l2=0"):
        train_head(features, labels, l2=0)
    bad = features.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        train_head(bad, labels)
    with pytest.raises(ValueError, match="features have 31 dimensions, the head takes 32"):
        train_head(features, labels).predict(features[:, :31])


def test_held_out_videos_are_stratified_stable_and_leave_every_label_trained():
    labels = {f"a{i}": "a" for i in range(10)} | {f"b{i}": "b" for i in range(3)} | {"c0": "c"} | {"d0": "d", "d1": "d"}
    held = held_out_videos(labels, test_fraction=0.2, seed=0)
    per_label = {label: sum(1 for v in held if labels[v] == label) for label in "abcd"}
    assert per_label == {"a": 2, "b": 1, "c": 0, "d": 1}  # round(0.2n), at least 1, never all
    assert held == held_out_videos(dict(reversed(labels.items())), test_fraction=0.2, seed=0)  # not row order
    assert held_out_videos(labels, test_fraction=0.2, seed=1) != held  # the seed picks others
    assert held_out_videos(labels, test_fraction=0.9, seed=0) >= held  # a larger share keeps the smaller one's videos
    with pytest.raises(ValueError, match="test_fraction=1"):
        held_out_videos(labels, test_fraction=1, seed=0)


def test_folds_keep_a_video_together_and_give_every_fold_every_label():
    groups = [f"v{i // 3}" for i in range(36)]  # 12 videos of 3 clips
    labels = ["x" if int(g[1:]) % 2 else "y" for g in groups]
    fold = fold_of(groups, labels, folds=3)
    assert fold is not None
    for group in set(groups):
        assert len({fold[i] for i, g in enumerate(groups) if g == group}) == 1
    for k in range(3):
        assert {labels[i] for i in range(36) if fold[i] == k} == {"x", "y"}
    assert fold_of(groups[:12], labels[:12], folds=3) is None  # 2 videos per label: 3 folds cannot each hold one
    # a rare label (one video) is trained on in every fold and held out in none; the others are dealt as before
    rare = fold_of([*groups, "w0"], [*labels, "z"], folds=3)
    assert rare is not None and rare[-1] == TRAIN_ONLY and list(rare[:-1]) == list(fold)


def test_cross_validation_picks_from_the_grid_and_falls_back_when_it_cannot():
    features, labels = _clusters(12, spread=2.0)
    groups = [f"v{i}" for i in range(len(labels))]
    best, scores = choose_l2(features, labels, groups)
    assert best in L2_GRID and set(scores) == set(L2_GRID)
    assert scores[best] == max(scores.values())
    assert all(0 <= score <= 1 for score in scores.values())
    few = [0, 1, 12, 13]  # two videos of alpha, two of beta: too few for 3 folds
    assert choose_l2(features[few], [labels[i] for i in few], [groups[i] for i in few]) == (DEFAULT_L2, {})


@pytest.mark.parametrize("l2", [1e-4, 1e6])
def test_few_examples_in_many_dimensions_and_a_huge_decay_reach_the_optimum(l2):
    """helper-23: 12 examples of 512-d features at l2=1e-4 stopped at a gradient of 1e-4 (the CV then
    picked another decay), and l2=1e6 left the undecayed biases far off."""
    rng = np.random.default_rng(3)
    features = rng.normal(size=(12, 64)).astype(np.float32)
    labels = ["a", "b", "c"] * 4
    head = train_head(features, labels, l2=l2)
    x = (features.astype(np.float64) - head.mean) / head.scale
    onehot = np.eye(3)[[head.classes.index(label) for label in labels]]
    params = np.concatenate([head.weight, head.bias[:, None]], axis=1)
    assert np.linalg.norm(_gradient(params, x, onehot, l2)) < 1e-5
    assert head.converged and head.to_dict()["converged"] is True


def test_labels_that_would_break_the_table_are_shown_quoted():
    scores = evaluate(["", "a\nb", "ok"], ["", "ok", "ok"], classes=["", "a\nb", "ok"])
    rows = format_evaluation(scores)
    assert any(row.startswith("  ''") for row in rows) and any(row.startswith("  'a\\nb'") for row in rows)
    assert all("\n" not in row for row in rows)
