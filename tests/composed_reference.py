"""NumPy reference for the label-composed model's visit of one image (``_composed.pxi``).

Written from the model's definition (docs/ALGORITHM.md, "VSEEns: scores" and "Training"), in
float64, for the tests to hold the compiled kernel against: every pair's vector is the image's
other labels' inputs summed and scaled by m^-alpha (plus a free vector), scored with a bias;
each pair steps its two label vectors at once; each summed label input takes, at the end of
the visit, the image side's gradients of every pair but its own.
"""

import numpy as np


def ascend(x, accumulator, direction, scale, lr, reg):
    """x along scale * direction with L2, in place; AdaGrad when ``accumulator`` is given."""
    step = scale * direction - reg * x
    if accumulator is None:
        x += lr * step
    else:
        x += lr * step / np.sqrt(accumulator)
        accumulator += step * step


def loss_scale(loss, positive_score, negative_score, margin, rank_weight=1.0):
    if loss == "bpr":
        return 1.0 / (1.0 + np.exp(positive_score - negative_score))
    if margin - positive_score + negative_score <= 0:
        return 0.0
    return rank_weight if loss == "warp" else 1.0


def visit(inputs, labels, labels_of_image, order, negatives, *, loss="hinge", margin=1.0,
          lr=0.05, reg=0.01, exponent=0.5, bias=True, free=None, sums=None):
    """Train one image's pairs in ``order`` (positions into ``labels_of_image``), each against
    ``negatives[position]``; ``inputs`` (n_labels, k) and ``labels`` (n_labels, k + bias) are
    changed in place, and ``free`` (k,) when given. ``sums``: AdaGrad accumulators of inputs,
    labels (and free), or None for SGD. Every label of the image is in the sum (no dropout)."""
    k = inputs.shape[1]
    input_sums, label_sums, free_sums = sums if sums is not None else (None, None, None)
    total = inputs[labels_of_image].sum(axis=0)
    gradients = np.zeros((len(labels_of_image), k))
    steps = 0
    for position in order:
        positive, negative = labels_of_image[position], negatives[position]
        others = len(labels_of_image) - 1
        c = others ** -exponent if others > 0 else 0.0
        user = c * (total - inputs[positive])
        if free is not None:
            user = user + free
        if bias:
            user = np.append(user, 1.0)
        s_p, s_n = user @ labels[positive], user @ labels[negative]
        scale = loss_scale(loss, s_p, s_n, margin)
        if scale == 0 and loss != "bpr":
            continue
        steps += 1
        gradients[position] = c * scale * (labels[positive, :k] - labels[negative, :k])
        if free is not None:
            ascend(free, free_sums, labels[positive, :k] - labels[negative, :k], scale, lr, reg)
        ascend(labels[positive], None if label_sums is None else label_sums[positive],
               user, scale, lr, reg)
        ascend(labels[negative], None if label_sums is None else label_sums[negative],
               user, -scale, lr, reg)
    if not steps:  # no pair stepped: the inputs are not touched (not even by L2)
        return
    gradient_sum = gradients.sum(axis=0)
    for position, label in enumerate(labels_of_image):
        ascend(inputs[label], None if input_sums is None else input_sums[label],
               gradient_sum - gradients[position], 1.0, lr, reg)


def compose(rows, inputs, exponent=0.5, bias=True):
    """Every image's vector from all its labels: |L_i|^-alpha * sum of inputs (+ a 1 column)."""
    rows = np.asarray(rows.todense() if hasattr(rows, "todense") else rows, dtype=np.float64)
    counts = rows.sum(axis=1)
    scale = np.where(counts > 0, np.maximum(counts, 1) ** -exponent, 0.0)
    vectors = scale[:, None] * (rows @ inputs)
    if bias:
        vectors = np.hstack([vectors, np.ones((rows.shape[0], 1))])
    return vectors
