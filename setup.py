"""Build hook for the one compiled piece: the runtime's int8 scan kernel (``runtime/_l2scan.c``).

Everything else is configured in pyproject.toml. The extension is optional: without a C compiler
the install still succeeds and search uses the onnxruntime kernel (``edgereid.runtime.native_scan``).
It is plain C loaded with ctypes, so it has no Python ABI beyond its file name.
"""

import sys

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "edgereid.runtime._l2scan",
            sources=["runtime/_l2scan.c"],
            extra_compile_args=[] if sys.platform == "win32" else ["-O3"],
            optional=True,
        )
    ]
)
