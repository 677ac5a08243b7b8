"""Evaluation as a library: FID with the standard protocol, checkpoint selection, nearest neighbours, digits.

- :mod:`~ncsn_fast.evaluation.frechet` — the Fréchet distance of two Gaussians;
- :mod:`~ncsn_fast.evaluation.stats` — streamed feature statistics and the TTUR ``.npz`` format;
- :mod:`~ncsn_fast.evaluation.inception` — the FID Inception network and its image pipeline;
- :mod:`~ncsn_fast.evaluation.fid` — :func:`fid`, :func:`fid_stats`, :func:`select_checkpoints`;
- :mod:`~ncsn_fast.evaluation.neighbors` — nearest training images with flips (Appendix C.5.2);
- :mod:`~ncsn_fast.evaluation.digits` — the digits judge (a classifier with a reject class);
- :mod:`~ncsn_fast.evaluation.likelihood` — :func:`likelihood` by the probability-flow ODE, bits/dim of datasets.
"""

from ncsn_fast.evaluation.fid import FIDResult, Selection, fid, fid_stats, image_source, select_checkpoints
from ncsn_fast.evaluation.frechet import FIDError, frechet_distance
from ncsn_fast.evaluation.inception import InceptionFeatures, load_inception
from ncsn_fast.evaluation.likelihood import DatasetLikelihood, LikelihoodResult, dataset_likelihood, likelihood
from ncsn_fast.evaluation.neighbors import Neighbors, nearest_neighbors, neighbors
from ncsn_fast.evaluation.stats import GaussianStats, load_stats, save_stats

__all__ = [
    "FIDError",
    "DatasetLikelihood",
    "FIDResult",
    "GaussianStats",
    "InceptionFeatures",
    "LikelihoodResult",
    "Neighbors",
    "Selection",
    "dataset_likelihood",
    "fid",
    "fid_stats",
    "frechet_distance",
    "image_source",
    "likelihood",
    "load_inception",
    "load_stats",
    "nearest_neighbors",
    "neighbors",
    "save_stats",
    "select_checkpoints",
]
