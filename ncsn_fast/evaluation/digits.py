"""Score samples of the digits model with a classifier trained on the real digits (scikit-learn).

The classifier (a one-hidden-layer MLP) learns the ten digits plus an eleventh *reject* class made of uniform
noise, clipped Gaussian noise and 50/50 blends of two different digits, so that noise or a blurry average of
two digits is not mistaken for a confident digit (a plain logistic regression is confident on half of all
uniform-noise images). A sample counts as *recognizable* when its top class is a digit with probability
≥ ``threshold``; mode coverage is the smallest share of all samples that any digit class gets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ncsn_fast.data import load_digits

REJECT = 10


@dataclass
class DigitsReport:
    n: int
    confident_fraction: float  # share of samples whose top class is a digit with probability ≥ threshold
    class_shares: list[float]  # share of all samples confidently assigned to each digit 0..9
    classifier_accuracy: float  # held-out accuracy of the classifier on real digits

    @property
    def min_class_share(self) -> float:
        return min(self.class_shares)


def _reject_examples(x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    n, d = x.shape
    i = torch.randint(0, n, (1200,), generator=generator)
    j = torch.randint(0, n, (1200,), generator=generator)
    blends = (0.5 * (x[i] + x[j]))[y[i] != y[j]][:800]
    uniform = torch.rand(300, d, generator=generator)
    gaussian = (0.3 * torch.randn(300, d, generator=generator) + 0.3).clamp(0, 1)
    return torch.cat([blends, uniform, gaussian])


def digits_classifier(image_size: int = 16, seed: int = 0):
    """MLP on real digits (+ reject class) at the model's resolution; returns (classifier, held-out accuracy)."""
    from sklearn.neural_network import MLPClassifier

    x, y = load_digits(image_size, with_labels=True)
    x = x.flatten(1)
    g = torch.Generator().manual_seed(seed)
    neg = _reject_examples(x, y, g)
    perm = torch.randperm(len(x), generator=g)
    train, test = perm[:1500], perm[1500:]

    def fit(idx: torch.Tensor) -> MLPClassifier:
        clf = MLPClassifier(hidden_layer_sizes=(256,), alpha=1e-3, max_iter=500, random_state=seed)
        features = torch.cat([x[idx], neg]).double().numpy()
        labels = np.concatenate([y[idx].numpy(), np.full(len(neg), REJECT)])
        return clf.fit(features, labels)

    acc = float((fit(train).predict(x[test].double().numpy()) == y[test].numpy()).mean())
    return fit(torch.arange(len(x))), acc


def score_digit_samples(samples: torch.Tensor, threshold: float = 0.8, classifier=None) -> DigitsReport:
    """Classify samples (N, 1, S, S) in [0, 1]; see :class:`DigitsReport`."""
    if samples.dim() != 4 or samples.shape[1] != 1:
        raise ValueError(f"samples: expected (N, 1, S, S) grayscale digits, got shape {tuple(samples.shape)}")
    clf, acc = classifier if classifier is not None else digits_classifier(samples.shape[-1])
    proba = clf.predict_proba(samples.clamp(0, 1).flatten(1).double().numpy())
    pred = proba.argmax(axis=1)
    confident = (proba.max(axis=1) >= threshold) & (pred != REJECT)
    shares = [float((confident & (pred == k)).mean()) for k in range(10)]
    return DigitsReport(len(samples), float(confident.mean()), shares, acc)
