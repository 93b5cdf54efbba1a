"""Helpers shared by the tests: training matrices and models, and Hypothesis strategies for
IDs, pair lists, sparse matrices and ARFF files.

Sizes are small on purpose: the properties (round trips, split invariants) do not need big
inputs, and the whole adapters suite should run in well under a minute.
"""

import numpy as np
import scipy.sparse as sp
from hypothesis import strategies as st

from vse_recsys import VSEEns
from vse_recsys.adapters._ids import integer_id

# -- training matrices and models ---------------------------------------------------------------


def random_labels(n_images=300, n_labels=60, per_image=4, seed=0):
    """A binary CSR matrix, ``per_image`` draws per image from a Zipf-like label popularity."""
    rng = np.random.default_rng(seed)
    rows = np.repeat(np.arange(n_images), per_image)
    popularity = 1 / np.arange(1, n_labels + 1)
    cols = rng.choice(n_labels, size=rows.size, p=popularity / popularity.sum())
    matrix = sp.csr_matrix(
        (np.ones(rows.size, dtype=np.float32), (rows, cols)), shape=(n_images, n_labels)
    )
    matrix.sum_duplicates()
    matrix.data[:] = 1
    return matrix


def quick_model(**params):
    """A small, fast, seeded one-thread VSEEns (``params`` override the settings), without
    early stopping, so that every pair trains and every epoch runs."""
    settings = dict(factors=8, iterations=3, num_threads=1, random_state=0,
                    early_stopping=False)
    settings.update(params)
    return VSEEns(**settings)


#: the free-vector model of the VSE-ens paper's comparison: no bias, plain SGD
FREE = dict(image_vectors="free", label_bias=False, learning_schedule="sgd")

#: every loss x sampler combination the engine trains
CONFIGS = [
    dict(loss="hinge", sampler="adaptive"),
    dict(loss="hinge", sampler="uniform"),
    dict(loss="warp", sampler="uniform"),
    dict(loss="bpr", sampler="adaptive"),
    dict(loss="bpr", sampler="uniform"),
]


# -- IDs and pairs ------------------------------------------------------------------------------


# IDs that a CSV/TSV file round-trips as text: printable, no separators, quotes or line breaks,
# no surrounding spaces, never empty, and never an integer ID (readers turn those into ints; the
# rule is vse_recsys.adapters._ids.integer_id). The sampled words are the ones a careless
# reader turns into NaN, numbers or booleans.
_TRICKY_WORDS = ["NA", "N/A", "null", "None", "nan", "NaN", "#N/A", "007", "-0", "1.5", "True"]
text_ids = st.one_of(
    st.sampled_from(_TRICKY_WORDS),
    st.text(
        alphabet=st.characters(
            codec="utf-8", categories=("L", "N", "P", "S", "Zs"), exclude_characters=",\t\"'"
        ),
        min_size=1,
        max_size=8,
    ).map(str.strip),
).filter(lambda s: s and integer_id(s) is None)
int_ids = st.integers(-(10**12), 10**12)
any_ids = st.one_of(int_ids, text_ids)


@st.composite
def pair_lists(draw, ids=any_ids, max_pairs=40):
    """``(images, labels)``: parallel lists of IDs, drawn from small pools so that images share
    labels and pairs repeat."""
    image_pool = draw(st.lists(ids, min_size=1, max_size=8, unique=True))
    label_pool = draw(st.lists(ids, min_size=1, max_size=8, unique=True))
    n = draw(st.integers(1, max_pairs))
    images = draw(st.lists(st.sampled_from(image_pool), min_size=n, max_size=n))
    labels = draw(st.lists(st.sampled_from(label_pool), min_size=n, max_size=n))
    return images, labels


@st.composite
def file_pair_lists(draw, max_pairs=40):
    """Pairs whose IDs survive a CSV round trip unchanged: all ints, or all text."""
    return draw(pair_lists(ids=draw(st.sampled_from([int_ids, text_ids])), max_pairs=max_pairs))


@st.composite
def binary_matrices(draw, max_images=25, max_labels=12):
    """A binary float32 CSR matrix, often with empty rows and rows of one label."""
    n_images = draw(st.integers(1, max_images))
    n_labels = draw(st.integers(1, max_labels))
    density = draw(st.sampled_from([0.0, 0.1, 0.3, 0.7, 1.0]))
    seed = draw(st.integers(0, 2**32 - 1))
    dense = np.random.default_rng(seed).random((n_images, n_labels)) < density
    return sp.csr_matrix(dense, dtype=np.float32)


seeds = st.integers(0, 2**32 - 1)


@st.composite
def mulan_datasets(draw):
    """A small MULAN dataset: ``(attribute names, label names, label matrix, sparse rows?)``.

    Label attributes are mixed among feature attributes at random positions; some names need
    quoting (spaces) or carry an escaped quote, as in the real delicious file.
    """
    n_labels = draw(st.integers(1, 5))
    n_features = draw(st.integers(0, 4))
    label_names = [
        draw(st.sampled_from(["tag", "a b", "m\\'usica", "x-y", "TAG_2.0"])) + f"{i}"
        for i in range(n_labels)
    ]
    feature_names = [f"feature {i}" if i % 2 else f"f{i}" for i in range(n_features)]
    names = label_names + feature_names
    order = draw(st.permutations(range(len(names))))
    names = [names[i] for i in order]
    n_rows = draw(st.integers(1, 8))
    seed = draw(st.integers(0, 2**32 - 1))
    labels = np.random.default_rng(seed).random((n_rows, n_labels)) < 0.4
    sparse_rows = draw(st.lists(st.booleans(), min_size=n_rows, max_size=n_rows))
    return names, label_names, labels, sparse_rows


def arff_name(name):
    """How an ARFF header writes `name`: quoted when it has a space."""
    return f"'{name}'" if " " in name else name


def write_mulan(tmp_path, names, label_names, labels, sparse_rows, feature_value="0.5"):
    """Write ``data.arff`` and ``data.xml``; features get `feature_value` (sparse: omitted 0s)."""
    lines = ["% a comment", "@relation test", ""]
    for name in names:
        kind = "{0,1}" if name in label_names else "numeric"
        lines.append(f"@attribute {arff_name(name)} {kind}")
    lines += ["", "@data"]
    column = {name: k for k, name in enumerate(label_names)}
    for row, sparse in zip(labels, sparse_rows):
        values = [
            str(int(row[column[name]])) if name in column else feature_value for name in names
        ]
        if sparse:
            entries = [f"{i} {v}" for i, v in enumerate(values) if v != "0"]
            lines.append("{" + ",".join(entries) + "}")
        else:
            lines.append(",".join(values))
    arff = tmp_path / "data.arff"
    arff.write_text("\n".join(lines) + "\n")
    xml = tmp_path / "data.xml"
    xml.write_text(
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<labels xmlns="http://mulan.sourceforge.net/labels">\n'
        + "".join(f'<label name="{name}"></label>\n' for name in label_names)
        + "</labels>\n"
    )
    return arff, xml
