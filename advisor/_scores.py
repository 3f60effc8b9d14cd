"""The advisor's scores on frozen features: transferability and domain shift. numpy + scikit-learn.

Each function gives its formula and source. Features are arrays [n, d]; labels are ints 0..C-1.
"""

from __future__ import annotations

import numpy as np


def logme(features: np.ndarray, labels: np.ndarray, *, max_iter: int = 11) -> float:
    """LogME: the log marginal evidence of a Bayesian linear model from features to labels.

    For each class c, y_c is the one-hot column of that class and w ~ N(0, alpha^-1 I),
    y_c | F, w ~ N(F w, beta^-1 I). With F^T F = V diag(s) V^T, alpha and beta maximise the
    evidence by the fixed point  gamma = sum(beta s / (alpha + beta s)),  m = beta A^-1 F^T y,
    alpha = gamma / m.m,  beta = (n - gamma) / |y - F m|^2, and

        L_c = d/2 log alpha + n/2 log beta - 1/2 sum log(alpha + beta s)
              - beta/2 |y - F m|^2 - alpha/2 m.m - n/2 log 2 pi.

    LogME = mean over classes of L_c / n. Higher = features transfer better.

    Source: K. You, Y. Liu, J. Wang, M. Long, "LogME: Practical Assessment of Pre-trained
    Models for Transfer Learning", ICML 2021 (Algorithm 1).
    """
    f = np.asarray(features, dtype=np.float64)
    n, d = f.shape
    s, v = np.linalg.eigh(f.T @ f)
    s = np.clip(s, 0.0, None)
    evidences = []
    for c in range(int(labels.max()) + 1):
        y = (labels == c).astype(np.float64)
        t = v.T @ (f.T @ y)  # F^T y in the eigenbasis
        alpha, beta = 1.0, 1.0
        for _ in range(max_iter):
            gamma = float(np.sum(beta * s / (alpha + beta * s)))
            m = v @ (beta * t / (alpha + beta * s))
            mm = float(m @ m) + 1e-10
            res = float(np.sum((y - f @ m) ** 2)) + 1e-10
            new_alpha, new_beta = gamma / mm, (n - gamma) / res
            converged = abs(new_alpha / new_beta - alpha / beta) / (alpha / beta) < 0.01
            alpha, beta = new_alpha, new_beta
            if converged:
                break
        m = v @ (beta * t / (alpha + beta * s))
        mm, res = float(m @ m), float(np.sum((y - f @ m) ** 2))
        evidence = (d / 2 * np.log(alpha) + n / 2 * np.log(beta) - 0.5 * np.sum(np.log(alpha + beta * s))
                    - beta / 2 * res - alpha / 2 * mm - n / 2 * np.log(2 * np.pi))
        evidences.append(evidence / n)
    return float(np.mean(evidences))


def h_score(features: np.ndarray, labels: np.ndarray) -> float:
    """Regularised H-score: how much of the feature variance the class means explain.

        H(f) = tr( Sigma_reg^-1  Sigma_between ),

    Sigma_between = cov(E[f | y]) (each row replaced by its class mean), Sigma_reg the
    Ledoit-Wolf shrinkage estimate of cov(f). Without shrinkage H lies in [0, C - 1]: 0 when
    the class means coincide, C - 1 when the classes are points.

    Sources: Y. Bao, Y. Li, S.-L. Huang, L. Zhang, L. Zheng, A. Zamir, L. Guibas,
    "An Information-Theoretic Approach to Transferability in Task Transfer Learning", ICIP 2019
    (the H-score); S. Ibrahim, N. Ponomareva, R. Mazumder, "Newer is not always better:
    Rethinking transferability metrics, their peculiarities, stability and performance",
    ECML-PKDD 2022 (the shrinkage-regularised form).
    """
    from sklearn.covariance import LedoitWolf

    f = np.asarray(features, dtype=np.float64)
    f = f - f.mean(0)
    cov = LedoitWolf(assume_centered=True).fit(f).covariance_
    means = np.zeros_like(f)
    for c in np.unique(labels):
        means[labels == c] = f[labels == c].mean(0)
    between = means.T @ means / len(f)
    return float(np.trace(np.linalg.solve(cov, between)))


def mmd2(x: np.ndarray, y: np.ndarray, *, permutations: int = 200, seed: int = 0) -> tuple[float, float]:
    """Unbiased squared maximum mean discrepancy with an RBF kernel, and its permutation p-value.

        MMD^2_u = 1/(m(m-1)) sum_{i!=j} k(x_i,x_j) + 1/(n(n-1)) sum_{i!=j} k(y_i,y_j)
                  - 2/(mn) sum_{i,j} k(x_i,y_j),    k(a,b) = exp(-|a-b|^2 / (2 sigma^2)),

    sigma = the median distance between pooled points (the median heuristic). The p-value is
    (1 + #{permutations with MMD^2 >= observed}) / (1 + permutations), shuffling which points are
    x and which y. MMD^2 ~ 0 and a large p-value: no detectable shift.

    Source: A. Gretton, K. Borgwardt, M. Rasch, B. Schoelkopf, A. Smola, "A Kernel Two-Sample
    Test", JMLR 13 (2012), eq. 3 and section 5 (permutation test).
    """
    z = np.concatenate([x, y]).astype(np.float64)
    sq = np.sum(z * z, 1)
    d2 = np.clip(sq[:, None] + sq[None] - 2 * z @ z.T, 0.0, None)
    off = d2[np.triu_indices(len(z), 1)]
    sigma2 = float(np.median(off)) / 2 or 1.0  # 2 sigma^2 = median squared distance
    k = np.exp(-d2 / (2 * sigma2))
    np.fill_diagonal(k, 0.0)
    m, n = len(x), len(y)

    def stat(idx_x, idx_y):
        return (k[np.ix_(idx_x, idx_x)].sum() / (m * (m - 1)) + k[np.ix_(idx_y, idx_y)].sum() / (n * (n - 1))
                - 2 * k[np.ix_(idx_x, idx_y)].sum() / (m * n))

    observed = stat(np.arange(m), np.arange(m, m + n))
    rng = np.random.default_rng(seed)
    exceed = 0
    for _ in range(permutations):
        perm = rng.permutation(m + n)
        exceed += stat(perm[:m], perm[m:]) >= observed
    return float(observed), float((1 + exceed) / (1 + permutations))


def proxy_a_distance(x: np.ndarray, y: np.ndarray, *, seed: int = 0) -> float:
    """Proxy A-distance: how well a linear classifier tells the two samples apart.

        PAD = 2 (1 - 2 eps),  eps = the 5-fold cross-validated error of a logistic regression
        separating x from y (clipped so that PAD is in [0, 2]).

    0: indistinguishable; 2: perfectly separable.

    Source: S. Ben-David, J. Blitzer, K. Crammer, F. Pereira, "Analysis of Representations for
    Domain Adaptation", NeurIPS 2007 (section 5); Ben-David et al., Machine Learning 79 (2010).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from ..core import one_blas_thread

    z = np.concatenate([x, y])
    d = np.r_[np.zeros(len(x)), np.ones(len(y))]
    folds = StratifiedKFold(n_splits=min(5, len(x), len(y)), shuffle=True, random_state=seed)
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    with one_blas_thread():
        error = 1.0 - float(np.mean(cross_val_score(clf, z, d, cv=folds)))
    return float(np.clip(2.0 * (1.0 - 2.0 * error), 0.0, 2.0))


def mcnemar_p_value(a_correct: np.ndarray, b_correct: np.ndarray) -> float:
    """One-sided exact McNemar test that model a is more accurate than model b on the same rows.

    Only the rows where the two disagree count: n_ab rows a gets right and b wrong, n_ba the
    reverse. Under equal accuracy each such row is a fair coin, so

        p = P(X >= n_ab),  X ~ Binomial(n_ab + n_ba, 1/2)          (1 when they never disagree).

    Paired on the rows, it is far more powerful than comparing two accuracies as if they came
    from different rows. Sources: Q. McNemar, "Note on the sampling error of the difference
    between correlated proportions or percentages", Psychometrika 12, 1947; T. Dietterich,
    "Approximate Statistical Tests for Comparing Supervised Classification Learning Algorithms",
    Neural Computation 10(7), 1998 (McNemar's test for two classifiers on one test set).
    """
    from scipy.stats import binomtest

    a, b = np.asarray(a_correct, dtype=bool), np.asarray(b_correct, dtype=bool)
    n_ab, n_ba = int(np.sum(a & ~b)), int(np.sum(~a & b))
    if n_ab + n_ba == 0:
        return 1.0
    return float(binomtest(n_ab, n_ab + n_ba, 0.5, alternative="greater").pvalue)


def effective_rank(features: np.ndarray) -> float:
    """Effective rank of the centred features: exp of the entropy of the singular-value spectrum.

        erank = exp(-sum_i p_i log p_i),  p_i = s_i / sum_j s_j  (s = singular values).

    Between 1 (all inputs on one line: the model cannot tell them apart) and min(n, d).

    Source: O. Roy, M. Vetterli, "The effective rank: a measure of effective dimensionality",
    EUSIPCO 2007.
    """
    f = np.asarray(features, dtype=np.float64)
    s = np.linalg.svd(f - f.mean(0), compute_uv=False)
    p = s / s.sum() if s.sum() > 0 else np.ones(1)
    p = p[p > 0]
    return float(np.exp(-np.sum(p * np.log(p))))


def tokenizer_coverage(tokenizer, texts: list[str]) -> tuple[float, float]:
    """Unknown-token rate and fertility of a tokenizer on texts.

        unk_rate  = (# tokens equal to the unknown token) / (# tokens), special tokens excluded;
        fertility = (# sub-word tokens) / (# whitespace-separated words).

    A high unknown rate means the vocabulary cannot represent the data (another model is
    needed); a high fertility means words are shredded into many pieces (English BERT-style
    vocabularies give about 1.1-1.4 on English text).

    Source: fertility as in P. Rust, J. Pfeiffer, I. Vulic, S. Ruder, I. Gurevych, "How Good is
    Your Tokenizer? On the Monolingual Performance of Multilingual Language Models", ACL 2021.
    """
    enc = tokenizer(list(texts), add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
    tokens = sum(len(ids) for ids in enc)
    words = sum(len(t.split()) for t in texts)
    unk = tokenizer.unk_token_id
    unknown = sum(sum(1 for i in ids if i == unk) for ids in enc) if unk is not None else 0
    return (unknown / tokens if tokens else 0.0), (tokens / words if words else 0.0)


def image_input_shift(stats: dict, spec) -> dict:
    """How far the images are from what the model was trained to read, from `core._images.image_stats`
    and the model's preprocessing `spec`:

        size_ratio = median(min(width, height)) / min(model input height, width)
            (< 1: the images are upsampled, e.g. 28-pixel images into a 224-pixel model: 0.125);
        grayscale_share = share of images stored with one channel (copied to R, G and B);
        normalisation_gap = max_c |mean_c - m_c| / s_c, with mean_c the data's mean pixel value of
            channel c in [0, 1] and (m_c, s_c) the model's normalisation mean and std: the
            standardised mean difference (Cohen's d, with the pretraining data's std as the scale)
            of the inputs the model sees, 0 when the data's colour balance is the pretraining data's;
        contrast_ratio = mean_c std_c / s_c (< 1: flatter images than the pretraining data).

    These are descriptive statistics, not a test; the decision reads the probes, and these explain
    them (Kornblith, Shlens, Le, "Do Better ImageNet Models Transfer Better?", CVPR 2019, find
    transfer weakest on small, low-resolution and grayscale-like data sets).
    """
    h, w = spec.output_size
    out = {"model_input": [int(h), int(w)],
           "size_ratio": float(min(stats["width"][1], stats["height"][1]) / min(h, w)),
           "grayscale_share": float(stats["grayscale_share"])}
    if spec.mean is not None and spec.std is not None:
        mean, std = np.asarray(stats["mean"]), np.asarray(stats["std"])
        m, s = np.asarray(spec.mean), np.asarray(spec.std)
        out["normalisation_gap"] = float(np.max(np.abs(mean - m) / s))
        out["contrast_ratio"] = float(np.mean(std / s))
    return out
