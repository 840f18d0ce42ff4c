"""ensure_torchvision_importable: torchvision (and so Avalanche) imports with the pinned CPU torch."""
import importlib.util
import json
import subprocess
import sys

import pytest

# Each snippet must run where torchvision and bitcl were never imported. One interpreter imports torch
# (what every user process has done before it imports torchvision or bitcl; ~2 CPU-seconds) and runs no
# torch op, so no thread pool exists to be broken by fork; each snippet then runs in a child forked
# from it, with its own exit status and output.
FORK_EACH = r"""
import json, os, sys, tempfile, traceback
import torch
report = []
for snippet in json.loads(sys.argv[1]):
    with tempfile.TemporaryFile("w+") as out:
        pid = os.fork()
        if pid == 0:
            os.dup2(out.fileno(), 1)
            os.dup2(out.fileno(), 2)
            status = 0
            try:
                exec(compile(snippet, "<snippet>", "exec"), {"__name__": "__main__"})
            except BaseException:
                traceback.print_exc()
                status = 1
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)
        _, waited = os.waitpid(pid, 0)
        out.seek(0)
        report.append((os.waitstatus_to_exitcode(waited), out.read()))
print(json.dumps(report))
"""


def in_fresh_children(*snippets: str) -> list[tuple[int, str]]:
    """``(exit status, output)`` of each snippet, each in a process that has imported torch and nothing else."""
    done = subprocess.run([sys.executable, "-c", FORK_EACH, json.dumps(snippets)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return [tuple(entry) for entry in json.loads(done.stdout)]

SCRIPT = """
import torch
from bitcl.interop import ensure_torchvision_importable
first = ensure_torchvision_importable()
again = ensure_torchvision_importable()
import torchvision
model = torchvision.models.resnet18(weights=None, num_classes=3).eval()
print(first, again, tuple(model(torch.zeros(1, 3, 32, 32)).shape))
"""


@pytest.mark.slow
def test_torchvision_imports_after_the_fix_in_a_fresh_interpreter():
    """In a fresh process the fix runs first, is idempotent, and torchvision's ResNet-18 then runs."""
    if importlib.util.find_spec("torchvision") is None:
        pytest.skip("torchvision is not installed (the avalanche extra brings it)")
    [(status, output)] = in_fresh_children(SCRIPT)
    assert status == 0, output
    first, again, shape = output.split(maxsplit=2)
    assert first in ("declared", "compiled") and again == first
    assert shape.strip() == "(1, 3)"


@pytest.mark.slow
def test_without_the_fix_this_torchvision_build_fails_to_import_or_has_its_ops():
    """The fix is needed exactly when torchvision's compiled ops do not load (the PyPI CUDA build)."""
    if importlib.util.find_spec("torchvision") is None:
        pytest.skip("torchvision is not installed (the avalanche extra brings it)")
    (plain, plain_output), (probe, probe_output) = in_fresh_children(
        "import torchvision", "from bitcl.interop import ensure_torchvision_importable as e; print(e())")
    assert probe == 0, probe_output
    if probe_output.strip() == "declared":
        assert plain != 0 and "torchvision::nms does not exist" in plain_output
    else:
        assert plain == 0, plain_output


@pytest.mark.slow  # three fresh processes, one importing Avalanche
def test_bitcl_python_api_makes_torchvision_importable_without_a_call():
    """A user of bitcl.quantize_ or bitcl.fit never calls ensure_torchvision_importable: importing either
    (in a fresh process, torchvision not yet imported) is enough for `import torchvision` and its models."""
    firsts = ("import bitcl; bitcl.quantize_", "from bitcl import fit", "import bitcl.avalanche")
    snippets = [f"{first}\nimport torchvision\nm = torchvision.models.resnet18(num_classes=3)\n"
                "import bitcl; bitcl.quantize_(m, bitcl.BitConfig(bits=8)); print('ok')" for first in firsts]
    for first, (status, output) in zip(firsts, in_fresh_children(*snippets)):
        assert status == 0 and output.strip().endswith("ok"), (first, output[-500:])
