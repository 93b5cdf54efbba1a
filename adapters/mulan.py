"""MULAN / MEKA multi-label data: an ARFF file (optionally compressed) and its label attributes.

MULAN names the label attributes in an XML file; they are exactly those, wherever they stand
among the ARFF attributes (the others are features and are ignored). MEKA has no XML: its
relation name carries the option ``-C N``, meaning the first ``N`` attributes are the labels
(``-C -N``: the last ``N``), e.g. ``@relation 'Music: -C 6'``. An ARFF file ending in ``.gz``,
``.bz2`` or ``.xz`` (as MEKA ships its datasets) is decompressed as it is read. Rows may be dense (``v1,v2,...``) or sparse
(``{index value,...}``, omitted attributes being 0), mixed in one file. Every data row becomes an
image, also rows with no label, so delicious gives 16,105 images of which 16,091 have a tag.

Attribute names may be quoted (``'a b'``, ``"a b"``) and contain backslash escapes; an ARFF name
and an XML name match when they are equal after unquoting and removing the escapes (delicious
writes ``TAG_m\\'usica`` in both files), and the label ID is that unescaped name.
"""

import operator
import re
import xml.parsers.expat
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ._tables import format_errors, open_binary
from .dataset import ImageLabels
from .errors import DatasetFormatError

__all__ = ["find_mulan_xml", "is_arff", "read_mulan", "read_mulan_labels"]

_COMPRESSED_SUFFIXES = (".gz", ".bz2", ".xz")

_QUOTED = r"""'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*\""""
_ATTRIBUTE = re.compile(rf"""@attribute\s+({_QUOTED}|[^\s'"]\S*)\s*(.*)$""", re.IGNORECASE)
# slow-path tokenizers, used only for data lines that contain quotes
_DENSE_FIELD = re.compile(rf"""\s*({_QUOTED}|[^,]*?)\s*(?:,|\Z)""")
_SPARSE_ENTRY = re.compile(rf"""\s*(\S+)\s+({_QUOTED}|[^,]*?)\s*(?:,|\Z)""")
_PLAIN_INDEX = re.compile(r"[+-]?[0-9]{1,18}")
_MEKA_LABELS = re.compile(r"(?:^|\s)-C\s+(-?[0-9]+)(?=\s|$)")
_MISSING = "?"
_SPARSE_FORM = "{index value, index value, ...}"


def _unescape(name):
    """ARFF/XML name → label ID: strip one level of quotes, then backslash escapes."""
    if len(name) >= 2 and name[0] == name[-1] and name[0] in "'\"":
        name = name[1:-1]
    return re.sub(r"\\(.)", r"\1", name)


def _read_text(path):
    """The file's text, decompressed by its suffix: UTF-8 (a byte-order mark is skipped), else
    Latin-1, which some MULAN / MEKA files use (and which decodes any bytes)."""
    with format_errors(path), open_binary(path) as handle:
        data = handle.read()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def is_arff(path):
    """Whether a file name is an ARFF file's (``.arff``, optionally ``.gz`` / ``.bz2`` / ``.xz``)."""
    suffixes = [suffix.lower() for suffix in Path(path).suffixes[-2:]]
    if suffixes and suffixes[-1] in _COMPRESSED_SUFFIXES:
        suffixes.pop()
    return bool(suffixes) and suffixes[-1] == ".arff"


def _arff_stem(path):
    """The file name without ``.arff`` (and a compression suffix)."""
    name = Path(path).name
    for suffix in _COMPRESSED_SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return name[: -len(".arff")] if name.lower().endswith(".arff") else Path(name).stem


def find_mulan_xml(arff_path, *, required=True):
    """The MULAN XML label header that goes with an ARFF file.

    Tried in order: ``<name>.xml`` beside it, the same without a ``-sparse`` / ``-train`` /
    ``-test`` ending (``Corel5k-train-sparse.arff`` → ``Corel5k.xml``), and the only ``.xml``
    file in its folder. With ``required=False`` None when there is none (a MEKA file needs
    none).

    Raises
    ------
    DatasetFormatError
        When none is found and ``required`` (the message says how to name it).
    """
    arff_path = Path(arff_path)
    stem = _arff_stem(arff_path)
    candidates = [arff_path.with_name(stem + ".xml")]
    for suffix in ("-sparse", "-train", "-test"):
        stem = stem.removesuffix(suffix)
    candidates.append(arff_path.with_name(stem + ".xml"))
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    others = sorted(arff_path.parent.glob("*.xml"))
    if len(others) == 1:
        return others[0]
    if not required:
        return None
    raise DatasetFormatError(
        arff_path, None, "no XML label header found beside it",
        f"{candidates[0].name} (or pass the XML file: xml=... / --xml FILE)",
    )


def read_mulan_labels(xml_path):
    """The label names of a MULAN XML label header, in document order.

    Hierarchical headers (``<label>`` inside ``<label>``) are flattened.

    Returns
    -------
    list of (str, int)
        Each label's name (unescaped, see module notes) and the XML line declaring it.
    """
    labels = []
    parser = xml.parsers.expat.ParserCreate()

    def start(tag, attributes):
        if tag.rsplit(":", 1)[-1] != "label":
            return
        if "name" not in attributes:
            raise DatasetFormatError(
                xml_path, parser.CurrentLineNumber, "<label> without a name", '<label name="...">'
            )
        labels.append((_unescape(attributes["name"]), parser.CurrentLineNumber))

    parser.StartElementHandler = start
    try:
        with open(xml_path, "rb") as handle:
            parser.ParseFile(handle)
    except xml.parsers.expat.ExpatError as exc:
        raise DatasetFormatError(
            xml_path,
            exc.lineno,
            f"not well-formed XML ({xml.parsers.expat.errors.messages[exc.code]})",
        ) from None
    if not labels:
        raise DatasetFormatError(xml_path, None, "no <label> elements", '<label name="...">')
    seen = {}
    for name, line in labels:
        if name in seen:
            raise DatasetFormatError(
                xml_path, line, f"label {name!r} is declared twice (first on line {seen[name]})"
            )
        seen[name] = line
    return labels


def _parse_header(lines, path):
    """Attribute names (unescaped) and the index of the first line after ``@data``."""
    names, attribute_lines = [], []
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("%"):
            continue
        keyword = line.split(None, 1)[0].lower()
        if keyword == "@relation":
            continue
        if keyword == "@data":
            if not names:
                raise DatasetFormatError(path, number, "@data before any @attribute")
            return names, attribute_lines, number
        match = _ATTRIBUTE.match(line) if keyword == "@attribute" else None
        if match is None:
            raise DatasetFormatError(
                path,
                number,
                f"unexpected {line[:40]!r}",
                "@relation, @attribute NAME TYPE or @data",
            )
        if not match.group(2):
            raise DatasetFormatError(
                path, number, "attribute without a type", "@attribute NAME TYPE"
            )
        if match.group(2).lower().startswith("relational"):
            raise DatasetFormatError(path, number, "relational attributes are not supported")
        names.append(_unescape(match.group(1)))
        attribute_lines.append(number)
    if not any(line.strip() for line in lines):
        raise DatasetFormatError(path, 1, "the file is empty", "an ARFF header and @data")
    raise DatasetFormatError(path, len(lines), "no @data line", "@data after the attributes")


def _fields(pattern, text):
    """Split one quoted data line with a slow-path tokenizer; None if it does not parse."""
    fields, position = [], 0
    while position < len(text):
        match = pattern.match(text, position)
        if match is None or match.end() == position:
            return None
        fields.append(match.groups())
        position = match.end()
    return fields


def _sparse_entries(texts, path, line_numbers):
    """(row, attribute index, value) of every entry of sparse rows ``{index value, ...}``."""
    rows, indices, values = [], [], []
    for row, text in enumerate(texts):
        quoted = "'" in text or '"' in text
        if not text.endswith("}"):
            raise DatasetFormatError(path, line_numbers[row], "no closing }", _SPARSE_FORM)
        if not quoted and "}," in text:  # "{...}, {weight}"
            raise DatasetFormatError(
                path, line_numbers[row], "instance weights are not supported", _SPARSE_FORM
            )
        body = text[1:-1]
        if quoted:  # rare: quoted values, tokenised properly
            entries = _fields(_SPARSE_ENTRY, body)
            if entries is None:
                raise DatasetFormatError(
                    path, line_numbers[row], "malformed sparse row", _SPARSE_FORM
                )
            rows.extend([row] * len(entries))
            indices.extend(index for index, _ in entries)
            values.extend(_unescape(value) for _, value in entries)
            continue
        tokens = body.replace(",", " ").split()
        if len(tokens) != 2 * (body.count(",") + 1) and (tokens or body.strip()):
            raise DatasetFormatError(path, line_numbers[row], "malformed sparse row", _SPARSE_FORM)
        rows.extend([row] * (len(tokens) // 2))
        indices.extend(tokens[0::2])
        values.extend(tokens[1::2])
    rows = np.asarray(rows, dtype=np.int64)
    try:
        indices = np.asarray(indices, dtype=np.int64)
    except (ValueError, OverflowError):
        # the first index that is not a plain ASCII integer of at most 18 digits ("²" passes
        # str.isdigit, a 20-digit number overflows int64)
        bad = next(i for i, index in enumerate(indices) if not _PLAIN_INDEX.fullmatch(index))
        raise DatasetFormatError(
            path,
            line_numbers[rows[bad]],
            f"attribute index {indices[bad]!r}",
            "an integer attribute index",
        ) from None
    return rows, indices, np.asarray(values, dtype=object)


def _dense_values(lines, label_positions, n_attributes, path, line_numbers):
    """The label attributes' values of dense rows, shape (n_rows, n_labels)."""
    pick = operator.itemgetter(*label_positions)
    picked = []
    for row, line in enumerate(lines):
        if "'" in line or '"' in line:
            parsed = _fields(_DENSE_FIELD, line)
            fields = None if parsed is None else [_unescape(value) for (value,) in parsed]
        else:
            fields = line.split(",")
        if fields is None or len(fields) != n_attributes:
            count = "unparseable" if fields is None else f"{len(fields)} values"
            raise DatasetFormatError(
                path,
                line_numbers[row],
                f"dense row with {count}",
                f"{n_attributes} comma-separated values, one per @attribute",
            )
        value = pick(fields)
        picked.append(value if len(label_positions) > 1 else (value,))
    return np.char.strip(np.asarray(picked, dtype=str).reshape(len(lines), len(label_positions)))


def _label_values(values, cols, label_names, path, lines):
    """Which label values are positive and which missing; anything but 0/1/? is an error.

    ``cols[i]`` is the label column and ``lines[i]`` the ARFF line of ``values[i]``.
    """
    positive, zero, missing = values == "1", values == "0", values == _MISSING
    for position in np.flatnonzero(~(positive | zero | missing)):  # e.g. "1.0" (numeric label)
        try:
            number = float(values[position])
        except ValueError:
            number = None
        if number not in (0.0, 1.0):
            raise DatasetFormatError(
                path,
                lines[position],
                f"label {label_names[cols[position]]!r} has value {str(values[position])!r}",
                "0 or 1 (or ? for missing)",
            )
        positive[position] = number == 1.0
    return positive, missing


def read_mulan(arff_path, xml_path=None):
    """Read a MULAN / MEKA multi-label dataset (ARFF data + its label attributes).

    Parameters
    ----------
    arff_path : path-like
        The ARFF file: ``@attribute`` lines then ``@data`` rows, dense or sparse; ``.gz``,
        ``.bz2`` or ``.xz`` compressed files are read too.
    xml_path : path-like, optional
        The MULAN XML listing the label attributes (``<label name="..."/>``). Without it the
        labels come from MEKA's ``-C N`` in the relation name (see the module notes).

    Returns
    -------
    ImageLabels
        One row per data row (image IDs ``0..n-1``, row order), one column per XML label in XML
        order (label IDs = names). Missing label values (``?``) are not positives and are counted
        in ``dropped["missing_label_values"]``.

    Raises
    ------
    DatasetFormatError
        With file and line: an XML label that is no ARFF attribute, a sparse index beyond the
        declared attributes, a dense row of the wrong length, a label value other than 0/1/?;
        no XML and no usable MEKA ``-C``.
    """
    lines = _read_text(arff_path).splitlines()
    names, attribute_lines, data_line = _parse_header(lines, arff_path)
    if xml_path is None:
        labels = _meka_labels(lines, names, attribute_lines, arff_path)
        xml_path = arff_path  # where the labels were named, for messages
    else:
        labels = read_mulan_labels(xml_path)
    column_of, label_positions = _label_columns(names, attribute_lines, labels, arff_path, xml_path)
    label_names = np.array([name for name, _ in labels], dtype=object)

    # data rows: non-blank, non-comment lines after @data, each with its line number
    numbered = [
        (number, line.strip())
        for number, line in enumerate(lines[data_line:], start=data_line + 1)
        if line.strip() and not line.lstrip().startswith("%")
    ]
    line_numbers = np.array([number for number, _ in numbered], dtype=np.int64)
    texts = [text for _, text in numbered]
    is_sparse = np.array([text.startswith("{") for text in texts], dtype=bool)
    sparse_rows, dense_rows = np.flatnonzero(is_sparse), np.flatnonzero(~is_sparse)

    # (row, label column, value) of every label value, from both kinds of rows
    local, indices, sparse_values = _sparse_entries(
        [texts[row] for row in sparse_rows], arff_path, line_numbers[sparse_rows]
    )
    out_of_range = np.flatnonzero((indices < 0) | (indices >= len(names)))
    if out_of_range.size:
        bad = out_of_range[0]
        raise DatasetFormatError(
            arff_path,
            line_numbers[sparse_rows[local[bad]]],
            f"attribute index {indices[bad]} is not declared",
            f"indices 0..{len(names) - 1} (the header declares {len(names)} attributes)",
        )
    is_label = column_of[indices] >= 0
    dense_values = _dense_values(
        [texts[row] for row in dense_rows],
        label_positions,
        len(names),
        arff_path,
        line_numbers[dense_rows],
    )
    rows = np.concatenate([sparse_rows[local[is_label]], np.repeat(dense_rows, len(labels))])
    cols = np.concatenate(
        [column_of[indices[is_label]], np.tile(np.arange(len(labels)), len(dense_rows))]
    )
    values = np.concatenate([sparse_values[is_label], dense_values.ravel()]).astype(str)

    positive, missing = _label_values(values, cols, label_names, arff_path, line_numbers[rows])
    matrix = sp.csr_matrix(
        (np.ones(np.count_nonzero(positive), dtype=np.float32), (rows[positive], cols[positive])),
        shape=(len(texts), len(labels)),
    )
    dropped = {"missing_label_values": int(np.count_nonzero(missing))}
    return ImageLabels(matrix, None, label_names, dropped=dropped, source=arff_path, copy=False)


def _meka_labels(lines, names, attribute_lines, path):
    """The label attributes MEKA's ``-C N`` option (in the relation name) declares, as
    ``(name, line)`` pairs like :func:`read_mulan_labels` gives."""
    relation, found = None, None
    for number, line in enumerate(lines, start=1):
        if line.strip().lower().startswith("@relation"):
            relation = number
            found = _MEKA_LABELS.search(_unescape(line.strip()[len("@relation"):].strip()))
            break
    if found is None:
        raise DatasetFormatError(
            path, relation, "no label attributes named: no XML label header and no MEKA '-C N' "
            "in @relation", "a MULAN XML file (xml=... / --xml FILE) or a MEKA relation such "
            "as @relation 'name: -C 6'",
        )
    count = int(found.group(1))
    if count == 0 or abs(count) > len(names):
        raise DatasetFormatError(
            path, relation, f"MEKA '-C {count}' names {abs(count)} label attributes, but the "
            f"header declares {len(names)} attributes", f"-C between 1 and {len(names)} (or "
            f"-1 and -{len(names)} for the last ones)",
        )
    chosen = range(count) if count > 0 else range(len(names) + count, len(names))
    return [(names[k], attribute_lines[k]) for k in chosen]


def _label_columns(names, attribute_lines, labels, arff_path, xml_path):
    """Each ARFF attribute's label column (XML order) or -1, and each label's attribute."""
    position = {}
    for name, line in zip(names, attribute_lines):
        if name in position:
            raise DatasetFormatError(arff_path, line, f"attribute {name!r} is declared twice")
        position[name] = len(position)
    column_of = np.full(len(names), -1, dtype=np.int64)
    for column, (name, line) in enumerate(labels):
        if name not in position:
            raise DatasetFormatError(
                xml_path,
                line,
                f"label {name!r} is not an attribute of {arff_path}",
                "every XML label to be declared with @attribute in the ARFF file",
            )
        column_of[position[name]] = column
    return column_of, [position[name] for name, _ in labels]
