"""Batch-norm policies in a continual sequence: first-task, per-task and train."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bitcl.errors import ConfigError
from bitcl.models import build_model
from bitcl.models.norm import ContinualBatchNorm2d


def small(arch, bn, setting="task", tasks=3):
    torch.manual_seed(0)
    return build_model(arch, (1, 32, 32), [2] * tasks, setting, kind="float", width=8, bn=bn)


def norms(model):
    return [m for m in model.modules() if isinstance(m, ContinualBatchNorm2d)]


def train_steps(model, task, steps=3, seed=1):
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()
    for _ in range(steps):
        x = torch.randn(16, 1, 32, 32, generator=gen) * 2 + 1
        loss = F.cross_entropy(model(x, task), torch.randint(0, 2, (16,), generator=gen))
        opt.zero_grad()
        loss.backward()
        opt.step()


def bn_state(model):
    return {k: v.clone() for k, v in model.state_dict().items() if ".norms." in k}


@pytest.mark.parametrize("arch", ["alexnet", "resnet18"])
def test_first_task_learns_on_task_0_then_freezes(arch):
    """first-task: task 0 updates statistics and affine; after end_task(0) later training changes
    neither, and a training-mode forward equals the eval-mode one."""
    model = small(arch, "first-task")
    before = bn_state(model)
    train_steps(model, 0)
    after0 = bn_state(model)
    assert all(not torch.equal(before[k], after0[k]) for k in before if "running_mean" in k or "weight" in k)
    model.end_task(0)
    train_steps(model, 1)
    assert all(torch.equal(after0[k], v) for k, v in bn_state(model).items())
    x = torch.randn(4, 1, 32, 32)
    model.train()
    train_out = model(x, 1)
    model.eval()
    assert torch.equal(train_out, model(x, 1))


def test_first_task_freeze_survives_a_checkpoint():
    """The freeze is a buffer: a fresh model loading the state dict (resume) is frozen too."""
    model = small("resnet18", "first-task")
    train_steps(model, 0)
    model.end_task(0)
    fresh = small("resnet18", "first-task")
    fresh.load_state_dict(model.state_dict())
    assert all(bool(n.frozen) and n._frozen for n in norms(fresh))
    frozen = bn_state(fresh)
    train_steps(fresh, 1)
    assert all(torch.equal(frozen[k], v) for k, v in bn_state(fresh).items())


def test_first_task_affine_gets_no_gradient():
    """After the freeze the affine parameters receive no gradient (optimisers skip them)."""
    model = small("alexnet", "first-task")
    model.end_task(0)
    model(torch.randn(4, 1, 32, 32), 1).sum().backward()
    assert all(n.norms[0].weight.grad is None and n.norms[0].bias.grad is None for n in norms(model))
    assert all(p.grad is not None for name, p in model.named_parameters()
               if "norms" not in name and "heads.1" not in name and "heads." not in name)


@pytest.mark.parametrize("arch", ["alexnet", "resnet18"])
def test_per_task_norms_are_isolated(arch):
    """per-task: one norm per task; training task 1 leaves task 0's statistics and affine intact,
    and tasks 0 and 1 normalise the same input differently."""
    model = small(arch, "per-task")
    assert all(len(n.norms) == 3 for n in norms(model))
    train_steps(model, 0)
    task0 = {k: v for k, v in bn_state(model).items() if ".norms.0." in k}
    train_steps(model, 1, seed=2)
    assert all(torch.equal(task0[k], bn_state(model)[k]) for k in task0)
    assert any(not torch.equal(v, bn_state(model)[k.replace(".norms.0.", ".norms.1.")]) for k, v in task0.items())


@pytest.mark.parametrize("setting", ["domain", "class", "data"])
def test_per_task_is_refused_without_task_ids(setting):
    """per-task needs the task id at test time: other scenarios raise ConfigError."""
    with pytest.raises(ConfigError, match="per-task"):
        small("alexnet", "per-task", setting=setting)


def test_per_task_refuses_an_unknown_task():
    """A task id beyond the model's tasks is a ConfigError, not an IndexError."""
    with pytest.raises(ConfigError, match="task 5"):
        small("resnet18", "per-task")(torch.randn(2, 1, 32, 32), 5)


def test_train_policy_keeps_learning():
    """train: plain batch norm, statistics still move after end_task (forgetting-prone)."""
    model = small("alexnet", "train")
    train_steps(model, 0)
    model.end_task(0)
    after0 = bn_state(model)
    train_steps(model, 1)
    assert any(not torch.equal(after0[k], v) for k, v in bn_state(model).items())


def test_unknown_policy_is_refused():
    """--bn outside first-task, per-task, train: ConfigError."""
    with pytest.raises(ConfigError, match="--bn"):
        small("alexnet", "frozen")


def test_eval_mode_makes_samples_independent():
    """In eval mode (how importance is computed) a sample's output does not depend on its batch;
    in training mode with live batch statistics it does (why importance must use eval)."""
    model = small("resnet18", "train")
    train_steps(model, 0)
    x = torch.randn(8, 1, 32, 32)
    model.eval()
    assert torch.allclose(model(x, 0)[:1], model(x[:1], 0), atol=1e-6)
    model.train()
    assert not torch.allclose(model(x, 0)[:2], model(x[:2], 0), atol=1e-4)


def test_training_norm_inside_a_jvp_matches_plain_batch_norm():
    """Inside torch.func.jvp (DLCFT's linearised model) a training norm gives nn.BatchNorm2d's output
    and running-statistics update, instead of failing on the in-place buffer update."""
    from torch.func import functional_call, jvp

    torch.manual_seed(0)
    norm, plain = ContinualBatchNorm2d(3, "train"), nn.BatchNorm2d(3)
    conv = nn.Conv2d(2, 3, 1)
    x = torch.randn(8, 2, 5, 5)
    params = dict(conv.named_parameters())
    tangents = {k: torch.randn_like(v) for k, v in params.items()}
    out, _ = jvp(lambda p: norm(functional_call(conv, p, (x,))), (params,), (tangents,))
    expected = plain(conv(x))
    torch.testing.assert_close(out, expected)
    inner = norm.norms[0]
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(inner, name), getattr(plain, name))


GLOBAL_BATCH = 10
SPLITS = {"even": 5, "uneven": 7, "empty": GLOBAL_BATCH}  # rank 0's share of the global batch


def _bn_case(split: int, rank=None, linearised: bool = False, dtype=torch.float32) -> dict:
    """A training-mode conv + 'train' norm, two forward/backward passes on a fixed global batch of 10
    (``rank`` None) or on rank 0's first ``split`` samples / rank 1's rest; ``linearised``: through
    torch.func.jvp as DLCFT's linearised model, gradients taken through the tangent."""
    from torch.func import functional_call, jvp
    torch.manual_seed(0)
    conv, norm = nn.Conv2d(2, 3, 1), ContinualBatchNorm2d(3, "train")
    with torch.no_grad():
        norm.norms[0].weight.uniform_(0.5, 1.5)
        norm.norms[0].bias.normal_()
    conv, norm = conv.to(dtype), norm.to(dtype)
    x = (torch.randn(GLOBAL_BATCH, 2, 4, 4) * 3 + 5).to(dtype)  # |mean| >> std: the sums must be centred
    g = torch.randn(GLOBAL_BATCH, 3, 4, 4).to(dtype)
    part = slice(None) if rank is None else slice(0, split) if rank == 0 else slice(split, None)
    x = x[part].clone().requires_grad_()
    theta0 = {k: v.detach().clone() - 0.1 for k, v in conv.named_parameters()}
    outs = []
    for _ in range(2):
        if linearised:
            tangent = {k: v - theta0[k] for k, v in conv.named_parameters()}
            out0, change = jvp(lambda p: norm(functional_call(conv, p, (x,))), (theta0,), (tangent,))
            out = out0 + change
        else:
            out = norm(conv(x))
        (out * g[part]).sum().backward()
        outs.append(out.detach())
    inner = norm.norms[0]
    return {"out": torch.cat(outs), "x.grad": x.grad, "weight.grad": inner.weight.grad,
            "bias.grad": inner.bias.grad, "conv.grad": conv.weight.grad, "running_mean": inner.running_mean,
            "running_var": inner.running_var, "num_batches_tracked": inner.num_batches_tracked}


def _shard_worker(rank: int, store: str, queue) -> None:
    import torch.distributed as dist
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        # numpy copies: a tensor would travel as shared memory that dies with this process
        cases = {(label, lin, dtype): {k: v.detach().numpy().copy()
                                       for k, v in _bn_case(split, rank, lin, dtype).items()}
                 for label, split in SPLITS.items() for lin in (False, True)
                 for dtype in (torch.float32, torch.float64)}
        # a part no rank holds (joint's replayed task absent from a global batch): one process would not
        # call the norm, so it must leave its statistics alone
        norm = ContinualBatchNorm2d(3, "train")
        out = norm(torch.zeros(0, 3, 4, 4))
        untouched = out.shape == (0, 3, 4, 4) and int(norm.norms[0].num_batches_tracked) == 0
        queue.put((rank, cases, untouched))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_normalise_with_the_global_batch():
    """2 gloo ranks each holding part of a global batch (5+5, 7+3, 10+0) give the one-process batch norm's
    outputs, input and parameter gradients (summed over ranks) and running statistics, within 1e-5;
    also through torch.func.jvp (DLCFT); 0+0 changes nothing. The conv's gradient sums terms ~5 to ~0.3:
    float64 only."""
    import tempfile

    import torch.multiprocessing as mp
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    with tempfile.TemporaryDirectory() as tmp:
        procs = [ctx.Process(target=_shard_worker, args=(r, f"{tmp}/store", queue)) for r in (0, 1)]
        for p in procs:
            p.start()
        replies = [queue.get(timeout=120) for _ in procs]
        shards = {r: {key: {k: torch.from_numpy(v) for k, v in case.items()} for key, case in cases.items()}
                  for r, cases, _ in replies}
        for p in procs:
            p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    assert all(untouched for _, _, untouched in replies)
    for (label, lin, dtype), r0 in shards[0].items():
        r1, one, split = shards[1][(label, lin, dtype)], _bn_case(SPLITS[label], None, lin, dtype), SPLITS[label]

        def close(two: torch.Tensor, key: str) -> None:
            torch.testing.assert_close(two, one[key], rtol=1e-5, atol=1e-5,
                                       msg=lambda m: f"{label}, linearised={lin}, {dtype}, {key}: {m}")
        # outputs of the two passes, each pass's rows in rank order
        passes = zip(r0["out"].split(split), r1["out"].split(GLOBAL_BATCH - split)) if split < GLOBAL_BATCH \
            else [(r0["out"], r1["out"])]
        close(torch.cat([torch.cat(pair) for pair in passes]), "out")
        # (linearised: torch's own reverse-through-jvp of F.batch_norm w.r.t. the primal input disagrees with
        # finite differences, the global norm agrees; DLCFT never needs it: its parameters enter as tangents)
        if not lin:
            close(torch.cat([r0["x.grad"], r1["x.grad"]]), "x.grad")
        for key in ("weight.grad", "bias.grad") + (("conv.grad",) if dtype == torch.float64 else ()):
            close(r0[key] + r1[key], key)
        for key in ("running_mean", "running_var", "num_batches_tracked"):
            assert torch.equal(r0[key], r1[key]), (label, lin, key)
            close(r0[key], key)


@pytest.mark.parametrize("arch", ["alexnet", "resnet18"])
def test_recalibration_sets_the_statistics_of_the_final_weights(arch):
    """After a short task the moving averages still hold their initial 0/1; recalibrate_ replaces them by the
    cumulative mean and unbiased variance of the task's batches at the final weights, so eval mode sees what
    training saw (the first norm's statistics are those of its input over the data). Frozen norms are left alone."""
    from bitcl.models.norm import learning_norms, recalibrate_
    model = small(arch, "first-task")
    train_steps(model, 0, steps=3)
    first = norms(model)[0].norms[0]
    gen = torch.Generator().manual_seed(7)
    data = [torch.randn(32, 1, 32, 32, generator=gen) * 2 + 1 for _ in range(4)]
    seen = []
    hook = first.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].detach()))
    assert recalibrate_(model, [(x,) for x in data], 0) == len(norms(model))
    hook.remove()
    inputs = torch.stack(seen)  # (batches, 32, C, H, W): one entry per batch of the pass
    torch.testing.assert_close(first.running_mean, inputs.mean((1, 3, 4)).mean(0), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(first.running_var, inputs.transpose(1, 2).flatten(2).var(2).mean(0),
                               rtol=1e-4, atol=1e-5)
    assert first.momentum == 0.1 and model.training
    model.end_task(0)
    assert learning_norms(model) == [] and recalibrate_(model, [(x,) for x in data], 1) == 0
