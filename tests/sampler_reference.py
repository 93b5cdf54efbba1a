"""NumPy reference for the samplers of ``vse_recsys._sampler`` (docs/ALGORITHM.md, "Samplers").

Everything here computes *exact* probabilities (no sampling), written directly from the spec
and independent of the Cython kernels, plus the goodness-of-fit helpers the statistical tests
share. Used by ``tests/test_sampler_stats.py``.
"""

import math
from fractions import Fraction

import numpy as np
from scipy import stats

# _sampler.pyx: after this many consecutive draws that hit a positive, _sample_negative stops
# redrawing and returns a uniformly drawn negative instead (bounded redraws, spec step 5).
MAX_REJECTIONS = 32

# A correct sampler fails a single goodness-of-fit check with probability 1e-6 (the p-value
# threshold); with a few dozen checks per Hypothesis run that is < 1e-4 per run, while every
# seeded bug moves the statistic by thousands of standard deviations (see the tests).
P_VALUE_THRESHOLD = 1e-6
# Two-sided normal quantile for the same 1e-6: |z| > 4.89 happens with probability 1e-6.
Z_THRESHOLD = stats.norm.isf(P_VALUE_THRESHOLD / 2)
# Pearson's chi-square approximation is good once every bin expects at least this many.
MIN_EXPECTED = 20.0


# ---------------------------------------------------------------------------------------------
# Exact distributions
# ---------------------------------------------------------------------------------------------

def rank_probabilities(n_labels, rank_decay):
    """p(r) for r = 1..n_labels, p(r) proportional to exp(-r / lambda) (truncated geometric).

    Computed in log space so that tiny lambda (all mass on rank 1) and huge lambda (uniform)
    are exact too.
    """
    r = np.arange(1, n_labels + 1, dtype=np.float64)
    log_w = -(r - 1) / rank_decay  # shifted by exp(1/lambda): same distribution
    log_w -= np.logaddexp.reduce(log_w)
    return np.exp(log_w)


def factor_probabilities(user, sigma):
    """p(f | i) = |u_f| * sigma_f / sum, in float64; None when every weight is zero."""
    weights = np.abs(np.asarray(user, dtype=np.float64)) * np.asarray(sigma, dtype=np.float64)
    total = weights.sum()
    if not total > 0:
        return None
    return weights / total


def descending_orders(item_factors):
    """(k, n) labels by float32 value, largest first, per factor (NumPy's argsort).

    The kernels sort float32 keys, so the reference does too; callers that need a unique
    order make sure a factor column has no ties in float32.
    """
    keys = np.asarray(item_factors).astype(np.float32)
    return np.argsort(-keys, axis=0, kind="stable").T


def adaptive_raw_probabilities(user, item_factors, rank_decay):
    """One adaptive draw before the positive check (spec steps 2-4), exactly, over labels.

    P(a) = sum_f p(f | i) * sum_r p(r) * [a is the r-th largest v_{., f} if u_f > 0, else the
    r-th smallest]. sigma is NumPy's population std (ddof 0) of each label column. A user
    whose every weight is zero gets the uniform distribution (the kernel's fallback).
    """
    item_factors = np.asarray(item_factors)
    n_labels, n_factors = item_factors.shape
    sigma = item_factors.astype(np.float64).std(axis=0)
    p_factor = factor_probabilities(user, sigma)
    if p_factor is None:
        return np.full(n_labels, 1.0 / n_labels)
    p_rank = rank_probabilities(n_labels, rank_decay)
    orders = descending_orders(item_factors)
    probs = np.zeros(n_labels)
    for f in range(n_factors):
        if p_factor[f] == 0:
            continue
        order = orders[f] if user[f] > 0 else orders[f][::-1]
        probs[order] += p_factor[f] * p_rank
    return probs


def with_rejection(raw, positives, max_rejections=MAX_REJECTIONS):
    """Distribution after redrawing positives at most ``max_rejections`` times, then falling
    back to a uniform negative (``_sample_negative``), and the expected number of draws.

    With q = P(raw draw is a positive): P(a) = raw(a) * (1 + q + ... + q^(M-1)) + q^M / #neg
    for a negative a, and E[draws] = 1 + q + ... + q^(M-1) + q^M (the fallback counts one).
    Returns (probabilities, expected_draws, variance_of_draws); None when there is no negative.
    """
    n_labels = raw.shape[0]
    positive = np.zeros(n_labels, dtype=bool)
    positive[np.asarray(positives, dtype=np.int64)] = True
    n_negative = n_labels - positive.sum()
    if n_negative == 0:
        return None
    q = min(float(raw[positive].sum()), 1.0)
    geometric = sum(q ** j for j in range(max_rejections))
    probs = np.where(positive, 0.0, raw * geometric + q ** max_rejections / n_negative)
    # draws D = min(G, M) + [G > M] with G ~ Geometric(1 - q) on 1, 2, ...
    values = np.arange(1, max_rejections + 2, dtype=np.float64)
    mass = np.array([q ** (d - 1) * (1 - q) for d in range(1, max_rejections + 1)]
                    + [q ** max_rejections])
    mean = float((values * mass).sum())
    variance = float(((values - mean) ** 2 * mass).sum())
    return probs / probs.sum(), mean, variance


def exact_std(item_factors):
    """Population standard deviation (ddof 0) of each column, computed exactly in rationals
    and rounded once. (np.std rounds the mean first, which for a nearly constant column can
    leave an error as large as the spread itself; e.g. a constant column can get 1e-56.)"""
    columns = np.asarray(item_factors, dtype=np.float64).T
    out = np.empty(columns.shape[0])
    for f, column in enumerate(columns):
        values = [Fraction(float(x)) for x in column]
        mean = sum(values) / len(values)
        out[f] = math.sqrt(float(sum((x - mean) ** 2 for x in values) / len(values)))
    return out


def model_ranks(user, item_factors):
    """1-based rank of every label in the model's own ranking for this image: by the score
    u . v_a (float64), descending."""
    scores = np.asarray(item_factors, dtype=np.float64) @ np.asarray(user, dtype=np.float64)
    order = np.argsort(-scores, kind="stable")
    ranks = np.empty_like(order)
    ranks[order] = np.arange(1, order.shape[0] + 1)
    return ranks


# ---------------------------------------------------------------------------------------------
# Goodness of fit
# ---------------------------------------------------------------------------------------------

def merge_bins(expected, *observed, min_expected=MIN_EXPECTED):
    """Merge consecutive bins until each expects at least ``min_expected`` draws.

    Bins are merged in the order given (callers order them so that neighbours are alike, e.g.
    by rank); a short remainder is folded into the last full bin. Returns the merged expected
    and observed arrays.
    """
    expected = np.asarray(expected, dtype=np.float64)
    groups = np.zeros(expected.shape[0], dtype=np.int64)
    group, running = 0, 0.0
    for t, e in enumerate(expected):
        groups[t] = group
        running += e
        if running >= min_expected:
            group += 1
            running = 0.0
    tail = groups == group  # bins after the last full group (possibly expecting 0 draws)
    if tail.any() and group > 0:
        groups[tail] = group - 1
    n_groups = groups.max() + 1
    merged = [np.bincount(groups, weights=expected, minlength=n_groups)]
    for obs in observed:
        merged.append(np.bincount(groups, weights=np.asarray(obs, dtype=np.float64),
                                  minlength=n_groups))
    return merged


def chi_square_pvalue(counts, probabilities):
    """Pearson chi-square p-value of ``counts`` against exact ``probabilities`` (same order),
    after merging low-expectation bins. Outcomes of probability 0 must not occur at all; the
    caller asserts that separately (a chi-square cannot weigh them)."""
    counts = np.asarray(counts, dtype=np.float64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    expected = probabilities / probabilities.sum() * counts.sum()
    merged_expected, merged_counts = merge_bins(expected, counts)
    if merged_expected.shape[0] < 2:
        return 1.0
    return float(stats.chisquare(merged_counts, merged_expected).pvalue)


def two_sample_pvalue(counts_a, counts_b, probabilities):
    """Chi-square test of homogeneity of two count vectors over the same outcomes, with bins
    merged by the reference ``probabilities`` (so that each merged bin is well populated)."""
    counts_a = np.asarray(counts_a, dtype=np.float64)
    counts_b = np.asarray(counts_b, dtype=np.float64)
    expected = np.asarray(probabilities, dtype=np.float64)
    expected = expected / expected.sum() * min(counts_a.sum(), counts_b.sum())
    _, merged_a, merged_b = merge_bins(expected, counts_a, counts_b)
    keep = (merged_a + merged_b) > 0
    table = np.vstack([merged_a[keep], merged_b[keep]])
    if table.shape[1] < 2:
        return 1.0
    return float(stats.chi2_contingency(table, correction=False).pvalue)
