"""The ``vse-recsys`` command line (also ``python -m vse_recsys``).

Commands: ``demo`` (VSE-ens vs WARP, generated or real data), ``fit`` (a dataset in any adapter
format to a saved model), ``tag`` (top-N labels for known or new images), ``evaluate`` (the
paper's metrics). ``vse-recsys COMMAND --help`` lists each command's options.

Errors a user can make (a missing file, a bad option value, an unknown image ID or label, a
malformed data file) are reported as one line on stderr, ``vse-recsys: error: ...``, with exit
status 2 for a wrong command line and 1 otherwise; ``--debug`` shows the traceback instead.
"""

import argparse
import csv
import inspect
import io
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from . import __version__

# the --format values of `fit` and `evaluate` (each is a reader of vse_recsys.adapters)
DATA_FORMATS = ("auto", "pairs", "openimages", "nuswide", "nuswide-tags", "nuswide-pairs",
                "mulan", "movielens")
_MOVIELENS_FILES = ("u.data", "ratings.dat", "ratings.csv")


class UserError(Exception):
    """A mistake in the command line: reported in one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block): ``vse-recsys fit: error: ...``."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def main(argv=None):
    parser = _parser()
    args = parser.parse_args(argv)
    if args.debug:
        return args.run(args) or 0
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            return args.run(args) or 0
        except UserError as error:
            _error(error)
            return 2
        except KeyboardInterrupt:
            print("vse-recsys: interrupted", file=sys.stderr)
            return 130
        except BrokenPipeError:  # e.g. `vse-recsys tag ... | head`: stop quietly
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # Python's final flush must not fail again
            return 1
        except KeyError as error:  # unknown image ID or label: the message is args[0]
            _error(error.args[0] if error.args else error)
            return 1
        except OSError as error:
            _error(_os_message(error))
            return 1
        except (ValueError, IndexError, FloatingPointError) as error:
            # DatasetFormatError, ModelFileError, VSEEns parameter checks, DivergenceError
            _error(error)
            return 1
        except MemoryError as error:  # InsufficientMemoryError says how much was needed
            _error(error if str(error) else "out of memory")
            return 1


def _error(message):
    text = " ".join(str(message).split())  # one line, whatever the message holds
    print(f"vse-recsys: error: {text}", file=sys.stderr)


def _note(args, message):
    if not getattr(args, "quiet", False):
        print(message, file=sys.stderr)


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"vse-recsys: warning: {' '.join(str(message).split())}", file=sys.stderr)


def _os_message(error):
    if error.filename is not None and error.strerror:
        return f"{error.strerror}: {error.filename}"
    return str(error)


# -- the parser -----------------------------------------------------------------------------------


def _parser():
    parser = _Parser(
        prog="vse-recsys",
        description="Label ranking for images (and tagging for items) with VSE-ens.",
        epilog="'vse-recsys COMMAND --help' lists the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error (for bug reports)")
    parser.set_defaults(debug=False)
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")
    _demo_parser(commands)
    _fit_parser(commands)
    _tag_parser(commands)
    _evaluate_parser(commands)
    return parser


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _cutoffs(text):
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(
            f"expected positive integers separated by commas (e.g. 5,10), got {text!r}"
        )
    return tuple(dict.fromkeys(values))


def _add_dataset_options(group, *, positional_help=None, pairs="DATA with --format pairs"):
    if positional_help:
        group.add_argument("data", nargs="?", metavar="DATA", help=positional_help)
    group.add_argument("--format", choices=DATA_FORMATS, default="auto",
                       help="format of DATA (default: auto: *.arff is mulan, a folder holding "
                       "u.data / ratings.dat / ratings.csv is movielens, a folder holding "
                       "ImageList/ is nuswide, anything else pairs)")
    group.add_argument("--dataset", metavar="NAME",
                       help="instead of DATA, one of the shared datasets by name: corel5k, "
                       "delicious, nuswide81, movielens-100k (read from --data-dir)")
    group.add_argument("--data-dir", metavar="DIR",
                       help="folder of the shared datasets (default: $VSE_RECSYS_DATA, else "
                       "../shared/data)")
    _add_pair_options(group, what=pairs)
    group.add_argument("--xml", metavar="FILE",
                       help="mulan: the XML label header (default: <name>.xml beside the ARFF "
                       "file, or the only .xml there)")
    group.add_argument("--min-rating", type=float, default=4.0, metavar="R",
                       help="movielens: lowest rating that counts as positive (default 4)")
    group.add_argument("--class-names", metavar="CSV",
                       help="openimages: class-descriptions CSV giving the labels' display names")
    group.add_argument("--split", choices=("train", "test"),
                       help="nuswide-pairs: keep only the official train or test split")


def _add_pair_options(group, *, what):
    group.add_argument("--image-col", default="image", metavar="COLUMN",
                       help=f"{what}: column of the image IDs (default 'image'; a 0-based "
                       f"number with --no-header)")
    group.add_argument("--label-col", default="label", metavar="COLUMN",
                       help=f"{what}: column of the labels (default 'label')")
    group.add_argument("--sep", metavar="SEP",
                       help=f"{what}: field separator (default: from the suffix, .csv comma, "
                       f".tsv tab, else guessed from the first line)")
    group.add_argument("--no-header", dest="header", action="store_false",
                       help=f"{what}: the file has no header line")


# VSEEns parameters as `fit` options: (option, parameter, type, help)
_MODEL_OPTIONS = (
    ("--factors", "factors", _positive_int, "dimension of the image and label vectors"),
    ("--learning-rate", "learning_rate", float, "SGD step"),
    ("--regularization", "regularization", float, "L2 weight decay"),
    ("--iterations", "iterations", int, "epochs (passes over every pair)"),
    ("--margin", "margin", float, "hinge / WARP margin"),
    ("--loss", "loss", str, "hinge (VSE-ens), warp or bpr"),
    ("--sampler", "sampler", str, "adaptive (VSE-ens) or uniform"),
    ("--rank-decay", "rank_decay", float,
     "adaptive sampler's lambda as a fraction of the label count"),
    ("--refresh-interval", "refresh_interval", int,
     "sampled pairs between refreshes of the adaptive sampler (default: n_labels ln n_labels)"),
    ("--max-sampled", "max_sampled", int, "WARP: most draws per positive pair"),
    ("--candidates", "candidates", int,
     "hinge / BPR: negatives drawn per pair, the highest-scoring one is used (default 1)"),
    ("--init-scale", "init_scale", float, "standard deviation of the initial factors"),
    ("--fold-in-iterations", "fold_in_iterations", int,
     "passes over a new image's labels when it is folded in (tag --labels)"),
    ("--threads", "num_threads", int, "threads; 0 = every core this process may use"),
    ("--seed", "random_state", int, "random seed (default: none, a fresh seed every run)"),
    ("--dtype", "dtype", str, "float32 or float64 factors"),
)


def _model_defaults():
    from .model import VSEEns

    return {
        name: parameter.default
        for name, parameter in inspect.signature(VSEEns.__init__).parameters.items()
        if name != "self"
    }


def _add_model_options(group):
    from .model import LOSSES, SAMPLERS

    defaults = _model_defaults()
    choices = {"loss": sorted(LOSSES), "sampler": sorted(SAMPLERS),
               "dtype": ["float32", "float64"]}
    for option, name, kind, help_text in _MODEL_OPTIONS:
        default = defaults.get(name)
        if name == "dtype":
            default = np.dtype(default).name
        shown = "" if default is None else f" (default {default})"
        metavar = None if name in choices else {int: "N", float: "X"}.get(kind, "N")
        group.add_argument(option, dest=name, type=kind, default=default, metavar=metavar,
                           choices=choices.get(name), help=help_text + shown)
    group.add_argument("--verify-negative-samples", dest="verify_negative_samples",
                       action=argparse.BooleanOptionalAction,
                       default=defaults.get("verify_negative_samples", True),
                       help="redraw sampled labels that are positives of the image")


def _demo_parser(commands):
    demo = commands.add_parser(
        "demo",
        help="train VSE-ens and WARP side by side (generated data, or a real dataset)",
        description="Hold out one label per image of a dataset (generated with planted "
        "structure, or a real one with --dataset / --data-dir), train VSE-ens (adaptive "
        "sampler + hinge) and WARP (uniform sampler) on the rest and compare how well each "
        "ranks the held-out labels.",
    )
    demo.add_argument("--dataset", metavar="NAME",
                      help="generated (the default), or a shared dataset: corel5k, delicious, "
                      "nuswide81, movielens-100k (delicious when only --data-dir is given)")
    demo.add_argument("--data-dir", metavar="DIR",
                      help="folder of the shared datasets (default: $VSE_RECSYS_DATA, else "
                      "../shared/data)")
    demo.add_argument("--images", type=_positive_int, default=30_000, help="generated images")
    demo.add_argument("--labels", type=_positive_int, default=2_000, help="generated labels")
    demo.add_argument("--labels-per-image", type=float, default=6.0,
                      help="generated labels per image (mean)")
    demo.add_argument("--factors", type=_positive_int, default=64)
    demo.add_argument("--epochs", type=_positive_int, default=15)
    demo.add_argument("--threads", type=int, default=0, help="0: every available core")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--examples", type=int, default=3, help="images to show with their labels")
    demo.set_defaults(run=_demo)


def _fit_parser(commands):
    fit = commands.add_parser(
        "fit",
        help="train a model on a dataset and save it (with its image IDs and label names)",
        description="Read a dataset, train VSEEns on all of it, and save the model with the "
        "image IDs, label IDs and names and the training labels in one .npz file (no pickle) "
        "for 'tag' and 'evaluate'.",
        epilog="example: vse-recsys fit pairs.csv -o model.npz --iterations 30 --seed 0",
    )
    data = fit.add_argument_group("data")
    _add_dataset_options(data, positional_help="the data file or folder")
    fit.add_argument("-o", "--output", required=True, metavar="MODEL",
                     help="where to save the model (.npz appended when missing)")
    fit.add_argument("-q", "--quiet", action="store_true",
                     help="no progress bar and no summary")
    _add_model_options(fit.add_argument_group("model parameters (VSEEns)"))
    fit.set_defaults(run=_fit)


def _tag_parser(commands):
    tag = commands.add_parser(
        "tag",
        help="top-N labels for images by ID, or for new images given by some of their labels",
        description="Suggest labels for training images given by ID, or for new images given "
        "by some labels they have (their vectors are folded in with the label vectors fixed). "
        "An image's known labels are left out unless --include-known. Inputs can be combined; "
        "results come in the order: --image, --images-file, --labels, --labels-file.",
        epilog="examples: vse-recsys tag model.npz --image 42 -n 5 | vse-recsys tag model.npz "
        "--labels sky,sea --format json",
    )
    tag.add_argument("model", metavar="MODEL", help="a model saved by 'vse-recsys fit'")
    inputs = tag.add_argument_group("images to tag")
    inputs.add_argument("--image", action="append", default=[], metavar="ID",
                        help="a training image by ID (repeatable)")
    inputs.add_argument("--images-file", metavar="FILE",
                        help="training image IDs, one per line ('-': stdin; blank lines and "
                        "lines starting with # skipped)")
    inputs.add_argument("--labels", action="append", default=[], metavar="A,B,...",
                        help="a new image given by labels it has (IDs or names, comma-"
                        "separated); repeatable, one new image each, reported as new-1, "
                        "new-2, ...")
    inputs.add_argument("--labels-file", metavar="FILE",
                        help="new images as (image, label) pairs, CSV/TSV: each image of the "
                        "file is folded in from its labels, under its ID from the file")
    _add_pair_options(inputs, what="--labels-file")
    inputs.add_argument("--skip-unknown", action="store_true",
                        help="--labels / --labels-file: leave out labels the model does not "
                        "know (with a warning) instead of failing")
    out = tag.add_argument_group("output")
    out.add_argument("-n", "--top", type=_positive_int, default=10, metavar="N",
                     help="labels per image (default 10)")
    out.add_argument("--include-known", action="store_true",
                     help="also suggest the labels an image already has")
    out.add_argument("--format", choices=("csv", "json"), default="csv",
                     help="csv: image,rank,label,name,score (default); json: one object per "
                     "image with its known labels and suggestions")
    out.add_argument("-o", "--output", default="-", metavar="FILE",
                     help="where to write ('-': stdout, the default)")
    tag.add_argument("--threads", type=int, default=None, metavar="N",
                     help="threads (default: the model's setting)")
    tag.add_argument("--fold-in-iterations", type=_positive_int, default=None, metavar="N",
                     help="passes over a new image's labels (default: the model's setting)")
    tag.add_argument("-q", "--quiet", action="store_true", help="no notes on stderr")
    tag.set_defaults(run=_tag)


def _evaluate_parser(commands):
    evaluate = commands.add_parser(
        "evaluate",
        help="the paper's metrics (P@k, R@k, NDCG@k, MAP, AUC) for a saved model",
        description="Two modes. --test FILE: rank every label for the images of a file of "
        "held-out (image, label) pairs with the saved model, leaving out each image's "
        "training labels. --leave-one-out: hold out one random label of each image with two "
        "or more of a dataset, fit a FRESH model with the saved model's parameters on the "
        "rest, and evaluate it on the held-out labels (the saved model's vectors are not used: "
        "they were trained on the labels that would be held out).",
        epilog="examples: vse-recsys evaluate model.npz --test test.csv | vse-recsys evaluate "
        "model.npz --leave-one-out pairs.csv --seed 0",
    )
    evaluate.add_argument("model", metavar="MODEL", help="a model saved by 'vse-recsys fit'")
    mode = evaluate.add_argument_group("what to evaluate on")
    mode.add_argument("--test", metavar="FILE",
                      help="held-out (image, label) pairs of the model's training images "
                      "(pairs format: --image-col, --label-col, --sep, --no-header)")
    mode.add_argument("--leave-one-out", nargs="?", const=True, default=None, metavar="DATA",
                      help="leave-one-out on the data file or folder DATA (or on --dataset "
                      "NAME): fits a fresh model with the saved model's parameters on the "
                      "training part")
    mode.add_argument("--skip-unknown", action="store_true",
                      help="--test: leave out pairs whose image or label the model does not "
                      "know (with a warning) instead of failing")
    _add_dataset_options(mode, pairs="--test, and DATA with --format pairs")
    options = evaluate.add_argument_group("metrics and output")
    options.add_argument("-k", "--k", dest="k", type=_cutoffs, default=(5, 10), metavar="K,...",
                         help="cut-offs for P@k, R@k, NDCG@k (default 5,10)")
    options.add_argument("--seed", type=int, default=0, metavar="N",
                         help="--leave-one-out: seed of the split (default 0); the fit uses the "
                         "saved model's seed")
    options.add_argument("--threads", type=int, default=None, metavar="N",
                         help="threads (default: the model's setting)")
    options.add_argument("--output-format", choices=("text", "json"), default="text",
                         help="text table (default) or one JSON object")
    options.add_argument("-o", "--output", default="-", metavar="FILE",
                         help="where to write ('-': stdout, the default)")
    options.add_argument("-q", "--quiet", action="store_true",
                         help="no progress bar and no notes on stderr")
    evaluate.set_defaults(run=_evaluate)


# -- reading datasets -----------------------------------------------------------------------------


def _column(value, header):
    """A column option: a name, or with --no-header a 0-based position."""
    if header:
        return value
    try:
        position = int(value)
    except (TypeError, ValueError):
        raise UserError(
            f"with --no-header, columns are 0-based numbers; got {value!r}"
        ) from None
    if position < 0:
        raise UserError(f"column numbers start at 0; got {value}")
    return position


def _read_pair_file(args, path, what="data file"):
    from .adapters import read_pairs

    _must_exist(path, what)
    return read_pairs(
        path,
        _column(args.image_col, args.header),
        _column(args.label_col, args.header),
        sep=args.sep,
        header=args.header,
    )


def _must_exist(path, what):
    if not Path(path).exists():
        raise FileNotFoundError(f"{what} {path} does not exist")


def _guess_format(path):
    if path.is_dir():
        if any((path / name).is_file() for name in _MOVIELENS_FILES):
            return "movielens"
        if (path / "ImageList").is_dir():
            return "nuswide"
        if (path / "TagList1k.txt").is_file() or (path / "NUS_WID_Tags").is_dir():
            return "nuswide-tags"
        raise UserError(
            f"{path} is a folder; say what it holds with --format (nuswide, nuswide-tags, "
            f"movielens)"
        )
    if path.suffix.lower() == ".arff":
        return "mulan"
    if path.name in _MOVIELENS_FILES[:2]:
        return "movielens"
    return "pairs"


def _mulan_xml(args, arff):
    if args.xml:
        return Path(args.xml)
    stem = arff.stem
    candidates = [arff.with_suffix(".xml")]
    for suffix in ("-sparse", "-train", "-test"):
        stem = stem.removesuffix(suffix)
    candidates.append(arff.with_name(stem + ".xml"))
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    others = sorted(arff.parent.glob("*.xml"))
    if len(others) == 1:
        return others[0]
    raise UserError(f"mulan needs the XML label header of {arff}: pass --xml FILE")


def _read_dataset(args, *, quiet=False):
    """The ImageLabels named by DATA / --format / --dataset; returns (dataset, description)."""
    from . import adapters

    if args.dataset and args.data:
        raise UserError(f"give either {args.data} or --dataset {args.dataset}, not both")
    if args.dataset:
        if args.dataset not in adapters.datasets.DATASETS:
            raise UserError(
                f"unknown dataset {args.dataset!r}; choose one of "
                f"{', '.join(adapters.datasets.DATASETS)}, or give a file"
            )
        return adapters.load_dataset(args.dataset, args.data_dir), f"dataset {args.dataset}"
    if not args.data:
        what = "--leave-one-out DATA" if hasattr(args, "leave_one_out") else "a data file or folder"
        raise UserError(f"no data: give {what}, or --dataset NAME")
    path = Path(args.data)
    _must_exist(path, "data")
    form = _guess_format(path) if args.format == "auto" else args.format
    if form == "pairs":
        dataset = _read_pair_file(args, path)
    elif form == "mulan":
        xml = _mulan_xml(args, path)
        _must_exist(xml, "XML label header")
        dataset = adapters.read_mulan(path, xml)
    elif form == "movielens":
        dataset = adapters.read_movielens(path, min_rating=args.min_rating)
    elif form == "openimages":
        if args.class_names:
            _must_exist(args.class_names, "class names file")
        dataset = adapters.read_openimages(path, args.class_names)
    elif form == "nuswide":
        dataset = adapters.read_nuswide(path)
    elif form == "nuswide-tags":
        dataset = adapters.read_nuswide_tags(path)
    elif form == "nuswide-pairs":
        dataset = adapters.read_nuswide_pairs(path, split=args.split)
    else:  # argparse's choices keep this out of reach
        raise UserError(f"unknown format {form!r}")
    return dataset, f"{path} ({form} format)"


def _model_params(args):
    params = {name: getattr(args, name) for _, name, *_ in _MODEL_OPTIONS}
    params["verify_negative_samples"] = args.verify_negative_samples
    return params


def _check_model(model):
    """Validate the parameters before reading any data (VSEEns raises ValueError)."""
    check = getattr(model, "_check_params", None)
    if check is not None:
        check()


# -- fit ------------------------------------------------------------------------------------------


def _fit(args):
    from .annotator import Annotator
    from .model import DivergenceError, VSEEns

    model = VSEEns(**_model_params(args))
    _check_model(model)
    output = Path(args.output)
    if output.suffix != ".npz":
        output = output.with_name(output.name + ".npz")
    if not output.parent.is_dir():
        raise FileNotFoundError(f"cannot write {output}: folder {output.parent} does not exist")
    if output.is_dir():
        raise IsADirectoryError(f"cannot write {output}: it is a folder")

    dataset, description = _read_dataset(args)
    if dataset.n_pairs == 0:
        raise ValueError(f"{description} has no (image, label) pair to train on")
    if not args.quiet:
        print(f"Read {description}: {dataset.n_images:,} images x {dataset.n_labels:,} labels, "
              f"{dataset.n_pairs:,} pairs")
    annotator = Annotator.from_dataset(dataset, model)
    started = time.perf_counter()
    try:
        annotator.fit(show_progress=not args.quiet)
    except DivergenceError as error:
        raise DivergenceError(f"{error} Nothing was saved.") from None
    seconds = time.perf_counter() - started
    written = annotator.save(output)
    if not args.quiet:
        last = model.fit_history[-1] if model.fit_history else None
        health = (f"; last epoch: {last['violation_rate']:.1%} of sampled negatives violated "
                  f"the margin" if last else "")
        print(f"Trained {model.iterations} epochs in {seconds:.1f} s{health}")
        print(f"Saved the model to {written}")
    return 0


# -- tag ------------------------------------------------------------------------------------------


def _load_annotator(args):
    from .annotator import Annotator

    annotator = Annotator.load(args.model)
    if getattr(args, "threads", None) is not None:
        if args.threads < 0:
            raise UserError(f"--threads must be >= 0, got {args.threads}")
        annotator.model.num_threads = args.threads
    return annotator


def _read_id_lines(path):
    if path == "-":
        lines = sys.stdin.read().splitlines()
    else:
        _must_exist(path, "images file")
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _split_labels(text):
    labels = [part.strip() for part in text.split(",") if part.strip()]
    if not labels:
        raise UserError(f"--labels {text!r} names no label")
    return labels


def _tag(args):
    if args.fold_in_iterations is not None and args.fold_in_iterations < 1:
        raise UserError("--fold-in-iterations must be >= 1")
    if not (args.image or args.images_file or args.labels or args.labels_file):
        raise UserError("nothing to tag: give --image, --images-file, --labels or --labels-file")
    annotator = _load_annotator(args)
    if args.fold_in_iterations is not None:
        annotator.model.fold_in_iterations = args.fold_in_iterations
    N, known = args.top, args.include_known

    images = list(args.image)
    if args.images_file:
        images += _read_id_lines(args.images_file)
    results = []
    if images:
        rows = annotator.image_index(images)
        if annotator.user_items is not None:
            empty = np.flatnonzero(np.diff(annotator.user_items.indptr)[rows] == 0)
            if empty.size:
                _note(args, f"vse-recsys: note: {empty.size:,} image(s) had no label in "
                      f"training (e.g. {images[empty[0]]!r}); their suggestions carry no "
                      f"information")
        results += annotator.tag(images, N=N, include_known=known)

    new_ids, new_positions = [], []
    for k, text in enumerate(args.labels, start=1):
        new_ids.append(f"new-{k}")
        new_positions.append(_label_positions(annotator, _split_labels(text), args,
                                              f"--labels {text!r}"))
    if new_positions:
        results += annotator.tag_rows(annotator.rows_of(new_positions), N, known, new_ids)
    if args.labels_file:
        file_ids, rows = _read_new_images(annotator, args)
        if file_ids:
            results += annotator.tag_rows(rows, N, known, file_ids)
        _note(args, f"vse-recsys: note: folded in {len(file_ids):,} new image(s) from "
              f"{args.labels_file}")
    _write_tags(results, args)
    return 0


def _label_positions(annotator, labels, args, where):
    positions = annotator.label_index(labels, missing="ignore")
    if not args.skip_unknown and (positions < 0).any():
        _raise_in(where, annotator.label_index, [labels[int(np.argmax(positions < 0))]])
    unknown = [label for label, position in zip(labels, positions) if position < 0]
    if unknown:
        warnings.warn(f"{where}: left out {len(unknown)} unknown label(s): "
                      f"{', '.join(map(repr, unknown[:5]))}")
        positions = positions[positions >= 0]
        if not positions.size:
            raise ValueError(f"{where}: no label the model knows")
    return positions


def _read_new_images(annotator, args):
    """New images from a pairs file: their IDs and a CSR of their labels in model columns."""
    data = _read_pair_file(args, args.labels_file, "labels file")
    columns = annotator.label_index(list(data.label_ids), missing="ignore")
    unknown = np.flatnonzero(columns < 0)
    if unknown.size and not args.skip_unknown:
        _raise_in(args.labels_file, annotator.label_index, [data.label_ids[unknown[0]]])
    matrix = data.user_items.tocoo()
    keep = columns[matrix.col] >= 0
    if unknown.size:
        warnings.warn(
            f"{args.labels_file}: left out {int(np.count_nonzero(~keep)):,} pair(s) with "
            f"{unknown.size:,} unknown label(s), e.g. {data.label_ids[unknown[0]]!r}"
        )
    rows = sp.csr_matrix(
        (np.ones(int(keep.sum()), dtype=np.float32), (matrix.row[keep], columns[matrix.col[keep]])),
        shape=(data.n_images, annotator.n_labels),
    )
    image_ids = [image.item() if isinstance(image, np.generic) else image
                 for image in data.image_ids]
    empty = np.flatnonzero(np.diff(rows.indptr) == 0)
    if empty.size:  # only with --skip-unknown: every label of these images was unknown
        warnings.warn(f"{args.labels_file}: left out {empty.size:,} image(s) without any label "
                      f"the model knows, e.g. {image_ids[empty[0]]!r}")
        kept = np.flatnonzero(np.diff(rows.indptr) > 0)
        rows, image_ids = rows[kept], [image_ids[k] for k in kept]
    return image_ids, rows


def _raise_in(where, lookup, values):
    """Call a lookup that raises KeyError for `values`, prefixing its message with `where`."""
    try:
        lookup(values)
    except KeyError as error:
        raise KeyError(f"{where}: {error.args[0]}") from None
    raise AssertionError(f"{values!r} was expected to be unknown")


def _open_output(path):
    if path == "-":
        return _Unclosed(sys.stdout)
    parent = Path(path).parent
    if not parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: folder {parent} does not exist")
    return open(path, "w", encoding="utf-8", newline="")


class _Unclosed:
    """A context manager over stdout that leaves it open."""

    def __init__(self, stream):
        self.stream = stream

    def __enter__(self):
        return self.stream

    def __exit__(self, *exc):
        self.stream.flush()


def _write_tags(results, args):
    if args.format == "json":
        payload = [
            {
                "image": tags.image,
                "new": tags.new,
                "known_labels": tags.known,
                "labels": [
                    {"label": label, "name": name, "score": round(score, 6)}
                    for label, name, score in zip(tags.labels, tags.names, tags.scores)
                ],
            }
            for tags in results
        ]
        text = json.dumps(payload, indent=2, ensure_ascii=False) + "\n"
    else:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["image", "rank", "label", "name", "score"])
        for tags in results:
            for rank, (label, name, score) in enumerate(
                zip(tags.labels, tags.names, tags.scores), start=1
            ):
                writer.writerow([tags.image, rank, label, name, f"{score:.6g}"])
        text = buffer.getvalue()
    with _open_output(args.output) as handle:
        handle.write(text)


# -- evaluate -------------------------------------------------------------------------------------


def _evaluate(args):
    from .evaluation import ranking_metrics

    if bool(args.test) == bool(args.leave_one_out):
        raise UserError("give exactly one of --test FILE and --leave-one-out DATA")
    if args.test and args.dataset:
        raise UserError("--dataset goes with --leave-one-out, not --test")
    args.data = args.leave_one_out if isinstance(args.leave_one_out, str) else None
    annotator = _load_annotator(args)
    if args.test:
        train, test = annotator.user_items, _read_test_pairs(annotator, args)
        model = annotator.model
        how = f"saved model on {args.test}"
    else:
        model, train, test, how = _fit_leave_one_out(annotator, args)
    metrics = ranking_metrics(model, train, test, K=args.k, show_progress=not args.quiet)
    _write_metrics(metrics, how, args)
    return 0


def _read_test_pairs(annotator, args):
    """The test pairs as a CSR matrix over the model's images and labels."""
    if annotator.user_items is None:
        raise ValueError(f"{args.model} holds no training labels; --test needs them")
    data = _read_pair_file(args, args.test, "test file")
    rows = annotator._images.positions(list(data.image_ids))
    columns = annotator.label_index(list(data.label_ids), missing="ignore")
    pairs = data.user_items.tocoo()
    keep = (rows[pairs.row] >= 0) & (columns[pairs.col] >= 0)
    if not keep.all():
        if not args.skip_unknown:
            unknown_images = np.flatnonzero(rows < 0)
            if unknown_images.size:
                _raise_in(args.test, annotator.image_index, [data.image_ids[unknown_images[0]]])
            _raise_in(args.test, annotator.label_index,
                      [data.label_ids[np.flatnonzero(columns < 0)[0]]])
        warnings.warn(f"{args.test}: left out {int(np.count_nonzero(~keep)):,} pair(s) whose "
                      f"image or label the model does not know")
    test = sp.csr_matrix(
        (np.ones(int(keep.sum()), dtype=np.float32),
         (rows[pairs.row[keep]], columns[pairs.col[keep]])),
        shape=annotator.user_items.shape,
    )
    if test.nnz == 0:
        raise ValueError(f"{args.test} has no pair of a training image and a known label")
    overlap = annotator.user_items.multiply(test).tocoo()
    if overlap.nnz:
        image = annotator.image_ids[overlap.row[0]].item()
        label = annotator.label_ids[overlap.col[0]].item()
        raise ValueError(
            f"{args.test}: {overlap.nnz:,} test pair(s) are training labels of the model, e.g. "
            f"image {image!r} label {label!r}; test pairs must be held out of the data given to "
            f"'fit' (or use --leave-one-out)"
        )
    return test


def _fit_leave_one_out(annotator, args):
    from .adapters import leave_one_out_split
    from .model import VSEEns

    dataset, description = _read_dataset(args)
    train, test = leave_one_out_split(dataset, random_state=args.seed)
    if test.nnz == 0:
        raise ValueError(f"{description} has no image with two labels: nothing to hold out")
    saved = annotator.model
    params = {name: getattr(saved, name) for name in _model_defaults() if hasattr(saved, name)}
    model = VSEEns(**params)
    _note(args, f"Leave-one-out on {description}: {dataset.n_images:,} images x "
          f"{dataset.n_labels:,} labels, {test.nnz:,} held-out labels; fitting a fresh model "
          f"with the saved model's parameters")
    model.fit(train, show_progress=not args.quiet)
    return model, train, test, f"leave-one-out on {description}, split seed {args.seed}"


def _write_metrics(metrics, how, args):
    if args.output_format == "json":
        text = json.dumps({"evaluated": how, **metrics}, indent=2) + "\n"
    else:
        lines = [f"{how}: {metrics['n_images']:,} images"]
        for name, value in metrics.items():
            if name != "n_images":
                lines.append(f"  {name:<14} {value:.4f}")
        text = "\n".join(lines) + "\n"
    with _open_output(args.output) as handle:
        handle.write(text)


# -- demo -----------------------------------------------------------------------------------------


def _demo(args):
    from .adapters import generate_image_labels, leave_one_out_split, load_dataset
    from .evaluation import ranking_metrics
    from .model import VSEEns

    name = args.dataset or ("delicious" if args.data_dir else None)
    if name in (None, "generated"):
        dataset = generate_image_labels(
            n_images=args.images,
            n_labels=args.labels,
            labels_per_image=args.labels_per_image,
            random_state=args.seed,
        )
        source = "Generated"
    else:
        dataset = load_dataset(name, args.data_dir)
        source = f"Read {name}:"
    train, test = leave_one_out_split(dataset, random_state=args.seed)
    print(
        f"{source} {dataset.n_images:,} images x {dataset.n_labels:,} labels with "
        f"{dataset.n_pairs:,} pairs; one label of each image with two or more is held out "
        f"({test.nnz:,} test labels)."
    )
    models = {
        "VSE-ens (adaptive + hinge)": VSEEns(
            factors=args.factors, iterations=args.epochs, num_threads=args.threads,
            random_state=args.seed,
        ),
        "WARP (uniform)": VSEEns(
            # WARP's validation-chosen setting (benchmarks/results/defaults.md)
            factors=args.factors, iterations=args.epochs, loss="warp", sampler="uniform",
            learning_rate=0.003, regularization=0.03, num_threads=args.threads,
            random_state=args.seed,
        ),
    }
    rows = []
    for label, model in models.items():
        print(f"\nTraining {label}")
        started = time.perf_counter()
        model.fit(train, show_progress=True)
        seconds = time.perf_counter() - started
        metrics = ranking_metrics(model, train, test, K=(5,))
        rows.append((label, metrics["precision@5"], metrics["recall@5"], metrics["map"], seconds))

    print(f"\n{'model':<28} {'P@5':>7} {'R@5':>7} {'MAP':>7} {'seconds':>8}")
    for label, precision, recall, mean_ap, seconds in rows:
        print(f"{label:<28} {precision:7.4f} {recall:7.4f} {mean_ap:7.4f} {seconds:8.1f}")

    model = models["VSE-ens (adaptive + hinge)"]
    images = np.flatnonzero(np.diff(test.indptr))[: args.examples]
    names = dataset.label_names
    ids, _ = model.recommend(images, train[images], N=5)
    for image, suggested in zip(images, np.atleast_2d(ids)):
        held_out = names[test[image].indices]
        known = names[train[image].indices]
        print(f"\nimage {dataset.image_ids[image]}: known labels {', '.join(map(str, known))}")
        print(f"  held out: {', '.join(map(str, held_out))}")
        print(f"  VSE-ens suggests: {', '.join(map(str, names[suggested]))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
