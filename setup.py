"""Build the Cython kernels.

Environment switches (read at build time):

``VSE_RECSYS_BOUNDSCHECK=1``
    Compile the kernels with Cython's bounds checks on, so an out-of-bounds index raises
    IndexError instead of silently corrupting memory (used by one CI run; slower). Negative
    indices are checked too: ``wraparound`` stays off, since with it on Cython would read
    index -1 as the last row instead of reporting it (the kernels never index from the end). The
    generated C goes to ``build/boundscheck/`` instead of beside the ``.pyx``, so that a checked
    build never leaves its C file where the normal (editable) build would pick it up, and
    ``vse_recsys._sampler.BOUNDSCHECK`` tells which build is imported.
``VSE_RECSYS_NO_OPENMP=1``
    Build without OpenMP (the kernels then run on one thread).
"""

import glob
import os
import sys

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup


def _flag(name):
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _openmp_flags():
    if _flag("VSE_RECSYS_NO_OPENMP"):
        return [], []
    if sys.platform == "darwin":  # Apple clang needs libomp from Homebrew
        return ["-Xpreprocessor", "-fopenmp"], ["-lomp"]
    if sys.platform == "win32":
        return ["/openmp"], []
    return ["-fopenmp"], ["-fopenmp"]


checked = _flag("VSE_RECSYS_BOUNDSCHECK")
compile_args, link_args = _openmp_flags()
if sys.platform != "win32":
    # -fno-math-errno: sqrt need not set errno, so AdaGrad's sqrt vectorises (results unchanged)
    compile_args += ["-O3", "-fno-math-errno"]

# One extension module: _sampler.pyx includes the .pxi files and, with _sampler.pxd, the C
# headers; listing them as depends rebuilds the module when one of them changes.
KERNEL_PARTS = sorted(glob.glob("vse_recsys/_*.pxi") + glob.glob("vse_recsys/_*.h")
                      + ["vse_recsys/_sampler.pxd"])

extensions = [
    Extension(
        "vse_recsys._sampler",
        ["vse_recsys/_sampler.pyx"],
        depends=KERNEL_PARTS,
        include_dirs=[np.get_include(), "vse_recsys"],
        define_macros=[
            ("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"),
            ("VSE_RECSYS_BOUNDSCHECK", "1" if checked else "0"),
        ],
        extra_compile_args=compile_args,
        extra_link_args=link_args,
    )
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={
            "language_level": 3,
            "boundscheck": checked,
            "wraparound": False,  # see the module notes: off, so negative indices are errors
            "initializedcheck": checked,
            "cdivision": not checked,
        },
        build_dir="build/boundscheck" if checked else None,
    )
)
