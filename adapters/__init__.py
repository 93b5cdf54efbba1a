"""Dataset adapters: read image–label data into :class:`ImageLabels`, generate it, split it.

Every reader returns an :class:`ImageLabels` (a binary CSR matrix, images × labels, with the
original IDs) and reports input rows it did not keep in ``dropped``; bad input raises
:class:`DatasetFormatError` naming the file and line.

========================  ========================================================
``read_mulan``            MULAN / MEKA ARFF + XML (Corel5k, delicious, ...)
``read_nuswide``          NUS-WIDE concepts, official release layout
``read_nuswide_tags``     NUS-WIDE 1k user tags (AllTags1k.txt + TagList1k.txt)
``read_nuswide_pairs``    the shared NUS-WIDE-81 pairs TSV
``read_openimages``       Open Images image-level labels CSV
``read_movielens``        MovieLens ratings (100k, 1m/10m, 20m/25m layouts)
``read_pairs``            any CSV / TSV / Parquet of (image, label[, weight])
``read_any``              any of the above by format name, or recognised (``FORMATS``)
``load_dataset``          the shared datasets by name
``generate_image_labels`` generated data with planted low-rank structure
``leave_one_out_split``   the paper's protocol; ``train_test_split`` fractional
========================  ========================================================
"""

from .dataset import DatasetSummary, ImageLabels
from .datasets import load_dataset, resolve_data_dir
from .errors import DatasetFormatError
from .formats import FORMATS, read_any
from .generate import generate_image_labels
from .movielens import read_movielens
from .mulan import read_mulan, read_mulan_labels
from .nuswide import read_nuswide, read_nuswide_pairs, read_nuswide_tags
from .openimages import read_openimages, read_openimages_class_names
from .pairs import read_pairs
from .splits import leave_one_out_split, train_test_split

__all__ = [
    "DatasetFormatError",
    "DatasetSummary",
    "FORMATS",
    "ImageLabels",
    "generate_image_labels",
    "leave_one_out_split",
    "load_dataset",
    "read_any",
    "read_movielens",
    "read_mulan",
    "read_mulan_labels",
    "read_nuswide",
    "read_nuswide_pairs",
    "read_nuswide_tags",
    "read_openimages",
    "read_openimages_class_names",
    "read_pairs",
    "resolve_data_dir",
    "train_test_split",
]
