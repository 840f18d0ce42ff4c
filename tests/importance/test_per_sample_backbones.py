"""Vectorised per-sample gradient powers on the paper-scale backbones equal a per-sample loop."""
import pytest
import torch
import torch.nn.functional as F

from bitcl.importance import layers_of, per_sample_power_sums
from bitcl.models import build_model

pytestmark = pytest.mark.usefixtures("one_thread")  # many small ops: one thread is faster


def naive(model, x, y, names, power):
    params = dict(model.named_parameters())
    total = {k: torch.zeros_like(params[k]) for k in names}
    for n in range(len(x)):
        loss = F.cross_entropy(model(x[n:n + 1], 0), y[n:n + 1])
        grads = torch.autograd.grad(loss, [params[k] for k in names])
        for k, g in zip(names, grads):
            total[k] += g.abs().pow(power)
    return total


def max_relative_error(fast, slow):
    """Largest |fast - slow| relative to the tensor's largest value, over all tensors."""
    return max(float((fast[k] - slow[k]).abs().max() / slow[k].abs().max().clamp_min(1e-30)) for k in slow)


@pytest.mark.parametrize("arch,width,power", [("alexnet", 0, 2), ("alexnet", 0, 1), ("resnet18", 0, 2),
                                              ("resnet18", 0, 1)])
def test_conv_backbones_match_the_per_sample_loop(arch, width, power):
    """AlexNet (k4/k3/k2 convs, 2048 FCs) and the reduced ResNet-18 (strided, padded, 1x1
    shortcuts, BN in eval mode): hooks + unfold equal the per-sample loop to 1e-5 relative."""
    torch.manual_seed(0)
    model = build_model(arch, (3, 32, 32), [5], "task", width=width, bn="train")
    model.train()
    model(torch.randn(32, 3, 32, 32), 0)  # non-trivial running statistics
    model.eval()
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 5, (4,))
    names = [n for n, _ in model.backbone_parameters() if "norms" not in n]
    layers = layers_of(model, names)
    fast = per_sample_power_sums(model, layers, lambda: F.cross_entropy(model(x, 0), y, reduction="sum"), power)
    slow = naive(model, x, y, names, power)
    assert set(fast) == set(slow)
    assert max_relative_error(fast, slow) < 1e-5
    for k in slow:  # and elementwise, where the values are not tiny
        torch.testing.assert_close(fast[k], slow[k], rtol=1e-4, atol=1e-5 * float(slow[k].abs().max()))


def test_importance_is_computed_in_eval_mode():
    """task_mean (every Fisher/MAS estimate) runs the model in eval mode, so batch norms use running
    statistics and samples do not interact; the training mode is restored afterwards."""
    from bitcl.importance import task_mean
    from bitcl.models.norm import ContinualBatchNorm2d
    from bitcl.strategies.context import RunInfo, TaskContext

    model = build_model("resnet18", (1, 32, 32), [2], "task", width=4, bn="train")
    seen = []

    class Ctx(TaskContext):
        def importance_batches(self, samples, batch_size, purpose):
            return [(torch.randn(4, 1, 32, 32), torch.zeros(4, dtype=torch.long), torch.rand(4))], 4

    def batch_sums(x, y, u):
        seen.extend(m.training for m in model.modules() if isinstance(m, ContinualBatchNorm2d))
        return {"backbone.stem.0.weight": model(x, 0).sum() * 0 + torch.ones(1)}

    model.train()
    task_mean(Ctx(model, 0, RunInfo(1, "task")), 0, 4, "fisher", batch_sums, ["backbone.stem.0.weight"])
    assert seen and not any(seen)
    assert model.training
