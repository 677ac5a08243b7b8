"""The bundled digits model produces recognizable digits of every class (issue: sampling, acceptance)."""

from __future__ import annotations

import pytest
import torch

from ncsn_fast.data import load_digits
from ncsn_fast.evaluation.digits import digits_classifier, score_digit_samples
from ncsn_fast.pretrained import load_pretrained
from ncsn_fast.sampling import annealed_langevin, init_samples
from ncsn_fast.techniques import get_sigmas


@pytest.fixture(scope="module")
def classifier():
    clf, acc = digits_classifier(16)
    assert acc > 0.9  # the judge itself must be good at real digits
    return clf, acc


def test_classifier_rejects_noise_and_accepts_real_digits(classifier):
    # the criterion has teeth: noise is not a confident digit, while real digits (a fresh resample) are
    assert score_digit_samples(torch.rand(200, 1, 16, 16), classifier=classifier).confident_fraction < 0.05
    real = load_digits(16)[torch.randperm(1797)[:300]]
    assert score_digit_samples(real, classifier=classifier).confident_fraction > 0.9


@pytest.mark.slow
def test_bundled_model_samples_are_recognizable_digits(classifier):
    model, cfg = load_pretrained("digits")
    model = model.to(memory_format=torch.channels_last)  # as the CLI runs it (faster convolutions on CPU)
    sigmas = get_sigmas(cfg)
    x0 = init_samples(500, (1, 16, 16), torch.Generator().manual_seed(0)).contiguous(memory_format=torch.channels_last)
    samples = annealed_langevin(
        model, x0, sigmas, cfg.sampling.n_steps_each, cfg.sampling.step_lr, generator=torch.Generator().manual_seed(1)
    ).clamp(0, 1)
    report = score_digit_samples(samples, classifier=classifier)
    print(f"\ndigits model: {report.confident_fraction:.3f} confident, min class share {report.min_class_share:.3f}")
    print("class shares:", [round(s, 3) for s in report.class_shares])
    assert report.confident_fraction >= 0.75
    assert report.min_class_share >= 0.04
