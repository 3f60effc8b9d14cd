"""The advisor's measured signals: zero-shot accuracy, frozen-feature probes, a learning curve.

Probes and the learning curve use scikit-learn on features the backbone computed once; zero-shot
uses the model as it is, with no training.
"""

from __future__ import annotations

import numpy as np

NLI_TEMPLATE = "This example is {}."
EMBEDDING_TEMPLATE = "This text is about {}."
IMAGE_TEXT_TEMPLATE = "a photo of a {}."


def probe_accuracy(train_x, train_y, valid_x, valid_y, *, seed: int = 0) -> tuple[float, float]:
    """Logistic-regression probe on frozen features, C chosen by cross-validation: the head the
    search fits for a head-only model (core.fit_head), so the probe reads what head-only delivers.

    z = (x - mu) / s with one global scale s = sqrt(mean_j var(x_j)); p(y = c | x) = softmax_c(W z + b),
    W and b minimising the cross-entropy + ||W||^2 / (2 C); accuracy = mean[argmax_c p(c | x) = y]
    on the validation rows. The linear probe of Alain & Bengio, "Understanding intermediate layers
    using linear classifier probes" (2016), as used to compare frozen representations (Kornblith,
    Shlens, Le, "Do Better ImageNet Models Transfer Better?", CVPR 2019). One scale, not one per
    feature: dividing each feature by its own deviation magnifies the nearly constant ones, and
    that probe read under the head on every suite (a CNN's pooled features on blurred
    Fashion-MNIST: 0.700 against the head's 0.765 on the same rows).

    Returns:
        (validation accuracy, chosen C). C is searched over 10^-3..10^2 by stratified k-fold on
        the training rows (k = min(5, smallest class count), at least 2).
    """
    predicted, c = probe_predictions(train_x, train_y, valid_x, seed=seed)
    return float(np.mean(predicted == np.asarray(valid_y))), c


def probe_predictions(train_x, train_y, valid_x, *, seed: int = 0, c: float | None = None) -> tuple[np.ndarray, float]:
    """The classes `probe_accuracy`'s probe predicts for the validation rows, and its C (`c`, or
    cross-validated when None)."""
    from ..core import fit_head

    train_y = np.asarray(train_y)
    weight, bias, c = fit_head(train_x, train_y, int(train_y.max()) + 1, c=c, seed=seed)
    return (np.asarray(valid_x, np.float32) @ weight.T + bias).argmax(1), c


def fixed_probe_accuracy(train_x, train_y, valid_x, valid_y, c: float) -> float:
    """`probe_accuracy` with a given C (the learning curve reuses the cross-validated C)."""
    predicted, _ = probe_predictions(train_x, train_y, valid_x, c=c)
    return float(np.mean(predicted == np.asarray(valid_y)))


def probe_head(train_x, train_y, num_labels: int, c: float) -> tuple[np.ndarray, np.ndarray]:
    """The probe's linear head (`probe_accuracy`) fitted with C = `c`, for the pilot to start from (LP-FT:
    Kumar et al., "Fine-Tuning can Distort Pretrained Features and Underperform Out-of-Distribution",
    ICLR 2022: linear probing, then fine-tuning from that head). The fit and its folding into the
    head are `core.fit_head`'s (one global feature scale, so the head stays well-conditioned).

    Returns:
        (weight [num_labels, hidden], bias [num_labels]).
    """
    from ..core import fit_head

    weight, bias, _ = fit_head(train_x, train_y, num_labels, c=c)
    return weight, bias


def knn_accuracy(train_x, train_y, valid_x, valid_y, *, k: int = 10) -> float:
    """k-nearest-neighbour probe: accuracy of y_hat(x) = argmax_c sum over the k training rows
    nearest to x (cosine distance d) with label c of 1/d; k = min(10, n_train). Needs no fitting,
    so it reads the geometry of the features as they are (the kNN evaluation of frozen features
    of Wu et al., "Unsupervised Feature Learning via Non-Parametric Instance Discrimination",
    CVPR 2018)."""
    from sklearn.neighbors import KNeighborsClassifier

    knn = KNeighborsClassifier(n_neighbors=min(k, len(train_y)), metric="cosine", weights="distance")
    return float(knn.fit(train_x, train_y).score(valid_x, valid_y))


def knn_predictions(train_x, train_y, valid_x, *, k: int = 10) -> np.ndarray:
    """The classes `knn_accuracy`'s k-nearest-neighbour probe predicts for the validation rows."""
    from sklearn.neighbors import KNeighborsClassifier

    knn = KNeighborsClassifier(n_neighbors=min(k, len(train_y)), metric="cosine", weights="distance")
    return knn.fit(train_x, train_y).predict(valid_x)


def cv_folds(labels, *, seed: int = 0, most: int = 5) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified k-fold splits (train rows, held-out rows) of `labels`, k = min(most, smallest class
    count); [] when a class has fewer than 2 rows (nothing to hold out)."""
    from sklearn.model_selection import StratifiedKFold

    labels = np.asarray(labels)
    counts = np.unique(labels, return_counts=True)[1]
    k = min(most, int(counts.min())) if len(counts) > 1 else 0
    if k < 2:
        return []
    return list(StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(len(labels)), labels))


def out_of_fold(predict, labels, folds) -> np.ndarray:
    """Cross-validated predictions: each row predicted by `predict(train_rows, held_out_rows)`
    fitted without it (scikit-learn's cross_val_predict, for any fit-and-predict function). Their
    accuracy is cross-validated accuracy over all rows: mean over rows of [y_hat(x) = y], the
    folds' accuracies weighted by their sizes (Hastie, Tibshirani, Friedman, "The Elements of
    Statistical Learning", 2009, 7.10)."""
    predicted = np.empty(len(labels), dtype=np.asarray(labels).dtype)
    for train_rows, held_out in folds:
        predicted[held_out] = predict(train_rows, held_out)
    return predicted


NGRAM_C = (0.1, 1.0)  # the SVM's C: TF-IDF rows have unit norm, so C near 1 fits


def visible_text(tokenizer, texts: list[str], max_length: int) -> list[str]:
    """Each text cut to the characters its first `max_length` tokens cover (what the model reads),
    from a fast tokenizer's offsets; the texts whole when the tokenizer gives no offsets."""
    if not getattr(tokenizer, "is_fast", False):
        return list(texts)
    offsets = tokenizer(list(texts), truncation=True, max_length=max_length, return_offsets_mapping=True)["offset_mapping"]
    return [t[:max((end for _, end in spans), default=0)] for t, spans in zip(texts, offsets)]


def ngram_accuracy(train_texts, train_y, valid_texts, valid_y, *, seed: int = 0) -> tuple[float, float]:
    """A model with no pretraining to compare against: character n-grams, TF-IDF, a linear SVM.

    x = the l2-normalised TF-IDF vector of the character 2- to 5-grams inside word boundaries
    (term frequency 1 + log(count), vocabulary and idf from the training rows); one linear SVM per
    class (one-vs-rest), w minimising ||w||^2 / 2 + C sum max(0, 1 - y w.x)^2, C in NGRAM_C by
    stratified k-fold; the class of the largest margin wins. The classic n-gram baseline of text
    classification (Joachims, "Text Categorization with Support Vector Machines", ECML 1998;
    Wang & Manning, "Baselines and Bigrams", ACL 2012). It reads characters, not a tokenizer's
    vocabulary; given the same characters the model reads (`visible_text`), when it clearly beats
    all the pretrained model is expected to reach, the model is what limits accuracy, not the
    length it reads or the training.

    Returns:
        (validation accuracy, chosen C).
    """
    predicted, c = ngram_predictions(train_texts, train_y, valid_texts, seed=seed)
    return float(np.mean(predicted == np.asarray(valid_y))), c


def ngram_predictions(train_texts, train_y, valid_texts, *, seed: int = 0) -> tuple[np.ndarray, float]:
    """The classes `ngram_accuracy`'s model predicts for the validation texts, and its C."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.svm import LinearSVC

    from ..core import fit_with_c

    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, dtype=np.float32)
    x = vectorizer.fit_transform(list(train_texts))
    model, c = fit_with_c(LinearSVC(), "C", x, np.asarray(train_y), seed=seed, grid=NGRAM_C)
    return model.predict(vectorizer.transform(list(valid_texts))), c


PIXEL_SIDE = 24  # images are read at 24 x 24 for the model without pretraining
PIXEL_C = (1.0, 10.0, 100.0)  # the RBF SVM's C on standardised pixels


def pixel_predictions(train_paths, train_y, valid_paths, *, seed: int = 0) -> tuple[np.ndarray, float, str]:
    """A model with no pretraining for images: an RBF SVM on the raw pixels, the image counterpart
    of the n-gram model.

    x = the image resized to 24 x 24 (bilinear), grey when every image is grey, else RGB, as a
    vector of values in [0, 1], each dimension standardised on the training rows; one SVM per pair
    of classes, k(x, x') = exp(-gamma ||x - x'||^2) with gamma = 1 / (d var(x)) ("scale"), C in
    PIXEL_C by stratified k-fold. The classic pixel baseline (LeCun et al., "Gradient-based
    learning applied to document recognition", Proc. IEEE 1998, report RBF SVMs on raw MNIST
    pixels beside CNNs; Cortes & Vapnik, "Support-vector networks", Machine Learning 1995). When it
    clearly beats the pretrained model, the model's features lose what the task needs.

    Returns:
        (predicted classes of the validation images, chosen C, a description of the model).
    """
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    from ..core import fit_with_c

    grey = _all_grey(list(train_paths) + list(valid_paths))
    x_train, x_valid = (_pixels(paths, grey) for paths in (train_paths, valid_paths))
    model, c = fit_with_c(make_pipeline(StandardScaler(), SVC(kernel="rbf", gamma="scale")), "svc__C", x_train,
                          np.asarray(train_y), seed=seed, grid=PIXEL_C)
    return model.predict(x_valid), c, f"RBF SVM on {PIXEL_SIDE}x{PIXEL_SIDE} {'grey' if grey else 'RGB'} pixels"


def _all_grey(paths) -> bool:
    """Whether every image is grey: mode L / LA / 1 / I, or RGB with R = G = B (checked on a small copy)."""
    from PIL import Image

    for path in paths:
        with Image.open(path) as image:
            if image.mode in ("L", "LA", "1", "I", "I;16", "F"):
                continue
            small = np.asarray(image.convert("RGB").resize((16, 16)), dtype=np.int16)
            if np.abs(small[..., 0] - small[..., 1]).max() > 2 or np.abs(small[..., 1] - small[..., 2]).max() > 2:
                return False
    return True


def _pixels(paths, grey: bool) -> np.ndarray:
    from PIL import Image

    rows = []
    for path in paths:
        with Image.open(path) as image:
            small = image.convert("L" if grey else "RGB").resize((PIXEL_SIDE, PIXEL_SIDE), Image.BILINEAR)
            rows.append(np.asarray(small, dtype=np.float32).reshape(-1) / 255.0)
    return np.stack(rows)


def learning_curve(train_x, train_y, valid_x, valid_y, c: float, *, fractions=(0.25, 0.5, 1.0),
                   seed: int = 0) -> dict[str, float]:
    """Probe accuracy with 25/50/100% of the training rows (stratified, at least 2 rows per class)."""
    from ..core import stratified_indices

    rng = np.random.default_rng(seed)
    curve = {}
    for fraction in fractions:
        keep = stratified_indices(train_y, fraction, rng, min_per_class=2)
        curve[f"{fraction:.2f}"] = fixed_probe_accuracy(train_x[keep], train_y[keep], valid_x, valid_y, c)
    return curve


def label_embedding_zero_shot(backbone, valid_x, valid_y, labels, descriptions=None, *, max_length=128):
    """Zero-shot by similarity: each text goes to the label whose description embeds closest.

    prediction = argmax_c cos(e(text), e(description_c)), description_c = "This text is about
    {label}." unless given. `valid_x` are the texts' features with the same pooling (mean).
    Accuracy = mean[prediction = y]. (Dataless classification by embedding similarity: Chang,
    Ratinov, Roth, Srikumar, "Importance of Semantic Representation: Dataless Classification",
    AAAI 2008.)
    """
    sentences = [descriptions[label] if descriptions else EMBEDDING_TEMPLATE.format(label) for label in labels]
    label_x = backbone.embed(sentences, max_length=max_length, pooling="mean", progress=False)
    a = valid_x / np.linalg.norm(valid_x, axis=1, keepdims=True).clip(1e-12)
    b = label_x / np.linalg.norm(label_x, axis=1, keepdims=True).clip(1e-12)
    return float(np.mean((a @ b.T).argmax(1) == valid_y))


def zero_shot_method(config, labels, *, modality: str = "text", image_text: bool = False) -> str | None:
    """Which zero-shot method fits the model: "head" when its own head's labels cover the task's,
    "nli" when its head has an entailment label, else "label-embedding". An image model:
    "image-text" for the image tower of a dual encoder (CLIP, SigLIP), "head" when its
    image-classification head names every label (any of an ImageNet class's comma-separated names
    counts), else None."""
    if modality == "image" and image_text:
        return "image-text"
    if modality == "image":
        has_head = any(a.endswith("ForImageClassification") for a in (config.architectures or []))
        return "head" if has_head and set(map(str.lower, labels)) <= set(_image_label_index(config.id2label)) else None
    own = {str(v).lower() for v in (getattr(config, "id2label", None) or {}).values()}
    has_head = any(a.endswith("ForSequenceClassification") for a in (config.architectures or []))
    if has_head and {label.lower() for label in labels} <= own:
        return "head"
    if has_head and _entailment_id(config) is not None:
        return "nli"
    return "label-embedding"


def _entailment_id(config):
    """The id of the entailment class of an NLI model's config (or of anything with id2label)."""
    for i, name in (config.id2label or {}).items():
        if str(name).lower().startswith("entail"):
            return int(i)
    return None


def head_or_nli_zero_shot(source, method, texts, valid_y, labels, *, device, max_length=128, batch_size=16,
                          template=NLI_TEMPLATE):
    """Zero-shot with the model's own sequence-classification head.

    head: the head's logits restricted to the task's labels, argmax.
    nli: for each text and label, premise = text, hypothesis = template.format(label); the label
    with the largest entailment logit wins (as transformers' zero-shot-classification pipeline
    does for single-label tasks; Yin, Hay, Roth, "Benchmarking Zero-shot Text Classification",
    EMNLP 2019).
    """
    from ..core import sequence_classifier_logits

    if method == "head":
        result = sequence_classifier_logits(source, texts, device=device, max_length=max_length,
                                            batch_size=batch_size)
        own = {str(v).lower(): int(k) for k, v in result.id2label.items()}
        scores = result.logits[:, [own[label.lower()] for label in labels]]
    else:
        hypotheses = [template.format(label) for label in labels]
        premises = [t for t in texts for _ in labels]  # each text against every label's hypothesis
        result = sequence_classifier_logits(source, premises, hypotheses * len(texts), device=device,
                                            max_length=max_length, batch_size=batch_size * len(labels),
                                            truncation="only_first")
        scores = result.logits[:, _entailment_id(result)].reshape(len(texts), len(labels))
    return float(np.mean(scores.argmax(1) == valid_y))


def _image_label_index(id2label) -> dict[str, int]:
    """{name: class id} over every comma-separated name of each class ("tabby, tabby cat")."""
    index = {}
    for i, names in (id2label or {}).items():
        for name in str(names).split(","):
            index.setdefault(name.strip().lower(), int(i))
    return index


def image_head_zero_shot(source, spec, paths, valid_y, labels, *, device) -> float:
    """Zero-shot with an image model's own classification head (e.g. ImageNet's 1,000 classes):
    its logits restricted to the classes that name the task's labels, argmax; accuracy =
    mean[prediction = y]. The images get the same preprocessing as training (`spec`, the
    backbone's core._images.ImageSpec)."""
    from ..core import image_classifier_logits

    result = image_classifier_logits(source, spec, paths, device=device)
    index = _image_label_index(result.id2label)
    scores = result.logits[:, [index[label.lower()] for label in labels]]
    return float(np.mean(scores.argmax(1) == np.asarray(valid_y)))


def image_text_zero_shot(source, spec, paths, valid_y, labels, descriptions=None, *, device) -> float:
    """Zero-shot with an image-text dual encoder: each image goes to the label whose prompt embeds
    closest, prediction = argmax_c cos(f(image), g(prompt_c)), prompt_c = "a photo of a {label}."
    unless `descriptions` gives one; accuracy = mean[prediction = y]. (Radford et al., "Learning
    Transferable Visual Models From Natural Language Supervision", ICML 2021, section 3.1.4; the
    sigmoid of SigLIP, Zhai et al., ICCV 2023, is monotone in the same cosine, so the argmax is
    the same.)"""
    from ..core import image_text_logits

    prompts = [descriptions[label] if descriptions else IMAGE_TEXT_TEMPLATE.format(label) for label in labels]
    scores = image_text_logits(source, spec, paths, prompts, device=device)
    return float(np.mean(scores.argmax(1) == np.asarray(valid_y)))
