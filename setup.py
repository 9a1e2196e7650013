"""Build script for the compiled hot path; the package metadata lives in pyproject.toml.

The extension is required: a build without a C compiler fails here rather than falling back
silently. ``GOGATE_ANNOTATE=1`` also writes Cython's annotated HTML next to the source, and
``GOGATE_DEBUG_BUILD=1`` compiles with assertions and without optimisation.
"""

import os

from Cython.Build import cythonize
from setuptools import Extension, setup

debug = os.environ.get("GOGATE_DEBUG_BUILD") == "1"

extension = Extension(
    "gogate_fast._fast",
    ["gogate_fast/_fast.pyx"],
    extra_compile_args=["-O0", "-g"] if debug else ["-O3"],
    undef_macros=["NDEBUG"] if debug else [],
)

setup(
    ext_modules=cythonize(
        [extension],
        language_level=3,
        annotate=os.environ.get("GOGATE_ANNOTATE") == "1",
        compiler_directives={
            "boundscheck": debug,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": debug,
            "embedsignature": True,
        },
    ),
)
