"""A linear head fitted in closed form on frozen features: the probe that head-only training is.

Logistic regression on standardised features with C chosen by cross-validation (the advisor's
probe), then folded into one linear map on the raw pooled features, so the head of a saved
`Classifier` gives exactly the probe's predictions. No gradient steps, no epochs: seconds where
a search over a head's learning rate spends minutes to reach the same place.
"""

from __future__ import annotations

import numpy as np

C_GRID = np.logspace(-3, 2, 6)  # the probe's regularisation, searched by cross-validation


def fit_probe(train_x: np.ndarray, train_y: np.ndarray, *, seed: int = 0):
    """Logistic-regression probe on standardised features, C by stratified k-fold.

    p(y = c | x) = softmax_c(W z + b), z = (x - mu) / sigma per feature, W and b minimising the
    cross-entropy + ||W||^2 / (2 C). C is searched over 10^-3..10^2 with k = min(5, smallest class
    count) folds; with a class of one row no fold can hold it, and C = 1.

    Returns:
        (fitted sklearn pipeline StandardScaler -> LogisticRegression, chosen C).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    smallest = int(np.bincount(train_y).min()) if len(train_y) else 0
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    if smallest >= 2:
        search = GridSearchCV(pipe, {"logisticregression__C": C_GRID},
                              cv=StratifiedKFold(max(2, min(5, smallest)), shuffle=True, random_state=seed), n_jobs=1)
        search.fit(train_x, train_y)
        return search.best_estimator_, float(search.best_params_["logisticregression__C"])
    return pipe.fit(train_x, train_y), 1.0


def fold_probe(pipe, num_labels: int) -> tuple[np.ndarray, np.ndarray]:
    """The fitted probe as one linear map on raw features: W' = W / sigma, b' = b - W' mu.

    A binary probe has one row w (log-odds of class 1): [-w/2, +w/2] gives the same softmax.
    Classes absent from the training rows get zeros and a bias of -1e4 (never predicted).

    Returns:
        (weight [num_labels, hidden], bias [num_labels]) as float32.
    """
    scaler, lr = pipe[0], pipe[-1]
    coef, intercept = lr.coef_, lr.intercept_
    if len(lr.classes_) == 2:
        coef, intercept = np.vstack([-coef / 2, coef / 2]), np.r_[-intercept / 2, intercept / 2]
    sigma = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    folded = coef / sigma
    weight = np.zeros((num_labels, coef.shape[1]), np.float32)
    bias = np.full(num_labels, -1e4, np.float32)
    weight[lr.classes_] = folded
    bias[lr.classes_] = intercept - folded @ scaler.mean_
    return weight, bias
