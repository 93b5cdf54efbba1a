"""How many labels early stopping holds out (``vse_recsys._holdout.split_validation``)."""

import numpy as np
import pytest
import scipy.sparse as sp

from vse_recsys._holdout import split_validation


def uniform_rows(n_images, labels_per_image, n_labels=400, seed=0):
    """Binary CSR: every image has ``labels_per_image`` distinct random labels."""
    rng = np.random.default_rng(seed)
    indices = np.concatenate([np.sort(rng.choice(n_labels, labels_per_image, replace=False))
                              for _ in range(n_images)]).astype(np.int32)
    indptr = np.arange(n_images + 1, dtype=np.int64) * labels_per_image
    return sp.csr_matrix((np.ones(len(indices), dtype=np.float32), indices, indptr),
                         shape=(n_images, n_labels))


@pytest.mark.parametrize("n_images, labels_per_image, expected", [
    # few images with many labels each (movielens-100k's shape): every image, 1 % of the pairs
    (900, 100, 900),
    # few labels each: at most a tenth of the pairs (400 of 4,000), not half of the images
    (2_000, 2, 400),
    # enough pairs for the floor of 1,000 images, above a tenth of the images
    (5_000, 3, 1_000),
    # a tenth of the images once that is above the floor
    (30_000, 2, 3_000),
    # and never more than 10,000 images
    (200_000, 2, 10_000),
])
def test_held_out_images_are_a_share_with_a_floor_that_costs_at_most_that_share_of_pairs(
        n_images, labels_per_image, expected):
    matrix = uniform_rows(n_images, labels_per_image)
    train, held_out = split_validation(matrix, 0.1, np.random.default_rng(0))
    assert held_out.nnz == expected
    assert (np.diff(held_out.indptr) <= 1).all()  # one label an image
    assert train.nnz + held_out.nnz == matrix.nnz
    assert (train.multiply(held_out)).nnz == 0  # moved, not copied
    assert (train + held_out != matrix).nnz == 0


def test_with_many_labels_fewer_images_are_held_out_so_the_check_stays_cheap():
    # 30,000 images would hold out 3,000; scoring them against 100,000 labels after every
    # epoch would cost more than an epoch, so at most 2^28 scores: 2,684 images
    matrix = uniform_rows(30_000, 2, n_labels=100_000)
    _, held_out = split_validation(matrix, 0.1, np.random.default_rng(0))
    assert held_out.nnz == (1 << 28) // 100_000 == 2_684
    # and never below the floor of 1,000 images, however many labels
    matrix = uniform_rows(30_000, 2, n_labels=1_000_000)
    _, held_out = split_validation(matrix, 0.1, np.random.default_rng(0))
    assert held_out.nnz == 1_000


def test_the_memory_estimate_counts_the_images_the_split_holds_out():
    from vse_recsys import VSEEns

    def scoring(fraction):
        model = VSEEns(factors=16, validation_fraction=fraction)
        return model.estimate_memory(50_000, 1_000, 500_000).terms["validation scoring"]

    # 5,000 images held out at a tenth, 10,000 (the most) at a half: the estimate follows
    assert scoring(0.5) > scoring(0.1) == scoring(0.1)
    assert scoring(0.5) == scoring(0.9)
