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


@pytest.mark.slow
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


@pytest.mark.slow
def test_bf16_sampling_drift_from_fp32_at_a_fixed_seed(classifier):
    """`--precision bf16`: the network under autocast, the state and update in float32, the same Philox noise.

    Measured on this CPU (36 samples, full schedule): 0.55% relative error of one bf16 score evaluation, final
    samples 0.99% apart (mean |Δpixel| 0.0023 on [0, 1], max 0.089), the classifier's labels (reject class
    included) unchanged for 35 of 36; in this test's 16 samples, 14. Tolerance asserted: 3% relative,
    mean |Δpixel| ≤ 0.01, ≥ 80% of labels unchanged (borderline samples flip between a digit and "reject").
    """
    model, cfg = load_pretrained("digits")
    model = model.to(memory_format=torch.channels_last)
    sigmas = get_sigmas(cfg)
    x0 = init_samples(16, (1, 16, 16), torch.Generator().manual_seed(3))
    run = lambda p: annealed_langevin(  # noqa: E731
        model, x0, sigmas, cfg.sampling.n_steps_each, cfg.sampling.step_lr, seed=11, precision=p
    ).clamp(0, 1)
    fp32, bf16 = run("fp32"), run("bf16")
    assert fp32.dtype == bf16.dtype == torch.float32
    diff = bf16 - fp32
    assert float(diff.norm() / fp32.norm()) <= 0.03
    assert float(diff.abs().mean()) <= 0.01
    clf = classifier[0]
    labels = [clf.predict_proba(t.flatten(1).numpy()).argmax(1) for t in (fp32, bf16)]
    assert (labels[0] == labels[1]).mean() >= 0.8


@pytest.mark.slow
@pytest.mark.parametrize("nfe", [10, 25])
def test_the_recommended_sampler_at_a_tenth_of_the_evaluations(classifier, nfe):
    """The recommended sampler for 10 and 25 evaluations on 500 samples (seed 0; the docs' table is seed 1).

    Measured in docs/sampling.md (seed 1, 500 samples, one run with ALD's full schedule at 0.866): 0.900 at 10 and
    0.846 at 25 (issue 25 asked ≥ 90% and ≥ 97% of ALD's figure); the bar asserted, 0.80, is ALD's figure less about
    four standard errors of a 500-sample fraction, with ALD's class coverage.
    """
    from ncsn_fast.sampling import SamplingPlan, recommended, sample_batches

    model, cfg = load_pretrained("digits")
    model = model.to(memory_format=torch.channels_last)
    name, options = recommended(nfe)
    plan = SamplingPlan(sampler=name, nfe=nfe, options=options, seed=0)
    samples = torch.cat([b.images for b in sample_batches(model, cfg, plan, 500, 100, progress=False)])
    report = score_digit_samples(samples, classifier=classifier)
    print(f"\n{name} {options} at {nfe} NFE: {report.confident_fraction:.3f} confident, min class "
          f"{report.min_class_share:.3f}")  # fmt: skip
    print("class shares:", [round(s, 3) for s in report.class_shares])
    assert report.confident_fraction >= 0.80
    assert report.min_class_share >= 0.04
