"""ensure_torchvision_importable: torchvision (and so Avalanche) imports with the pinned CPU torch."""
import importlib.util
import subprocess
import sys

import pytest

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
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    first, again, shape = done.stdout.split(maxsplit=2)
    assert first in ("declared", "compiled") and again == first
    assert shape.strip() == "(1, 3)"


@pytest.mark.slow
def test_without_the_fix_this_torchvision_build_fails_to_import_or_has_its_ops():
    """The fix is needed exactly when torchvision's compiled ops do not load (the PyPI CUDA build)."""
    if importlib.util.find_spec("torchvision") is None:
        pytest.skip("torchvision is not installed (the avalanche extra brings it)")
    plain = subprocess.run([sys.executable, "-c", "import torchvision"], capture_output=True, text=True, timeout=120)
    probe = subprocess.run([sys.executable, "-c", "from bitcl.interop import ensure_torchvision_importable as e; "
                            "print(e())"], capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr
    if probe.stdout.strip() == "declared":
        assert plain.returncode != 0 and "torchvision::nms does not exist" in plain.stderr
    else:
        assert plain.returncode == 0, plain.stderr


@pytest.mark.slow  # three fresh interpreters, one importing Avalanche
def test_bitcl_python_api_makes_torchvision_importable_without_a_call():
    """A user of bitcl.quantize_ or bitcl.fit never calls ensure_torchvision_importable: importing either
    (in a fresh process, torchvision not yet imported) is enough for `import torchvision` and its models."""
    import subprocess
    import sys
    for first in ("import bitcl; bitcl.quantize_", "from bitcl import fit", "import bitcl.avalanche"):
        code = (f"{first}\nimport torchvision\nm = torchvision.models.resnet18(num_classes=3)\n"
                "import bitcl; bitcl.quantize_(m, bitcl.BitConfig(bits=8)); print('ok')")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0 and done.stdout.strip().endswith("ok"), (first, done.stderr[-500:])
