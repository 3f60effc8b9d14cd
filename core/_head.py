"""Linear heads fitted in closed form on frozen features.

`fit_head` is logistic regression on frozen features (C by cross-validation), folded into one
well-conditioned linear map on the raw pooled features: the head a `Classifier` carries, and the
advisor's probe. No gradient steps, no
epochs: one fit where a search over a head's learning rate spends minutes to get to the same place.
"""

from __future__ import annotations

import numpy as np

C_GRID = np.logspace(-3, 2, 6)  # the probe's regularisation, searched by cross-validation


def one_blas_thread():
    """A context in which BLAS runs on one thread, for scikit-learn's many small solves: on
    matrices this small, OpenBLAS's threads cost far more than they give (the C grid of a probe
    on 400 x 384 features, 30 fits: 28 s on 2 threads, 1 s on 1, on a 2-core machine)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def fit_with_c(estimator, param: str, x, y, *, c: float | None = None, seed: int = 0, grid=C_GRID):
    """(`estimator` fitted with C = `c`, or with the C of `grid` that stratified k-fold prefers,
    k = min(5, smallest class count); C = 1 when a class has a single row; the C used)."""
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    smallest = int(np.bincount(y).min()) if len(y) else 0
    with one_blas_thread():
        if c is None and smallest >= 2:
            search = GridSearchCV(estimator, {param: grid}, n_jobs=1,
                                  cv=StratifiedKFold(max(2, min(5, smallest)), shuffle=True, random_state=seed))
            search.fit(x, y)
            return search.best_estimator_, float(search.best_params_[param])
        c = 1.0 if c is None else c
        return estimator.set_params(**{param: c}).fit(x, y), c


def fit_head(train_x: np.ndarray, train_y: np.ndarray, num_labels: int, *, c: float | None = None,
             seed: int = 0) -> tuple[np.ndarray, np.ndarray, float]:
    """A linear head on raw pooled features: logistic regression on centred features under one
    global scale, folded into one linear map.

    z = (x - mu) / s with s = sqrt(mean_j var(x_j)); p(y | x) = softmax(W z + b); folded:
    W' = W / s, b' = b - W' mu. One scale for every feature, not one per feature as in
    a standard scaler: a feature that is nearly constant would be divided by a tiny deviation, and
    the head would carry weights of 1e30 that any change of that feature, int8 rounding or further
    training blows up. C is `c`, or chosen by stratified k-fold over C_GRID (`fit_with_c`).
    A binary model has one row w (log-odds of class 1): [-w/2, +w/2] gives the same softmax.
    Classes absent from the training rows get a row of zeros and a bias of -1e4 (never predicted).

    Returns:
        (weight [num_labels, hidden], bias [num_labels]) as float32, and C.
    """
    from sklearn.linear_model import LogisticRegression

    mu = train_x.mean(0)
    scale = float(np.sqrt(train_x.var(0).mean())) or 1.0
    lr, c = fit_with_c(LogisticRegression(max_iter=2000), "C", (train_x - mu) / scale, train_y, c=c, seed=seed)
    coef, intercept = lr.coef_, lr.intercept_
    if len(lr.classes_) == 2:
        coef, intercept = np.vstack([-coef / 2, coef / 2]), np.r_[-intercept / 2, intercept / 2]
    weight = np.zeros((num_labels, train_x.shape[1]), np.float32)
    bias = np.full(num_labels, -1e4, np.float32)
    folded = coef / scale
    weight[lr.classes_] = folded
    bias[lr.classes_] = intercept - folded @ mu
    return weight, bias, c
