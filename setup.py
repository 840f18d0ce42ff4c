"""Build bitcl's C kernels (kernels/bitops.c) into the extension bitcl.kernels._bitops.

Metadata lives in pyproject.toml; this file only adds the extension and the package
list (the top-level kernels/ folder ships as bitcl.kernels). ``pip install .``,
``pip install -e .`` and ``python -m build`` all compile it, so nothing is compiled
when bitcl runs.

* OpenMP: the compiler is probed for ``-fopenmp`` (``/openmp`` with MSVC); when
  it cannot compile and link an OpenMP program the kernels are built
  single-threaded and the build says so. ``BITCL_OPENMP=0`` forces that build.
  ``bitcl.kernels.build_info()`` reports which one was built.
* No ``-march=native``: a wheel may move between machines. On x86-64 the hot loops
  are compiled a second time for AVX2 and picked at run time (kernels/bitops.c).
* The extension is optional: without a working C compiler the install still
  succeeds, and bitcl falls back to the torch reference kernels with a notice.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

OPENMP_PROBE = """
#include <omp.h>
int main(void) {
    int n = 0;
#pragma omp parallel reduction(+ : n)
    n += 1;
    return omp_get_max_threads() > 0 && n > 0 ? 0 : 1;
}
"""


def _say(message: str) -> None:
    print(f"bitcl build: {message}", file=sys.stderr)


class BuildKernels(build_ext):
    """build_ext that picks optimisation and OpenMP flags for the compiler at hand."""

    def _compiles(self, source: str, flags: list[str]) -> bool:
        """Whether ``source`` compiles and links with ``flags`` (a throw-away build in a temp dir)."""
        tmp = tempfile.mkdtemp(prefix="bitcl-probe-")
        try:
            path = os.path.join(tmp, "probe.c")
            with open(path, "w") as f:
                f.write(source)
            objects = self.compiler.compile([path], output_dir=tmp, extra_postargs=flags)
            self.compiler.link_executable(objects, "probe", output_dir=tmp, extra_postargs=flags)
            return True
        except Exception:  # any compile or link failure means "not supported"
            return False
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def build_extensions(self) -> None:
        msvc = self.compiler.compiler_type == "msvc"
        # -fno-trapping-math and -fno-math-errno let the selects and rounding vectorise without
        # changing any value; -ffp-contract=off keeps every product rounded (no FMA), as in torch.
        base = ["/O2"] if msvc else ["-O3", "-std=c11", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off"]
        omp = ["/openmp"] if msvc else ["-fopenmp"]
        if not self._compiles("int main(void) { return 0; }\n", base):
            _say("no working C compiler: the C kernels are NOT built; bitcl will use the torch reference kernels")
            super().build_extensions()  # fails, and setuptools skips the optional extension with a warning
            return
        wanted = os.environ.get("BITCL_OPENMP", "1") != "0"
        use_omp = wanted and self._compiles(OPENMP_PROBE, omp)
        if use_omp:
            _say(f"OpenMP enabled ({omp[0]})")
        elif wanted:
            _say(f"the compiler does not support OpenMP ({omp[0]}); building SINGLE-THREADED kernels")
        else:
            _say("BITCL_OPENMP=0: building SINGLE-THREADED kernels")
        compile_flags = base + (omp if use_omp else [])
        for ext in self.extensions:
            ext.extra_compile_args = compile_flags
            ext.extra_link_args = omp if use_omp and not msvc else []
            ext.define_macros.append(("BITCL_BUILD_FLAGS", '"' + " ".join(compile_flags) + '"'))
        super().build_extensions()


bitops = Extension(
    "bitcl.kernels._bitops",
    sources=["kernels/bitops.c", "kernels/_bitops.c"],
    depends=["kernels/bitops.h"],
    define_macros=[("Py_LIMITED_API", "0x030A0000")],
    py_limited_api=True,
    optional=True,
)

setup(
    packages=find_packages(include=["bitcl", "bitcl.*"]) + ["bitcl.kernels"],
    package_dir={"bitcl.kernels": "kernels"},
    ext_modules=[bitops],
    cmdclass={"build_ext": BuildKernels},
    options={"bdist_wheel": {"py_limited_api": "cp310"}},
)
