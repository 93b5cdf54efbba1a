"""The ``vse-recsys`` command line (also ``python -m vse_recsys``).

Commands: ``demo`` (VSEEns, the paper's VSE-ens and EASE, generated or real data), ``fit`` (a
dataset in any adapter format to a saved model), ``tag`` (top-N labels for known or new images,
on Dask for a Parquet dataset), ``evaluate`` (the paper's metrics). ``vse-recsys COMMAND --help``
lists each command's options.

Errors a user can make (a missing file, a bad option value, an unknown image ID or label, a
malformed data file) are reported as one line on stderr, ``vse-recsys: error: ...``, with exit
status 2 for a wrong command line and 1 otherwise; ``--debug`` shows the traceback instead.
"""

import argparse
import csv
import io
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from . import __version__
from .adapters.datasets import DATASETS
from .adapters.formats import FORMATS, guess_format, read_any

#: --format auto's rules, as guess_format states them (one home: its docstring)
_AUTO_RULES = " ".join(guess_format.__doc__.split("\n\n")[1].replace("``", "").split())


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


def _non_negative_int(text):
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
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


def _add_dataset_options(group, *, positional_help=None):
    """DATA, --format, --dataset, --data-dir, and every option of every format's reader."""
    if positional_help:
        group.add_argument("data", nargs="?", metavar="DATA", help=positional_help)
    group.add_argument("--format", choices=("auto", *FORMATS), default="auto",
                       help=f"format of DATA (default: auto: {_AUTO_RULES})")
    group.add_argument("--dataset", metavar="NAME",
                       help="instead of DATA, one of the shared datasets by name: "
                       f"{', '.join(DATASETS)} (read from --data-dir)")
    group.add_argument("--data-dir", metavar="DIR",
                       help="folder of the shared datasets (default: $VSE_RECSYS_DATA, else "
                       "../shared/data)")
    _add_format_options(group, FORMATS.values())


def _add_format_options(group, formats, *, what=None):
    """The options of these formats' readers, as ``--name`` (a boolean that defaults to True
    as ``--no-name``). Each defaults to None, so that the reader's own default applies and
    :func:`_format_options` can tell which options were given."""
    for data_format in formats:
        for option in data_format.options:
            flag = option.name.replace("_", "-")
            text = f"{what or data_format.name}: {option.help}"
            if option.type is bool:
                group.add_argument(f"--no-{flag}", dest=option.name, action="store_false",
                                   default=None, help=f"{text}: say that it has not")
                continue
            shown = "" if option.default is None else f" (default {option.default})"
            group.add_argument(f"--{flag}", dest=option.name, type=option.type, default=None,
                               choices=option.choices, metavar=option.metavar,
                               help=text + shown)


def _format_options(args, name):
    """The reader options given on the command line for format ``name``; an option of another
    format is a mistake (it would be ignored), not silently dropped."""
    given = {
        option.name: (data_format.name, getattr(args, option.name))
        for data_format in FORMATS.values()
        for option in data_format.options
        if getattr(args, option.name, None) is not None
    }
    allowed = {option.name for option in FORMATS[name].options}
    for option, (owner, _) in given.items():
        if option not in allowed:
            flag = f"--no-{option}" if option == "header" else f"--{option.replace('_', '-')}"
            raise UserError(f"{flag} is an option of the {owner} format, but the data is read "
                            f"as {name}")
    return {option: value for option, (_, value) in given.items()}


def _seed(text):
    """A seed option: an integer from 0 to 2**63 - 1 (what a model file can store)."""
    from ._validation import MAX_SEED

    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"expected an integer from 0 to 2**63 - 1, got {text!r}")
    return value


#: --model values and the class each builds
MODEL_NAMES = {"vse-ens": "VSEEns", "ease": "EASE"}

# model parameters as `fit` options: (option, parameter, type, help); each model takes those of
# its constructor's parameters (VSEEns all, EASE --regularization, --threads, --dtype). A type
# of `bool` makes a --flag / --no-flag pair.
_MODEL_OPTIONS = (
    ("--factors", "factors", _positive_int, "dimension k of the label (and image) vectors"),
    ("--learning-rate", "learning_rate", float, "step size (AdaGrad's base rate, or SGD's step)"),
    ("--regularization", "regularization", float,
     "VSE-ens: L2 weight decay; EASE: lambda, the L2 penalty on the label-label weights"),
    ("--iterations", "iterations", int,
     "most epochs (passes over every pair); early stopping may stop sooner"),
    ("--loss", "loss", str, "warp, hinge (VSE-ens) or bpr"),
    ("--sampler", "sampler", str, "hinge / BPR negatives: uniform or adaptive (VSE-ens)"),
    ("--image-vectors", "image_vectors", str,
     "labels: composed from the image's labels; free: learned per image (the paper's); "
     "labels+free: both"),
    ("--label-bias", "label_bias", bool, "a per-label bias in the score"),
    ("--composition-exponent", "composition_exponent", float,
     "alpha: a sum of m label inputs is scaled by m^-alpha"),
    ("--label-dropout", "label_dropout", float,
     "chance a label is left out of an image's sum in one visit"),
    ("--learning-schedule", "learning_schedule", str, "adagrad or sgd"),
    ("--early-stopping", "early_stopping", bool,
     "hold out labels and keep the epoch whose held-out MAP is best"),
    ("--validation-fraction", "validation_fraction", float,
     "early stopping: share of the images with two or more labels that hold one out"),
    ("--n-iter-no-change", "n_iter_no_change", _positive_int,
     "early stopping: epochs without improvement before stopping"),
    ("--margin", "margin", float, "hinge / WARP margin"),
    ("--rank-decay", "rank_decay", float,
     "adaptive sampler's lambda as a fraction of the label count"),
    ("--refresh-interval", "refresh_interval", int,
     "sampled pairs between refreshes of the adaptive sampler (default: n_labels ln n_labels)"),
    ("--max-sampled", "max_sampled", int, "WARP: most draws per positive pair"),
    ("--candidates", "candidates", int,
     "hinge / BPR: negatives drawn per pair, the highest-scoring one is used"),
    ("--verify-negative-samples", "verify_negative_samples", bool,
     "redraw sampled labels that are positives of the image"),
    ("--init-scale", "init_scale", float, "standard deviation of the initial vectors"),
    ("--fold-in-iterations", "fold_in_iterations", int,
     "free image vectors: passes over a new image's labels when it is folded in"),
    ("--threads", "num_threads", _non_negative_int,
     "threads; 0 = every core this process may use"),
    ("--seed", "random_state", _seed, "random seed (default: none, a fresh seed every run)"),
    ("--dtype", "dtype", str, "float32 or float64 vectors"),
)


def _model_class(name):
    from . import EASE, VSEEns

    return {"VSEEns": VSEEns, "EASE": EASE}[MODEL_NAMES[name]]


def _shown_default(value):
    return value.name if isinstance(value, np.dtype) else value


def _add_model_options(group):
    from .model import IMAGE_VECTORS, LEARNING_SCHEDULES, LOSSES, SAMPLERS

    group.add_argument("--model", choices=list(MODEL_NAMES), default="vse-ens",
                       help="vse-ens (VSEEns, the default) or ease (EASE: closed form, memory "
                       "grows with the square of the label count)")
    defaults = {name: _model_class(name)().get_params() for name in MODEL_NAMES}
    choices = {"loss": sorted(LOSSES), "sampler": sorted(SAMPLERS),
               "image_vectors": list(IMAGE_VECTORS), "learning_schedule": list(LEARNING_SCHEDULES),
               "dtype": ["float32", "float64"]}
    for option, name, kind, help_text in _MODEL_OPTIONS:
        shown = [f"{model} {_shown_default(values[name])}" for model, values in defaults.items()
                 if name in values and values[name] is not None]
        help_text += f" (default: {', '.join(shown)})" if shown else ""
        # no argparse default: the chosen model's own default applies (see _model_params)
        if kind is bool:
            group.add_argument(option, dest=name, action=argparse.BooleanOptionalAction,
                               default=None, help=help_text)
            continue
        metavar = None if name in choices else {int: "N", float: "X"}.get(kind, "N")
        group.add_argument(option, dest=name, type=kind, default=None, metavar=metavar,
                           choices=choices.get(name), help=help_text)


def _demo_parser(commands):
    demo = commands.add_parser(
        "demo",
        help="VSEEns, the paper's VSE-ens and EASE side by side (generated data, or a real "
        "dataset)",
        description="Hold out one label per image of a dataset (generated with planted "
        "structure, or a real one with --dataset / --data-dir), train VSEEns as shipped, the "
        "VSE-ens paper's configuration (VSEEns.paper()) and EASE on the rest, and compare how "
        "well each ranks the held-out labels.",
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
    demo.add_argument("--epochs", type=_positive_int, default=None,
                      help="most epochs of the two VSE-ens models (default: each its own, "
                      "VSEEns 100 with early stopping, the paper's 50)")
    demo.add_argument("--threads", type=_non_negative_int, default=0,
                      help="0: every available core")
    demo.add_argument("--seed", type=_seed, default=0)
    demo.add_argument("--examples", type=_non_negative_int, default=3,
                      help="images to show with their labels")
    demo.set_defaults(run=_demo)


def _fit_parser(commands):
    fit = commands.add_parser(
        "fit",
        help="train a model on a dataset and save it (with its image IDs and label names)",
        description="Read a dataset, train VSEEns (or EASE, --model ease) on all of it, and "
        "save the model with the image IDs, label IDs and names and the training labels in one "
        ".npz file (no pickle) for 'tag' and 'evaluate'.",
        epilog="example: vse-recsys fit pairs.csv -o model.npz --seed 0",
    )
    data = fit.add_argument_group("data")
    _add_dataset_options(data, positional_help="the data file or folder")
    fit.add_argument("-o", "--output", required=True, metavar="MODEL",
                     help="where to save the model (.npz appended when missing)")
    fit.add_argument("-q", "--quiet", action="store_true",
                     help="no progress bar and no summary")
    _add_model_options(fit.add_argument_group("model parameters"))
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
    inputs.add_argument("--pairs-parquet", metavar="DIR",
                        help="new images as a Parquet dataset of (image, label) pairs, a folder "
                        "of part files partitioned by image: tagged on Dask (needs the dask "
                        "extra), written as Parquet parts to --output DIR")
    _add_format_options(inputs, [FORMATS["pairs"]], what="--labels-file / --pairs-parquet")
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
    tag.add_argument("--scheduler", metavar="ADDRESS",
                     help="--pairs-parquet: the Dask scheduler to run on (default: a local "
                     "cluster of this machine's cores)")
    tag.add_argument("--threads", type=_non_negative_int, default=None, metavar="N",
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
    _add_dataset_options(mode)
    options = evaluate.add_argument_group("metrics and output")
    options.add_argument("-k", "--k", dest="k", type=_cutoffs, default=(5, 10), metavar="K,...",
                         help="cut-offs for P@k, R@k, NDCG@k (default 5,10)")
    options.add_argument("--seed", type=_seed, default=0, metavar="N",
                         help="--leave-one-out: seed of the split (default 0); the fit uses the "
                         "saved model's seed")
    options.add_argument("--threads", type=_non_negative_int, default=None, metavar="N",
                         help="threads (default: the model's setting)")
    options.add_argument("--output-format", choices=("text", "json"), default="text",
                         help="text table (default) or one JSON object")
    options.add_argument("-o", "--output", default="-", metavar="FILE",
                         help="where to write ('-': stdout, the default)")
    options.add_argument("-q", "--quiet", action="store_true",
                         help="no progress bar and no notes on stderr")
    evaluate.set_defaults(run=_evaluate)


# -- reading datasets -----------------------------------------------------------------------------


def _read_dataset(args):
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
    name = args.format
    if name == "auto" and Path(args.data).exists():
        name = guess_format(args.data)
    options = _format_options(args, name) if name in FORMATS else {}
    progress = not getattr(args, "quiet", False)
    return read_any(args.data, name, show_progress=progress, **options), \
        f"{args.data} ({name} format)"


def _read_pairs(args, path):
    """A file of (image, label) pairs (--labels-file, --test), with the pairs options given."""
    return read_any(path, "pairs", **_format_options(args, "pairs"))


def _model_params(args):
    """The chosen model's parameters: its defaults, with the options given on top. An option
    the model does not take is a mistake, not silently ignored."""
    model_class = _model_class(args.model)
    params = model_class().get_params()
    names = [name for _, name, *_ in _MODEL_OPTIONS]
    flags = {name: option.replace("--", "--[no-]") if kind is bool else option
             for option, name, kind, _ in _MODEL_OPTIONS}
    for name in names:
        value = getattr(args, name, None)
        if value is None:
            continue
        if name not in params:
            takes = ", ".join(flags[n] for n in names if n in params)
            raise UserError(f"{flags[name]} is not a parameter of --model {args.model} (it "
                            f"takes {takes})")
        params[name] = value
    if "dtype" in params:
        params["dtype"] = np.dtype(params["dtype"]).name
    return {name: value for name, value in params.items() if name in names}


# -- fit ------------------------------------------------------------------------------------------


def _fit(args):
    from .annotator import Annotator
    from .model import DivergenceError

    model = _model_class(args.model)(**_model_params(args))
    model._check_params()  # before reading any data
    output = Path(args.output)
    if output.is_dir():  # before .npz is appended: `-o FOLDER` must not write FOLDER.npz
        raise IsADirectoryError(f"cannot write {output}: it is a folder")
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
        dropped = "; ".join(f"{count:,} {reason.replace('_', ' ')}"
                            for reason, count in dataset.dropped.items() if count)
        print(f"Read {description}: {dataset.n_images:,} images x {dataset.n_labels:,} labels, "
              f"{dataset.n_pairs:,} pairs" + (f" (input rows not kept: {dropped})"
                                               if dropped else ""))
    annotator = Annotator.from_dataset(dataset, model)
    started = time.perf_counter()
    try:
        annotator.fit(show_progress=not args.quiet)
    except DivergenceError as error:
        raise DivergenceError(f"{error} Nothing was saved.") from None
    seconds = time.perf_counter() - started
    written = annotator.save(output)
    if not args.quiet:
        history = getattr(model, "fit_history", None)
        if history is None:
            print(f"Solved EASE for {dataset.n_labels:,} labels in {seconds:.1f} s")
        else:
            last = history[-1] if history else None
            health = (f"; last epoch: {last['violation_rate']:.1%} of sampled negatives "
                      f"violated the margin" if last else "")
            if model.best_iteration_ is not None:
                health += (f"; kept epoch {model.best_iteration_} (validation MAP "
                           f"{max(model.validation_scores_):.4f}, early stopping)")
            print(f"Trained {len(history)} epochs in {seconds:.1f} s{health}")
        print(f"Saved the model to {written}")
    return 0


# -- tag ------------------------------------------------------------------------------------------


def _load_annotator(args):
    from .annotator import Annotator

    annotator = Annotator.load(args.model)
    if getattr(args, "threads", None) is not None:  # (>= 0: the option's type checks it)
        annotator.model.num_threads = args.threads
    return annotator


def _read_id_lines(path):
    if path == "-":
        lines = sys.stdin.read().splitlines()
    else:
        if not Path(path).exists():
            raise FileNotFoundError(f"images file {path} does not exist")
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _split_labels(text):
    """The labels of one --labels value: comma-separated, with CSV quoting for a label that
    holds a comma (``'"sky, blue",sea'``)."""
    labels = [part.strip() for part in next(csv.reader([text], skipinitialspace=True), [])]
    labels = [label for label in labels if label]
    if not labels:
        raise UserError(f"--labels {text!r} names no label")
    return labels


def _tag(args):
    if args.pairs_parquet:
        return _tag_on_dask(args)
    if args.scheduler:
        raise UserError("--scheduler goes with --pairs-parquet")
    if not (args.image or args.images_file or args.labels or args.labels_file):
        raise UserError("nothing to tag: give --image, --images-file, --labels, --labels-file "
                        "or --pairs-parquet")
    annotator = _load_annotator(args)
    if args.fold_in_iterations is not None:
        annotator.model.fold_in_iterations = args.fold_in_iterations
    images = list(args.image) + (_read_id_lines(args.images_file) if args.images_file else [])
    new = [_split_labels(text) for text in args.labels]
    if args.labels_file:
        new.append(_read_pairs(args, args.labels_file))
    results = annotator.suggest(images, new, N=args.top, include_known=args.include_known,
                                skip_unknown=args.skip_unknown)
    _write_tags(results, args)
    return 0


def _tag_on_dask(args):
    from .distributed import tag_parquet

    if args.image or args.images_file or args.labels or args.labels_file:
        raise UserError("--pairs-parquet tags a whole dataset: give it alone, without --image, "
                        "--images-file, --labels or --labels-file")
    if args.output == "-" or args.format != "csv":
        raise UserError("--pairs-parquet writes Parquet parts: give the output folder with "
                        "--output DIR (and no --format)")
    annotator = _load_annotator(args)
    client = None
    if args.scheduler:
        from dask.distributed import Client

        client = Client(args.scheduler)
    options = _format_options(args, "pairs")
    try:
        summary = tag_parquet(annotator, args.pairs_parquet, args.output, N=args.top,
                              include_known=args.include_known, skip_unknown=args.skip_unknown,
                              image_col=options.get("image_col", "image"),
                              label_col=options.get("label_col", "label"), client=client)
    finally:
        if client is not None:
            client.close()
    _note(args, f"vse-recsys: note: tagged {summary['images']:,} images from "
          f"{summary['parts']:,} parts: {summary['rows']:,} rows in {summary['output']}")
    return 0


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
        from .annotator import TAG_COLUMNS, tags_table

        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(TAG_COLUMNS)
        for row in tags_table(results).itertuples(index=False):
            writer.writerow([*row[:-1], f"{row[-1]:.6g}"])
        text = buffer.getvalue()
    with _open_output(args.output) as handle:
        handle.write(text)


# -- evaluate -------------------------------------------------------------------------------------


def _evaluate(args):
    if bool(args.test) == bool(args.leave_one_out):
        raise UserError("give exactly one of --test FILE and --leave-one-out DATA")
    if args.test and args.dataset:
        raise UserError("--dataset goes with --leave-one-out, not --test")
    args.data = args.leave_one_out if isinstance(args.leave_one_out, str) else None
    annotator = _load_annotator(args)
    progress = not args.quiet
    if args.test:
        metrics = annotator.evaluate(_read_pairs(args, args.test), K=args.k,
                                     skip_unknown=args.skip_unknown, show_progress=progress)
        how = f"saved model on {args.test}"
    else:
        dataset, description = _read_dataset(args)
        _note(args, f"Leave-one-out on {description}: {dataset.n_images:,} images x "
              f"{dataset.n_labels:,} labels; fitting a fresh model with the saved model's "
              f"parameters")
        metrics, held_out = annotator.evaluate_leave_one_out(
            dataset, K=args.k, random_state=args.seed, show_progress=progress)
        how = (f"leave-one-out on {description}, split seed {args.seed}, {held_out:,} held-out "
               f"labels")
    _write_metrics(metrics, how, args)
    return 0


# why a metric can be undefined (NaN in the metrics dict): written as null / said in words
_UNDEFINED = {
    "auc": "undefined: no evaluated image has a negative label (every label it was not trained "
           "on is one of its test labels), so no (test, negative) pair can be ordered",
}


def _write_metrics(metrics, how, args):
    undefined = {name for name, value in metrics.items() if value != value}  # NaN
    if args.output_format == "json":  # JSON has no NaN: undefined metrics are null
        payload = {"evaluated": how,
                   **{name: None if name in undefined else value for name, value in metrics.items()}}
        text = json.dumps(payload, indent=2, allow_nan=False) + "\n"
    else:
        lines = [f"{how}: {metrics['n_images']:,} images"]
        for name, value in metrics.items():
            if name in undefined:
                lines.append(f"  {name:<14} {_UNDEFINED.get(name, 'undefined')}")
            elif name != "n_images":
                lines.append(f"  {name:<14} {value:.4f}")
        text = "\n".join(lines) + "\n"
    with _open_output(args.output) as handle:
        handle.write(text)


# -- demo -----------------------------------------------------------------------------------------


def _demo(args):
    from .adapters import generate_image_labels, leave_one_out_split, load_dataset
    from .ease import EASE
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
    common = dict(num_threads=args.threads, random_state=args.seed)
    if args.epochs is not None:
        common["iterations"] = args.epochs
    models = {
        "VSEEns()": VSEEns(**common),
        "VSE-ens, the paper's": VSEEns.paper(**common),
        "EASE()": EASE(num_threads=args.threads),
    }
    rows = []
    for label, model in models.items():
        print(f"\nTraining {label}")
        started = time.perf_counter()
        model.fit(train, show_progress=True)
        seconds = time.perf_counter() - started
        metrics = ranking_metrics(model, train, test, K=(5,))
        rows.append((label, metrics["precision@5"], metrics["recall@5"], metrics["map"], seconds))

    print(f"\n{'model':<22} {'P@5':>7} {'R@5':>7} {'MAP':>7} {'seconds':>8}")
    for label, precision, recall, mean_ap, seconds in rows:
        print(f"{label:<22} {precision:7.4f} {recall:7.4f} {mean_ap:7.4f} {seconds:8.1f}")

    model = models["VSEEns()"]
    images = np.flatnonzero(np.diff(test.indptr))[: args.examples]
    names = dataset.label_names
    ids, _ = model.recommend(images, train[images], N=5)
    for image, suggested in zip(images, np.atleast_2d(ids)):
        held_out = names[test[image].indices]
        known = names[train[image].indices]
        print(f"\nimage {dataset.image_ids[image]}: known labels {', '.join(map(str, known))}")
        print(f"  held out: {', '.join(map(str, held_out))}")
        print(f"  VSEEns suggests: {', '.join(map(str, names[suggested]))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
