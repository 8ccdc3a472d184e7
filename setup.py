"""Build the C hot paths of hashwatch.index and the keypoint index; everything else is declared in pyproject.toml."""

import platform
import sys

from setuptools import Extension, setup

# -O3 with popcount only (not -march=native) so wheels run on any x86-64 with POPCNT.
if sys.platform == "win32":
    extra_compile_args = ["/O2"]
elif platform.machine().lower() in ("x86_64", "amd64", "i386", "i686"):
    extra_compile_args = ["-O3", "-mpopcnt"]
else:
    extra_compile_args = ["-O3"]

setup(
    ext_modules=[
        Extension(
            "hashwatch._mih",
            sources=["src/hashwatch/_mih.c"],
            extra_compile_args=extra_compile_args,
        ),
        Extension(
            "hashwatch._kpidx",
            sources=["src/hashwatch/_kpidx.c"],
            extra_compile_args=extra_compile_args,
        ),
    ]
)
