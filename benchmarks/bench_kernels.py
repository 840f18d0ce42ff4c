"""Kernel and layer speed, as ratios against baselines timed in the same process.

    .venv/bin/python benchmarks/bench_kernels.py

Targets (issue 2): project_() / one SGD step of the float 784-1200-10 MLP at
batch 64 <= 0.10; pack/unpack >= 1 GB/s; BitLinear(784, 1200) fwd+bwd over
nn.Linear <= 1.15. Writes benchmarks/out/kernels.json.
"""
from __future__ import annotations

import torch
from torch import nn

from _timing import median_seconds, paired_ratio, write_json
from bitcl import kernels
from bitcl.kernels import reference
from bitcl.quant import BitLinear, bit_states, max_code


def main() -> None:
    torch.set_num_threads(2)
    torch.manual_seed(0)
    results: dict = {"threads": 2, "backend": kernels.backend()}

    # projection against one plain SGD step of the float MLP
    float_mlp = nn.Sequential(nn.Linear(784, 1200), nn.ReLU(), nn.Linear(1200, 10))
    opt = torch.optim.SGD(float_mlp.parameters(), lr=0.01)
    x, y = torch.randn(64, 784), torch.randint(0, 10, (64,))

    def sgd_step():
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(float_mlp(x), y).backward()
        opt.step()

    bit_mlp = nn.Sequential(BitLinear(784, 1200), nn.ReLU(), BitLinear(1200, 10))
    states = [s for _, s in bit_states(bit_mlp)]
    for s in states:
        s.freeze(torch.randint(0, 12, s.codes.shape))

    def project_all():
        for s in states:
            s.project_()

    ratio, t_proj, t_step = paired_ratio(project_all, sgd_step, rounds=9, inner=30)
    results["project_over_sgd_step"] = {"ratio": ratio, "project_ms": t_proj * 1e3, "sgd_step_ms": t_step * 1e3,
                                        "weights": sum(s.codes.numel() for s in states), "target": 0.10}

    # fast path against the reference, on the 784x1200 weight
    w = states[0]
    inv = w.layer.inv_scales["weight"]
    fast = lambda: kernels.project_(w.latent.data, w.codes, w.frozen, w.bits, w.scale, inv)
    ref = lambda: reference.project_(w.latent.data, w.codes, w.frozen, w.bits, w.scale, inv)
    results["project_speedup_fast_over_reference"] = 1 / paired_ratio(fast, ref, rounds=5, inner=10)[0]

    bits, n = 20, 4_000_000
    codes = torch.randint(-max_code(bits), max_code(bits) + 1, (n,), dtype=torch.int32)
    packed = kernels.pack_bitplanes(codes, bits)
    t_pack = median_seconds(lambda: kernels.pack_bitplanes(codes, bits), inner=10)
    t_unpack = median_seconds(lambda: kernels.unpack_bitplanes(packed, bits, n), inner=10)
    t_pack_ref = median_seconds(lambda: reference.pack_bitplanes(codes, bits), repeats=3, inner=1)
    t_unpack_ref = median_seconds(lambda: reference.unpack_bitplanes(packed, bits, n), repeats=3, inner=1)
    gb = n * 4 / 1e9  # GB of int32 codes in or out
    results["pack"] = {"codes": n, "bits": bits, "pack_GBps": gb / t_pack, "unpack_GBps": gb / t_unpack,
                       "pack_speedup_fast_over_reference": t_pack_ref / t_pack,
                       "unpack_speedup_fast_over_reference": t_unpack_ref / t_unpack, "target_GBps": 1.0}

    # BitLinear forward + backward against nn.Linear
    bit_layer, float_layer = BitLinear(784, 1200), nn.Linear(784, 1200)
    xb = torch.randn(64, 784)

    def fwd_bwd(layer):
        return lambda: layer(xb).sum().backward()

    results["bitlinear_over_linear_fwd_bwd"] = {
        "ratio": paired_ratio(fwd_bwd(bit_layer), fwd_bwd(float_layer), rounds=9, inner=30)[0], "target": 1.15}

    path = write_json("kernels.json", results)
    p = results["pack"]
    print(f"backend: {results['backend']}, 2 threads")
    print(f"project_() / SGD step (784-1200-10, batch 64): {ratio:.3f}  "
          f"({t_proj * 1e3:.3f} ms / {t_step * 1e3:.3f} ms; target <= 0.10)")
    print(f"project fast path vs reference: {results['project_speedup_fast_over_reference']:.1f}x faster")
    print(f"pack {p['pack_GBps']:.2f} GB/s, unpack {p['unpack_GBps']:.2f} GB/s (target >= 1); "
          f"vs reference {p['pack_speedup_fast_over_reference']:.0f}x / {p['unpack_speedup_fast_over_reference']:.0f}x")
    print(f"BitLinear / nn.Linear fwd+bwd (784->1200, batch 64): "
          f"{results['bitlinear_over_linear_fwd_bwd']['ratio']:.3f} (target <= 1.15)")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
