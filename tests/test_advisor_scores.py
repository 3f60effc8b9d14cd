"""Each advisor score on data whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from finetune_advisor.advisor import effective_rank, h_score, logme, mmd2, proxy_a_distance, tokenizer_coverage
from finetune_advisor.advisor._signals import knn_accuracy, learning_curve, probe_accuracy, probe_head


@pytest.fixture
def blobs():
    """4 well-separated Gaussian classes in 32 dimensions, and the same points with shuffled labels."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 400)
    x = rng.normal(size=(4, 32))[y] * 3 + rng.normal(size=(400, 32))
    return x, y, rng.permutation(y)


def test_logme_prefers_labels_the_features_carry(blobs):
    x, y, shuffled = blobs
    assert logme(x, y) > logme(x, shuffled) + 1.0


def test_h_score_is_near_c_minus_1_for_point_classes_and_near_0_for_random_labels(blobs):
    x, y, shuffled = blobs
    points = np.eye(4)[y] + 1e-3 * np.random.default_rng(1).normal(size=(400, 4))
    assert h_score(points, y) == pytest.approx(3.0, abs=0.1)
    assert h_score(x, shuffled) < 0.5 < 2.5 < h_score(x, y)


def test_mmd_no_shift_vs_shift():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(150, 8)), rng.normal(size=(150, 8))
    same, p_same = mmd2(a, b)
    moved, p_moved = mmd2(a, b + 1.0)
    assert abs(same) < 0.01 and p_same > 0.05
    assert moved > 0.1 and p_moved < 0.01


def test_proxy_a_distance_is_0_for_one_distribution_and_2_for_disjoint_ones():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(200, 8)), rng.normal(size=(200, 8))
    assert proxy_a_distance(a, b) < 0.3
    assert proxy_a_distance(a, b + 10) == pytest.approx(2.0)


def test_effective_rank_of_isotropic_and_collapsed_features():
    rng = np.random.default_rng(0)
    assert effective_rank(rng.normal(size=(2000, 16))) == pytest.approx(16, abs=0.5)
    line = np.outer(rng.normal(size=500), rng.normal(size=16))
    assert effective_rank(line) == pytest.approx(1.0, abs=1e-6)


def test_tokenizer_coverage_on_english_and_on_symbols_it_cannot_read(minilm):
    unk, fertility = tokenizer_coverage(minilm.tokenizer, ["the cat sat on the mat", "shares fell sharply today"])
    assert unk == 0.0 and fertility == pytest.approx(1.0, abs=0.2)
    unk, _ = tokenizer_coverage(minilm.tokenizer, ["🦜🦩 🪼🪸 🫎🫏"])
    assert unk > 0.5


def test_probes_on_separable_and_random_labels(blobs):
    x, y, shuffled = blobs
    acc, c = probe_accuracy(x[:300], y[:300], x[300:], y[300:])
    assert acc > 0.95 and 1e-3 <= c <= 1e2
    chance_acc, _ = probe_accuracy(x[:300], shuffled[:300], x[300:], shuffled[300:])
    assert chance_acc < 0.45
    assert knn_accuracy(x[:300], y[:300], x[300:], y[300:]) > 0.95
    curve = learning_curve(x[:300], y[:300], x[300:], y[300:], c)
    assert list(curve) == ["0.25", "0.50", "1.00"] and curve["1.00"] > 0.95


@pytest.mark.parametrize("classes", [2, 4])
def test_probe_head_gives_the_probe_s_probabilities_on_raw_features(blobs, classes):
    from scipy.special import softmax
    from sklearn.linear_model import LogisticRegression

    x, y, _ = blobs
    x = x * np.linspace(0.1, 10, 32) + 5  # features on unequal scales, off-centre
    keep = y < classes
    x, y = x[keep], y[keep]
    weight, bias = probe_head(x, y, 5, c=0.5)  # 5 labels: the absent ones must never win
    # an independent oracle: the same model fitted on the raw features. Dividing the features by s
    # multiplies the weights by s, so the penalty ||W||^2 / (2C) becomes ||W'||^2 s^2 / (2C): C' = C / s^2
    s2 = x.var(0).mean()
    probe = LogisticRegression(C=0.5 / s2, max_iter=100_000, tol=1e-10).fit(x, y)
    probs = softmax(x @ weight.T + bias, axis=1)
    np.testing.assert_allclose(probs[:, :classes], probe.predict_proba(x), atol=1e-3)
    assert probs[:, classes:].max() < 1e-3
    assert probe.score(x, y) > 0.95
    # one scale for all features: the head's weights stay in proportion to the features' scales
    assert np.abs(weight).max() < 1.0


def test_a_closed_form_head_separates_and_stays_well_conditioned():
    """Two Gaussian blobs (known answer: separable) plus a feature constant up to 1e-12 noise: the
    folded head classifies every row and carries no huge weight for the near-constant feature."""
    from finetune_advisor.core import fit_head

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 40)
    x = rng.normal(size=(120, 8)) + 6 * np.eye(8)[y]
    x[:, 7] = 3.0 + 1e-12 * rng.normal(size=120)
    weight, bias, c = fit_head(x, y, 3)
    assert np.mean((x @ weight.T + bias).argmax(1) == y) == 1.0
    assert np.abs(weight).max() < 100 and c in np.logspace(-3, 2, 6)


def test_the_ngram_model_reads_characters_a_tokenizer_would_not_know():
    """Class 0 texts carry one character trigram, class 1 another, in random Cherokee letters (no
    English tokenizer knows them): the n-gram model separates them; with labels shuffled it
    scores near chance."""
    from finetune_advisor.advisor._signals import ngram_accuracy

    rng = np.random.default_rng(0)
    letters = [chr(0x13A0 + i) for i in range(60)]

    def text(y):
        words = ["".join(rng.choice(letters, 5)) for _ in range(8)]
        words[rng.integers(8)] = ("ᏣᏤᏥ", "ᏦᏧᏨ")[y]
        return " ".join(words)

    y = rng.integers(0, 2, 400)
    texts = [text(v) for v in y]
    accuracy, c = ngram_accuracy(texts[:300], y[:300], texts[300:], y[300:])
    assert accuracy >= 0.95
    shuffled, _ = ngram_accuracy(texts[:300], rng.permutation(y[:300]), texts[300:], y[300:])
    assert shuffled < 0.7


def test_mcnemar_counts_only_the_rows_where_the_models_disagree():
    from finetune_advisor.advisor._scores import mcnemar_p_value

    # 10 disagreements, a right on 9 of them: P(X >= 9), X ~ Bin(10, 1/2) = 11/1024
    a = np.r_[np.ones(9), 0, np.ones(90)].astype(bool)
    b = np.r_[np.zeros(9), 1, np.ones(90)].astype(bool)
    assert mcnemar_p_value(a, b) == pytest.approx(11 / 1024)
    # the rows both get right or both wrong change nothing
    assert mcnemar_p_value(np.r_[a, np.zeros(500, bool)], np.r_[b, np.zeros(500, bool)]) == pytest.approx(11 / 1024)
    # one-sided: b better than a is no evidence that a is better
    assert mcnemar_p_value(b, a) == pytest.approx(1 - 1 / 1024)
    assert mcnemar_p_value(a, a) == 1.0
