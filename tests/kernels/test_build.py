"""The C kernels are built at install time: no compiling, no cache folder, a clear fallback."""
import os
import subprocess
import sys
import textwrap

import pytest

from bitcl import kernels

needs_c = pytest.mark.skipif(kernels.backend() != "c", reason="C kernels not in use (extension not built, or BITCL_KERNELS=reference)")


def run_python(code: str, cwd, **env):
    """Run ``code`` from a script file outside ``cwd`` (so cwd is not on sys.path), in ``cwd``."""
    script = cwd.parent / f"probe_{os.getpid()}_{abs(hash(code))}.py"
    script.write_text(textwrap.dedent(code))
    full_env = {**os.environ, **env}
    return subprocess.run([sys.executable, str(script)], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env=full_env)


@needs_c
def test_build_info_says_how_it_was_built():
    """build_info() names the backend, OpenMP or single-threaded, the instruction set and flags."""
    info = kernels.build_info()
    assert info["backend"] == "c" and isinstance(info["openmp"], bool)
    assert info["isa"] in ("avx2", "baseline")
    assert "-march=native" not in info["flags"] and "-O" in info["flags"]
    assert ("-fopenmp" in info["flags"]) == info["openmp"]
    assert info["path"].endswith((".so", ".pyd"))


@needs_c
def test_empty_xdg_cache_and_stray_bitcl_folder_in_cwd(tmp_path):
    """Regression (issue 15): XDG_CACHE_HOME="" and a stray ./bitcl/kernels in the cwd change nothing:
    nothing is compiled or written there, and the installed C kernels run."""
    cwd = tmp_path / "work"
    (cwd / "bitcl" / "kernels").mkdir(parents=True)
    (cwd / "bitcl" / "kernels" / "bitops-0123.so").write_bytes(b"not a library")
    before = sorted(p.relative_to(cwd) for p in cwd.rglob("*"))
    done = run_python("""
        import torch
        from bitcl import kernels
        latent, codes = torch.tensor([0.3, -2.0]), torch.zeros(2, dtype=torch.int32)
        kernels.project_(latent, codes, torch.zeros(2, dtype=torch.uint8), 4, 0.25)
        print(kernels.backend(), codes.tolist())
    """, cwd, XDG_CACHE_HOME="")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["c", "[1,", "-7]"]
    assert sorted(p.relative_to(cwd) for p in cwd.rglob("*")) == before


def test_missing_extension_falls_back_with_one_line_notice(tmp_path):
    """A source tree whose extension was never built runs on the torch reference, saying so once."""
    done = run_python("""
        import sys, importlib.abc
        class NoExtension(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name == "bitcl.kernels._bitops":
                    raise ImportError("simulated: not built")
        sys.meta_path.insert(0, NoExtension())
        import torch
        from bitcl import kernels
        latent, codes = torch.tensor([0.3, -2.0]), torch.zeros(2, dtype=torch.int32)
        kernels.project_(latent, codes, torch.zeros(2, dtype=torch.uint8), 4, 0.25)
        kernels.project_(latent, codes, torch.zeros(2, dtype=torch.uint8), 4, 0.25)
        print(kernels.backend(), codes.tolist(), kernels.build_info()["why"])
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("reference [1, -7] the C extension is not built")
    notices = [line for line in done.stderr.splitlines() if line.startswith("bitcl:")]
    assert len(notices) == 1 and "using the torch reference kernels" in notices[0]


@pytest.mark.slow  # two new interpreters
def test_bitcl_kernels_environment_variable(tmp_path):
    """BITCL_KERNELS=reference forces the reference silently; an unknown value is a ConfigError."""
    code = "from bitcl import kernels\ntry:\n    print(kernels.backend())\nexcept Exception as e:\n" \
           "    print(type(e).__name__, e)\n"
    forced = run_python(code, tmp_path, BITCL_KERNELS="reference")
    assert forced.stdout.strip() == "reference" and "bitcl:" not in forced.stderr
    bogus = run_python(code, tmp_path, BITCL_KERNELS="fast")
    assert bogus.stdout.startswith("ConfigError BITCL_KERNELS must be 'c' or 'reference'")
