"""The documentation's code runs: every docstring example of the package and the examples/."""

import doctest
import importlib
import pkgutil
import runpy
from pathlib import Path

import pytest

import vse_recsys
import vse_recsys.adapters

REPO_ROOT = Path(__file__).resolve().parent.parent


def _modules_with_examples():
    names = []
    packages = [(vse_recsys.__path__, "vse_recsys."),
                (vse_recsys.adapters.__path__, "vse_recsys.adapters.")]  # (installed apart)
    infos = [info for path, prefix in packages for info in pkgutil.walk_packages(path, prefix)]
    for info in sorted(set(infos), key=lambda info: info.name):
        if info.name.endswith("__main__"):  # importing it runs the command
            continue
        module = importlib.import_module(info.name)
        if any(test.examples for test in doctest.DocTestFinder().find(module)):
            names.append(info.name)
    return names


MODULES = _modules_with_examples()


def test_the_package_has_docstring_examples():
    assert {"vse_recsys.annotator", "vse_recsys.evaluation",
            "vse_recsys.adapters.formats"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_tag_bookmarks_example_runs(data_dir, capsys):
    namespace = runpy.run_path(str(REPO_ROOT / "examples" / "tag_bookmarks.py"))
    namespace["main"](["--data-dir", str(data_dir), "--iterations", "5"])
    out = capsys.readouterr().out
    assert "tags most similar to" in out and "new bookmark tagged python, webdev" in out
