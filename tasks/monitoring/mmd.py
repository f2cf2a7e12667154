"""A two-sample test on embeddings: kernel MMD with a permutation test.

MMD^2 (maximum mean discrepancy) measures how far apart two samples' distributions are in a
Gaussian-kernel feature space; it is zero only when the distributions are equal. The p-value comes
from permutations: under "no drift" the reference and incoming vectors are exchangeable, so the
statistic of the observed labelling is one draw among the relabelled ones, and
p = (1 + #{permuted >= observed}) / (1 + permutations) never rejects more often than alpha.
The bandwidth is the median pairwise distance of the pooled sample: it does not depend on which
vector is labelled which, so the permutations stay exchangeable.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

PERMUTATION_CHUNK = 100  # permutations scored per matrix product: bounds memory at chunk x (n + m)


@dataclass(frozen=True)
class MMDResult:
    score: float             # unbiased MMD^2 of the observed samples
    p_value: float
    bandwidth: float         # the Gaussian kernel's sigma (median pairwise distance, pooled)
    null_scores: np.ndarray  # MMD^2 of each permutation: the null distribution the plot shows


def gaussian_kernel(pooled: torch.Tensor) -> tuple[torch.Tensor, float]:
    """k(a, b) = exp(-|a - b|^2 / (2 sigma^2)) over the pooled sample, sigma = median distance."""
    squared = torch.cdist(pooled, pooled).pow(2)
    off_diagonal = squared[~torch.eye(len(pooled), dtype=torch.bool)]
    sigma_squared = float(off_diagonal.median()) or 1.0  # all-identical vectors: any width gives 0
    return torch.exp(-squared / (2 * sigma_squared)), sigma_squared ** 0.5


def _unbiased_mmd2(kernel_no_diagonal: torch.Tensor, in_first: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """MMD^2 for each row of `in_first` (1.0 marks the first sample), from sums of the kernel
    with a zeroed diagonal: only a^T K a needs a matrix product, the rest follows from row sums."""
    row_sums = kernel_no_diagonal.sum(1)
    total = row_sums.sum()
    within_first = ((in_first @ kernel_no_diagonal) * in_first).sum(1)
    first_to_all = in_first @ row_sums
    between = first_to_all - within_first
    within_second = total - 2 * first_to_all + within_first
    return within_first / (n * (n - 1)) + within_second / (m * (m - 1)) - 2 * between / (n * m)


def mmd_permutation_test(reference: np.ndarray, incoming: np.ndarray, permutations: int = 500,
                         seed: int = 0) -> MMDResult:
    """Test H0 "same distribution" for two samples of vectors [n, d] and [m, d] (n, m >= 2)."""
    n, m = len(reference), len(incoming)
    if n < 2 or m < 2:
        raise ValueError(f"the MMD test needs at least 2 vectors per sample (got {n} and {m})")
    pooled = torch.from_numpy(np.concatenate([reference, incoming]).astype(np.float64))
    kernel, bandwidth = gaussian_kernel(pooled)
    kernel.fill_diagonal_(0.0)
    observed = torch.cat([torch.ones(n, dtype=torch.float64), torch.zeros(m, dtype=torch.float64)])
    score = float(_unbiased_mmd2(kernel, observed[None], n, m)[0])
    generator = torch.Generator().manual_seed(seed)
    null = []
    for start in range(0, permutations, PERMUTATION_CHUNK):
        count = min(PERMUTATION_CHUNK, permutations - start)
        orders = torch.argsort(torch.rand(count, n + m, generator=generator), dim=1)  # uniform permutations
        null.append(_unbiased_mmd2(kernel, observed[orders], n, m))
    null_scores = torch.cat(null).numpy() if null else np.zeros(0)
    # Ties count as reaching the observed value: a relabelling with the same MMD^2 in exact arithmetic
    # (e.g. swapping equal-sized samples) may land a rounding error below it.
    reached = (null_scores >= score) | np.isclose(null_scores, score, rtol=1e-9, atol=1e-12)
    p_value = (1 + int(reached.sum())) / (1 + permutations)
    return MMDResult(score, p_value, bandwidth, null_scores)
