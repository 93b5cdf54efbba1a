"""Tests for ``read_mulan``: MULAN/MEKA ARFF + XML, dense and sparse rows, and bad input."""

import re

import numpy as np
import pytest
from hypothesis import given
from strategies import mulan_datasets, write_mulan

from vse_recsys.adapters import DatasetFormatError, read_mulan, read_mulan_labels

XML_HEAD = (
    '<?xml version="1.0" encoding="utf-8"?>\n<labels xmlns="http://mulan.sourceforge.net/labels">\n'
)


def write(tmp_path, arff_text, label_names=("sky", "sea"), xml_text=None):
    arff, xml = tmp_path / "d.arff", tmp_path / "d.xml"
    arff.write_text(arff_text)
    labels = "".join(f'<label name="{name}"></label>\n' for name in label_names)
    xml.write_text(xml_text if xml_text is not None else XML_HEAD + labels + "</labels>\n")
    return arff, xml


def expect_error(arff, xml, path, line, message):
    """read_mulan raises a DatasetFormatError naming `path` and `line`, matching `message`."""
    with pytest.raises(DatasetFormatError) as caught:
        read_mulan(arff, xml)
    error = caught.value
    assert (error.path, error.line) == (str(path), line)
    where = f"{path}, line {line}: " if line is not None else f"{path}: "
    assert str(error).startswith(where)
    assert re.search(message, str(error)), str(error)


HEADER = """@relation t
@attribute f0 numeric
@attribute sky {0,1}
@attribute 'f 1' {a,b}
@attribute sea {0,1}
@data
"""


@given(mulan_datasets())
def test_reads_what_was_written_dense_sparse_and_mixed(tmp_path_factory, dataset):
    names, label_names, labels, sparse_rows = dataset
    arff, xml = write_mulan(tmp_path_factory.mktemp("mulan"), *dataset)
    data = read_mulan(arff, xml)
    assert list(data.label_ids) == [name.replace("\\'", "'") for name in label_names]
    assert data.n_images == len(labels)  # rows without labels are kept
    assert data.user_items.toarray().tolist() == labels.astype(np.float32).tolist()
    assert list(data.image_ids) == list(range(len(labels)))


def test_label_attributes_are_those_of_the_xml_wherever_they_stand(tmp_path):
    arff, xml = write(tmp_path, HEADER + "1.5,1,a,0\n{1 0,3 1}\n{}\n0,1,'b',1\n")
    data = read_mulan(arff, xml)
    assert list(data.label_ids) == ["sky", "sea"]
    assert data.user_items.toarray().tolist() == [[1, 0], [0, 1], [0, 0], [1, 1]]
    assert data.labels_per_image.tolist() == [1, 1, 0, 2]
    assert data.source == str(arff)


def test_columns_follow_the_xml_order(tmp_path):
    arff, xml = write(tmp_path, HEADER + "0,1,a,0\n", label_names=("sea", "sky"))
    assert read_mulan(arff, xml).user_items.toarray().tolist() == [[0, 1]]


def test_escaped_and_quoted_names_match_between_arff_and_xml(tmp_path):
    # as in the real delicious files: the same backslash-escaped quote in ARFF and XML
    text = (
        "@relation 'a relation'\n"
        "@attribute TAG_m\\'usica {0,1}\n"
        '@ATTRIBUTE "two words" {0,1}\n'
        "@attribute 'it\\'s' {0,1}\n"
        "@data\n{0 1,2 1}\n1,1,0\n"
    )
    arff, xml = write(tmp_path, text, label_names=("TAG_m\\'usica", "two words", "it's"))
    data = read_mulan(arff, xml)
    assert list(data.label_ids) == ["TAG_m'usica", "two words", "it's"]
    assert data.user_items.toarray().tolist() == [[1, 0, 1], [1, 1, 0]]


def test_quoted_values_with_commas_in_dense_and_sparse_rows(tmp_path):
    text = (
        "@attribute title string\n@attribute sky {0,1}\n@attribute sea {0,1}\n@data\n"
        "'a, b',1,0\n{0 'x, \\'y\\'',2 1}\n\"c,d\",0,'1'\n"
    )
    arff, xml = write(tmp_path, text)
    assert read_mulan(arff, xml).user_items.toarray().tolist() == [[1, 0], [0, 1], [0, 1]]


def test_missing_label_values_are_counted_not_positive(tmp_path):
    arff, xml = write(tmp_path, HEADER + "0,?,a,1\n{1 ?,3 ?}\n% a comment line\n\n0,1,a,1.0\n")
    data = read_mulan(arff, xml)
    assert data.user_items.toarray().tolist() == [[0, 1], [0, 0], [1, 1]]
    assert data.dropped == {"missing_label_values": 3}
    assert "3 missing_label_values" in str(data.summary())


def test_hierarchical_xml_labels_are_flattened(tmp_path):
    xml_text = XML_HEAD + '<label name="sky"><label name="sea"/></label>\n</labels>\n'
    arff, xml = write(tmp_path, HEADER + "0,1,a,1\n", xml_text=xml_text)
    assert read_mulan_labels(xml) == [("sky", 3), ("sea", 3)]
    assert read_mulan(arff, xml).n_labels == 2


# -- bad input ----------------------------------------------------------------------------------


def test_xml_label_not_in_the_arff(tmp_path):
    arff, xml = write(tmp_path, HEADER + "0,1,a,0\n", label_names=("sky", "sun"))
    expect_error(arff, xml, xml, 4, r"label 'sun' is not an attribute of .*d\.arff")


def test_sparse_index_the_header_does_not_declare(tmp_path):
    arff, xml = write(tmp_path, HEADER + "0,1,a,0\n{1 1,7 1}\n")
    expect_error(arff, xml, arff, 8, r"attribute index 7 is not declared; expected indices 0..3")


def test_dense_row_of_the_wrong_length(tmp_path):
    arff, xml = write(tmp_path, HEADER + "0,1,a,0\n\n0,1,a\n")
    expect_error(arff, xml, arff, 9, r"dense row with 3 values; expected 4 comma-separated")


@pytest.mark.parametrize(
    "row, message",
    [
        ("0,2,a,0", r"label 'sky' has value '2'; expected 0 or 1 \(or \? for missing\)"),
        ("{3 yes}", r"label 'sea' has value 'yes'"),
        ("{1 1,x 1}", r"attribute index 'x'; expected an integer"),
        ("{1 1,3}", r"malformed sparse row"),
        ("{1 1,3 1", r"no closing \}"),
        ("{1 1}, {2}", r"instance weights are not supported"),
    ],
)
def test_bad_data_rows(tmp_path, row, message):
    arff, xml = write(tmp_path, HEADER + "0,1,a,0\n" + row + "\n")
    expect_error(arff, xml, arff, 8, message)


@pytest.mark.parametrize(
    "text, line, message",
    [
        ("", 1, r"the file is empty"),
        ("\n\n", 1, r"the file is empty"),
        ("@relation r\n@attribute sky {0,1}\n", 2, r"no @data line"),
        ("@relation r\n@data\n", 2, r"@data before any @attribute"),
        ("@relation r\n@attribute sky\n@data\n", 2, r"attribute without a type"),
        ("@relation r\nsky {0,1}\n@data\n", 2, r"unexpected 'sky \{0,1\}'; expected @relation"),
        ("@attribute sky {0,1}\n@attribute sky {0,1}\n@data\n", 2, r"'sky' is declared twice"),
    ],
)
def test_bad_headers(tmp_path, text, line, message):
    arff, xml = write(tmp_path, text, label_names=("sky",))
    expect_error(arff, xml, arff, line, message)


@pytest.mark.parametrize(
    "xml_text, line, message",
    [
        (XML_HEAD + '<label name="sky">\n</labels>\n', 4, r"not well-formed XML"),
        (XML_HEAD + "</labels>\n", None, r"no <label> elements"),
        (XML_HEAD + "<label/>\n</labels>\n", 3, r"<label> without a name"),
        (XML_HEAD + '<label name="sky"/>\n<label name="sky"/>\n</labels>', 4, r"declared twice"),
        ("", 1, r"not well-formed XML"),
    ],
)
def test_bad_xml(tmp_path, xml_text, line, message):
    arff, xml = write(tmp_path, HEADER, xml_text=xml_text)
    expect_error(arff, xml, xml, line, message)


def test_latin1_files_are_read(tmp_path):
    arff, xml = tmp_path / "l.arff", tmp_path / "l.xml"
    arff.write_bytes("@attribute caf\xe9 {0,1}\n@data\n1\n".encode("latin-1"))
    xml.write_text(XML_HEAD + '<label name="caf\xe9"/></labels>', encoding="utf-8")
    assert list(read_mulan(arff, xml).label_ids) == ["caf\xe9"]


# -- MEKA and compressed files ------------------------------------------------------------------

MEKA = """@relation 'Tiny: -C 2'
@attribute sky {0,1}
@attribute sea {0,1}
@attribute f1 {0,1}
@data
1,0,1
{1 1,2 1}
0,0,0
"""


def test_meka_minus_c_names_the_first_attributes_as_labels(tmp_path):
    path = tmp_path / "tiny.arff"
    path.write_text(MEKA)
    data = read_mulan(path)
    assert list(data.label_ids) == ["sky", "sea"]
    assert data.user_items.toarray().tolist() == [[1, 0], [0, 1], [0, 0]]
    path.write_text(MEKA.replace("-C 2", "-C -1"))  # the last attribute (f1) is the label
    last = read_mulan(path)
    assert list(last.label_ids) == ["f1"]
    assert last.user_items.toarray().ravel().tolist() == [1, 1, 0]


def test_meka_without_minus_c_and_without_xml_is_explained(tmp_path):
    path = tmp_path / "plain.arff"
    path.write_text(MEKA.replace("'Tiny: -C 2'", "Tiny"))
    with pytest.raises(DatasetFormatError, match=r"plain.arff, line 1: .*no MEKA '-C N'"):
        read_mulan(path)
    path.write_text(MEKA.replace("-C 2", "-C 9"))
    with pytest.raises(DatasetFormatError, match="names 9 label attributes, but the header "
                                                 "declares 3"):
        read_mulan(path)


@pytest.mark.parametrize("suffix, opener", [(".gz", "gzip"), (".bz2", "bz2"), (".xz", "lzma")])
def test_compressed_arff_is_read_as_the_plain_file(tmp_path, suffix, opener):
    import importlib

    from vse_recsys.adapters import read_any

    plain = tmp_path / "tiny.arff"
    plain.write_text(MEKA)
    packed = tmp_path / f"packed.arff{suffix}"
    with importlib.import_module(opener).open(packed, "wt") as handle:
        handle.write(MEKA)
    expected = read_mulan(plain)
    for data in (read_mulan(packed), read_any(packed)):  # auto: a compressed .arff is mulan
        assert (data.user_items != expected.user_items).nnz == 0
        assert list(data.label_ids) == list(expected.label_ids)
    packed.write_bytes(b"\x1f\x8b\x08garbage" if suffix == ".gz" else b"garbage")
    with pytest.raises(DatasetFormatError, match="damaged|not compressed"):
        read_mulan(packed)
