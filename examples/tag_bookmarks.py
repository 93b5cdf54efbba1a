"""Item tagging for a recommender system: delicious bookmarks are the items, their tags the labels.

    python examples/tag_bookmarks.py                  # $VSE_RECSYS_DATA, else ../shared/data
    python examples/tag_bookmarks.py --data-dir PATH  # the folder holding delicious/

VSE-ens ranks labels for an "image" known only by an ID; nothing in it is specific to images.
Here the images are bookmarks (items of a recommender) and the labels are the tags users gave
them (delicious, MULAN release: 16,105 bookmarks x 983 tags). The script

1. fits ``VSEEns`` on the bookmark x tag matrix,
2. shows tag-tag similarity with ``similar_items`` (cosine of the tag vectors), by tag *name*,
3. tags a new bookmark that arrived with two tags, by folding it in
   (``recommend(..., recalculate_user=True)``: the tag vectors stay fixed, no retraining),
4. does the same through ``Annotator``, which keeps the ID maps with the model and saves it for
   the ``vse-recsys tag`` command.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from vse_recsys import VSEEns
from vse_recsys.adapters import read_mulan, resolve_data_dir
from vse_recsys.annotator import Annotator


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", help="folder holding delicious/ (default: "
                        "$VSE_RECSYS_DATA, else ../shared/data)")
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    try:
        folder = resolve_data_dir(args.data_dir) / "delicious"
        bookmarks = read_mulan(folder / "delicious.arff", folder / "delicious.xml")
    except FileNotFoundError as error:
        sys.exit(f"tag_bookmarks: {error}")
    # MULAN names the tag attributes TAG_<tag>; show them without the prefix
    names = np.array([name.removeprefix("TAG_") for name in bookmarks.label_names])

    def tag(name):
        """Column of a tag, by its name."""
        return bookmarks.label_index(f"TAG_{name}")

    print(f"delicious: {bookmarks.n_images:,} bookmarks x {bookmarks.n_labels:,} tags, "
          f"{bookmarks.n_pairs:,} (bookmark, tag) pairs")

    # 1. fit: rows are bookmarks ("users" in implicit's terms), columns are tags ("items")
    model = VSEEns(factors=64, iterations=args.iterations, random_state=args.seed)
    started = time.perf_counter()
    model.fit(bookmarks.user_items, show_progress=False)
    print(f"fitted VSEEns in {time.perf_counter() - started:.1f} s\n")

    # 2. tag-tag similarity: the nearest tag vectors (the first hit is the tag itself)
    print("tags most similar to ...")
    for name in ("python", "recipes", "travel", "photography"):
        ids, scores = model.similar_items(tag(name), N=6)
        similar = [f"{names[i]} ({s:.2f})" for i, s in zip(ids, scores) if i != tag(name)]
        print(f"  {name:<12} {', '.join(similar[:5])}")

    # 3. a new bookmark arrives tagged "python" and "webdev": suggest more tags
    known = [tag("python"), tag("webdev")]
    new_row = sp.csr_matrix(
        (np.ones(len(known), dtype=np.float32), ([0] * len(known), known)),
        shape=(1, bookmarks.n_labels),
    )
    # the userid of a folded-in row only decides the shape of the result; known tags are
    # filtered out of the suggestions
    ids, scores = model.recommend(0, new_row, N=8, recalculate_user=True)
    print("\nnew bookmark tagged python, webdev -> suggested tags:")
    print("  " + ", ".join(f"{names[i]} ({s:.2f})" for i, s in zip(ids, scores)))
    # to keep it in the model as bookmark number n_images: model.partial_fit_users([n], new_row)

    # 4. the same through Annotator (IDs and names kept with the model), saved for the CLI:
    #    vse-recsys tag bookmarks.npz --labels TAG_python,TAG_webdev
    annotator = Annotator(model, bookmarks.label_ids, bookmarks.label_names,
                          bookmarks.image_ids, bookmarks.user_items)
    (suggestion,) = annotator.tag_new([["TAG_python", "TAG_webdev"]], N=8)
    assert [bookmarks.label_index(label) for label in suggestion.labels] == list(ids)
    similar = annotator.similar_labels("TAG_python", N=3)
    print("\nAnnotator.similar_labels('TAG_python'):",
          ", ".join(f"{name} ({score:.2f})" for _, name, score in similar))
    with tempfile.TemporaryDirectory() as tmp:
        path = annotator.save(Path(tmp) / "bookmarks.npz")
        print(f"saved with its IDs and tag names ({path.stat().st_size / 1e6:.1f} MB); "
              f"Annotator.load(path) or 'vse-recsys tag path --labels ...' read it back")


if __name__ == "__main__":
    main()
