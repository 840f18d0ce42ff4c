"""The fused GPU projection (kernels/gpu.py) equals the reference bit for bit; mixed precision keeps frozen bits.

Without a GPU the Triton kernel itself runs under Triton's interpreter (``TRITON_INTERPRET=1``, CPU
tensors) when triton is installed; the CUDA tests skip cleanly on machines without CUDA.
"""
import importlib.util
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from bitcl.models import build_model
from bitcl.quant import bit_states
from bitcl.kernels import gpu, reference

HAS_TRITON = importlib.util.find_spec("triton") is not None
HAS_CUDA = torch.cuda.is_available()


def cases(device="cpu", seed=0):
    """(latent, codes, frozen, bits, scale, inv_scale) covering every k, half-way points, values far
    outside their window, the narrow-range floor u = 1 and sizes that are not multiples of a block."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for bits, n in ((2, 237), (8, 1500), (16, 3000), (20, 4099), (24, 2048)):
        half = 1 << (bits - 1)
        codes = torch.randint(-(half - 1), half, (n,), generator=gen, dtype=torch.int32)
        codes[:10] = -(half - 1)
        frozen = torch.randint(0, bits + 1, (n,), generator=gen, dtype=torch.int32).to(torch.uint8)
        scale = float(torch.tensor(0.3 / half, dtype=torch.float32))
        inv = float(torch.tensor(1.0 / scale, dtype=torch.float32))
        spread = torch.randint(0, bits + 1, (n,), generator=gen).double().exp2()
        latent = (codes.double() + torch.randn(n, generator=gen, dtype=torch.float64) * spread) * scale
        latent[10:200] = (torch.randint(-half, half, (190,), generator=gen).double() + 0.5) * scale
        latent[200:220] = torch.tensor([1.0, -1.0]).repeat(10)  # far outside every window
        out.append((latent.float().to(device), codes.to(device), frozen.to(device), bits, scale, inv))
    return out


def assert_same(a, b):
    assert torch.equal(a[0].cpu().view(torch.int32), b[0].cpu().view(torch.int32))  # bit-identical floats
    assert torch.equal(a[1].cpu(), b[1].cpu())


def test_project_falls_back_to_the_reference_off_cuda():
    """On CPU tensors (or without triton/CUDA) gpu.project_ computes exactly the reference."""
    for latent, codes, frozen, bits, scale, inv in cases():
        ours = (latent.clone(), codes.clone(), frozen.clone())
        ref = (latent.clone(), codes.clone(), frozen.clone())
        gpu.project_(*ours, bits, scale, inv)
        reference.project_(*ref, bits, scale, inv)
        assert_same(ours, ref)
    assert gpu.available() == (HAS_TRITON and HAS_CUDA)


_INTERPRETER_CHECK = """
import torch
from bitcl.kernels import gpu, reference
from tests.kernels.test_gpu import assert_same, cases
for seed in range(3):
    for latent, codes, frozen, bits, scale, inv in cases(seed=seed):
        ours = (latent.clone(), codes.clone(), frozen.clone())
        ref = (latent.clone(), codes.clone(), frozen.clone())
        gpu.launch(*ours, bits, scale, inv)
        reference.project_(*ref, bits, scale, inv)
        assert_same(ours, ref)
empty = (torch.zeros(0), torch.zeros(0, dtype=torch.int32), torch.zeros(0, dtype=torch.uint8))
gpu.launch(*empty, 8, 0.01, 100.0)
print("interpreter ok")
"""


@pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed (pip install triton)")
def test_triton_kernel_matches_reference_in_the_interpreter():
    """The Triton kernel's own code, run by Triton's CPU interpreter, is bit-identical to the reference."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=os.pathsep.join([root] + sys.path))
    done = subprocess.run([sys.executable, "-c", _INTERPRETER_CHECK], cwd=root, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0 and "interpreter ok" in done.stdout, done.stderr[-3000:]


@pytest.mark.skipif(not (HAS_CUDA and HAS_TRITON), reason="needs a CUDA device and triton")
def test_cuda_kernel_matches_reference():
    """On CUDA the fused kernel equals the reference run on CPU, bit for bit."""
    for latent, codes, frozen, bits, scale, inv in cases("cuda"):
        ours = (latent.clone(), codes.clone(), frozen.clone())
        ref = (latent.cpu(), codes.cpu(), frozen.cpu())
        gpu.project_(*ours, bits, scale, inv)
        reference.project_(*ref, bits, scale, inv)
        assert_same(ours, ref)


def frozen_planes(model):
    return {name: (state.bitplanes() & state.freeze_mask()).clone() for name, state in bit_states(model)}


def mixed_precision_step(device, dtype):
    """One optimiser step of a half-frozen AlexNet with its forward under autocast, then projection:
    returns the frozen bit planes before and after."""
    torch.manual_seed(0)
    model = build_model("alexnet", (1, 32, 32), [4], "task", width=8).to(device)
    gen = torch.Generator().manual_seed(1)
    for _, state in bit_states(model):
        state.freeze(torch.randint(0, state.bits + 1, state.codes.shape, generator=gen).to(device))
    before = frozen_planes(model)
    opt = torch.optim.SGD(model.parameters(), lr=50.0)  # a huge step: every weight tries to leave its window
    x, y = torch.randn(16, 1, 32, 32, device=device), torch.randint(0, 4, (16,), device=device)
    with torch.autocast(device, dtype=dtype):
        loss = F.cross_entropy(model(x, 0), y)
    loss.backward()
    opt.step()
    for _, state in bit_states(model):
        state.project_()
    return before, frozen_planes(model), model


def test_bfloat16_autocast_step_never_changes_a_frozen_bit():
    """A step whose forward ran under torch.autocast("cpu", bfloat16), then the projection, leaves
    every frozen bit as it was (latents stay float32; only the matmuls run in bf16)."""
    before, after, model = mixed_precision_step("cpu", torch.bfloat16)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(state.latent.dtype == torch.float32 for _, state in bit_states(model))


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
def test_float16_autocast_on_cuda_never_changes_a_frozen_bit():
    """The same on CUDA with float16 autocast."""
    before, after, _ = mixed_precision_step("cuda", torch.float16)
    assert all(torch.equal(before[k], after[k]) for k in before)
