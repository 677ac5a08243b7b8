"""Evaluation: FID with the standard protocol (fid.py), nearest neighbours (neighbors.py), digits scoring."""

from ncsn_fast.evaluation.fid import (
    FIDError,
    GaussianStats,
    InceptionFeatures,
    frechet_distance,
    load_inception,
    load_stats,
    save_stats,
)
from ncsn_fast.evaluation.neighbors import Neighbors, nearest_neighbors

__all__ = [
    "FIDError",
    "GaussianStats",
    "InceptionFeatures",
    "Neighbors",
    "frechet_distance",
    "load_inception",
    "load_stats",
    "nearest_neighbors",
    "save_stats",
]
