"""DLCFT: the linearisation, its curvatures, and the claim that sequential = joint with exact curvature."""

import numpy as np
import pytest
import torch

from bitcl.config import RunConfig
from bitcl.engine import Engine
from tests.conftest import cli


def engine_for(small_npz, **options):
    cfg = RunConfig(method="dlcft", benchmark="split-mnist", scenario="class", classes=[0, 1, 2, 3], tasks=2,
                    data=small_npz, hidden=[8], backbone="float", quiet=True, epochs=0, method_options=options)
    return Engine(cfg)


def test_linearised_model_equals_network_at_theta0_and_first_order_nearby(small_npz):
    """f_lin = f at θ0; near θ0 the linearised change matches a finite difference of the network."""
    engine = engine_for(small_npz, layers=0, curvature="diagonal")
    strategy, model = engine.strategy, engine.model
    x = engine.scenario.tasks[0].x_train[:16]
    model.set_active_outputs(4)
    with torch.no_grad():
        base = model(x, 0)
        torch.testing.assert_close(strategy.linearized(x, 0), base)
    torch.manual_seed(0)
    direction = {n: torch.randn_like(p) * p.detach().abs().mean() for n, p in strategy.params.items()}
    eps = 1e-3
    with torch.no_grad():
        for n, p in strategy.params.items():
            p.copy_(strategy.state[f"theta0/{n}"] + eps * direction[n])
        finite_difference = model(x, 0) - base
        strategy.linearized.train()  # unmasked outputs
        linear_change = strategy.linearized(x, 0) - base
    live = slice(0, 4)
    rel = (finite_difference[:, live] - linear_change[:, live]).norm() / linear_change[:, live].norm()
    assert float(rel) < 0.02


def test_kfac_and_diagonal_match_exact_for_a_single_layer(small_npz):
    """With only the head linearised, K-FAC (G ⊗ S) and the diagonal equal the exact curvature."""
    curv = {}
    for kind in ("exact", "kfac", "diagonal"):
        engine = engine_for(small_npz, layers=1, curvature=kind, samples=200)
        curv[kind] = (engine.strategy.curvature(engine.context(engine.scenario.tasks[0])), engine)
    exact = curv["exact"][0]["curvature"]
    head = curv["exact"][1].model.heads[0]
    out, inp = head.weight.shape
    (g, s), = curv["kfac"][0].values()
    index = lambda o, j: o * inp + j if j < inp else out * inp + o  # [W row-major, b] vs [W | b] per row
    order = [index(o, j) for o in range(out) for j in range(inp + 1)]
    rebuilt = torch.zeros_like(exact)
    rebuilt[np.ix_(order, order)] = torch.kron(g, s)
    torch.testing.assert_close(rebuilt, exact, rtol=1e-4, atol=1e-6)
    diag = curv["diagonal"][0]
    flat = torch.cat([diag["heads.0.weight"].flatten(), diag["heads.0.bias"]])
    torch.testing.assert_close(flat, torch.diagonal(exact), rtol=1e-4, atol=1e-6)


def joint_solution(engine):
    """Closed form of min Σ_t L_t for the head on fixed features: every output is in every
    task's loss (target 0 off the task's classes), per-task means weighted as the penalty does."""
    model = engine.model
    tasks = engine.scenario.tasks
    with torch.no_grad():
        feats = [torch.cat([model.backbone(t.x_train).double(), torch.ones(len(t.y_train), 1, dtype=torch.float64)], 1)
                 for t in tasks]
    outputs = engine.scenario.head_sizes[0]
    w = torch.zeros(outputs, feats[0].shape[1], dtype=torch.float64)
    lhs = sum(h.t() @ h / len(h) for h in feats)
    for o in range(outputs):
        rhs = sum(h.t() @ (t.y_train == o).double() / len(h) for t, h in zip(tasks, feats))
        w[o] = torch.linalg.solve(lhs, rhs)
    return w


@pytest.mark.slow
def test_exact_penalty_reaches_the_joint_solution_and_finetune_does_not(small_npz, one_thread):
    """Task by task with the exact accumulated curvature = joint least squares of the linearised model."""
    results = {}
    for c in (1.0, 0.0):
        cfg = RunConfig(method="dlcft", benchmark="split-mnist", scenario="class", classes=[0, 1, 2, 3], tasks=2,
                        data=small_npz, hidden=[8], backbone="float", quiet=True, epochs=600, batch_size=4000,
                        lr=0.05, method_options={"curvature": "exact", "layers": 1, "c": c})
        engine = Engine(cfg)
        engine.run()
        head = engine.model.heads[0]
        results[c] = torch.cat([head.weight.detach().double(), head.bias.detach().double().unsqueeze(1)], 1)
        target = joint_solution(engine)
        x = engine.scenario.tasks[1].x_test
        with torch.no_grad():
            feats = torch.cat([engine.model.backbone(x).double(), torch.ones(len(x), 1, dtype=torch.float64)], 1)
        results[f"pred{c}"], results["pred_joint"] = feats @ results[c].t(), feats @ target.t()
        results["joint"] = target
    torch.testing.assert_close(results[1.0], results["joint"], rtol=1e-3, atol=2e-3)
    torch.testing.assert_close(results["pred1.0"], results["pred_joint"], rtol=1e-3, atol=2e-3)
    assert float((results[0.0] - results["joint"]).abs().max()) > 0.05  # finetune lands elsewhere


@pytest.mark.slow
def test_pretrain_then_every_method_can_start_from_it(tmp_path, small_npz, one_thread):
    """`bitcl pretrain` writes a backbone that dlcft and finetune load; bad files are refused (exit 2)."""
    pre = tmp_path / "pre.safetensors"
    done = cli("pretrain", "--data", small_npz, "--classes", "0,1,2,3,4", "--epochs", "1", "--hidden", "32",
                   "--out", pre)
    assert done.returncode == 0, done.stderr
    for method in ("dlcft", "finetune"):
        r = cli("run", "--method", method, "--pretrained", pre, "--data", small_npz, "--classes", "5,6,7,8,9",
                    "--tasks", "5", "--scenario", "class", "--hidden", "32", "--epochs", "1", "--quiet")
        assert r.returncode == 0, r.stderr
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x80\x04not a state dict")
    for path, needle in ((pre, "does not fit"), (garbage, "neither safetensors nor"),
                         (tmp_path / "none.pt", "no such")):
        r = cli("run", "--method", "finetune", "--pretrained", path, "--data", small_npz, "--hidden", "64",
                    "--epochs", "1", "--quiet")
        assert r.returncode == 2 and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.slow
def test_user_state_dict_in_weights_only_torch_format(tmp_path, small_npz):
    """A plain torch state dict (saved with torch.save) of the backbone is accepted and used as θ0."""
    torch.manual_seed(123)
    engine = Engine(RunConfig(method="finetune", data=small_npz, hidden=[16], epochs=0, quiet=True, seed=5))
    saved = {k: v for k, v in engine.model.backbone.state_dict().items() if not k.endswith(("_codes", "_frozen"))}
    torch.save(saved, tmp_path / "user.pt")
    dl = Engine(RunConfig(method="dlcft", pretrained=str(tmp_path / "user.pt"), data=small_npz, hidden=[16],
                          epochs=1, quiet=True))
    dl.run()  # only the heads are linearised: the backbone stays at the loaded θ0
    for key, value in saved.items():
        assert torch.equal(dl.model.backbone.state_dict()[key], value), key


def gaussian_classes(per_class: int = 40, classes: int = 4, features: int = 4, seed: int = 0):
    """Four Gaussian clusters in R^4 (train and test): few features, so the linearised problem of a
    hidden-[6] MLP (P = 4*6+6 + 6*4+4 = 58 parameters) has a unique least-squares solution."""
    from bitcl.data import ArrayData
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, features, generator=g)
    y = torch.arange(classes).repeat_interleave(per_class)
    x = centres[y] + 0.7 * torch.randn(len(y), features, generator=g)
    return ArrayData("gaussians", x, y, x.clone(), y.clone())


def linearised_joint_optimum(engine) -> dict[str, torch.Tensor]:
    """argmin_θ Σ_t (1/N_t) Σ_n ||f(x_n; θ0) + J_n (θ − θ0) − onehot(y_n)||² over *all* parameters
    (closed form, float64): the normal equations (Σ_t Σ_n J_nᵀJ_n / N_t) δ = −Σ_t Σ_n J_nᵀ r_n / N_t."""
    from torch.func import functional_call, jacrev
    model, strategy = engine.model, engine.strategy
    theta0 = {n: strategy.state[f"theta0/{n}"].double() for n in strategy.names}
    model64 = __import__("copy").deepcopy(model).double().eval()
    names, shapes = list(theta0), [theta0[n].shape for n in theta0]
    flat0 = torch.cat([theta0[n].flatten() for n in names])

    def f(flat, x):
        params, start = {}, 0
        for n, shape in zip(names, shapes):
            params[n] = flat[start:start + shape.numel()].view(shape)
            start += shape.numel()
        return functional_call(model64, params, (x, 0), {"mask": False})

    lhs = torch.zeros(len(flat0), len(flat0), dtype=torch.float64)
    rhs = torch.zeros(len(flat0), dtype=torch.float64)
    for task in engine.scenario.tasks:
        x = task.x_train.double()
        jac = jacrev(f)(flat0, x).reshape(-1, len(flat0))           # (N * outputs, P)
        out0 = f(flat0, x)
        residual = (out0 - torch.nn.functional.one_hot(task.y_train, out0.shape[1]).double()).reshape(-1)
        lhs += jac.t() @ jac / len(x)
        rhs -= jac.t() @ residual / len(x)
    # ReLU's rescaling symmetries leave J null directions (one per hidden unit): the minimum-norm solution,
    # which gradient steps (always in the range of Jᵀ) reach from θ0
    delta = torch.linalg.pinv(lhs, hermitian=True, rtol=1e-6) @ rhs
    out, start = {}, 0
    for n, shape in zip(names, shapes):
        out[n] = (flat0 + delta)[start:start + shape.numel()].view(shape)
        start += shape.numel()
    return out


@pytest.mark.slow
def test_exact_penalty_on_the_whole_network_reaches_the_linearised_joint_optimum(one_thread):
    """layers=0, exact curvature: sequential class-incremental training of the linearised hidden-[6]
    MLP ends at the closed-form joint least-squares optimum of all its parameters; c=0 does not."""
    data = gaussian_classes()
    found = {}
    for c in (1.0, 0.0):
        cfg = RunConfig(method="dlcft", benchmark="split-mnist", scenario="class", classes=[0, 1, 2, 3], tasks=2,
                        hidden=[6], backbone="float", quiet=True, epochs=600, batch_size=1000, lr=0.3,
                        optimizer="sgd", momentum=0.9, lr_schedule="none",  # full-batch heavy ball: its steps
                        method_options={"curvature": "exact", "layers": 0, "c": c})  # stay in range(Jᵀ)
        engine = Engine(cfg, data=data)
        assert set(engine.strategy.names) == {n for n, _ in engine.model.named_parameters()}  # all of them
        engine.run()
        found[c] = {n: p.detach().double() for n, p in engine.strategy.params.items()}
        optimum = linearised_joint_optimum(engine)
    flat = lambda d: torch.cat([d[n].flatten() for n in optimum])
    gap = (flat(found[1.0]) - flat(optimum)).abs().max()
    assert float(gap) < 2e-3 * float(flat(optimum).abs().max()), float(gap)  # observed 7e-4 of 1.46
    assert float((flat(found[0.0]) - flat(optimum)).abs().max()) > 0.1  # finetune lands elsewhere


def conv_jacobian_gram(model, conv, x, outputs):
    """Σ_n J_nᵀJ_n of the first ``outputs`` outputs w.r.t. ``conv`` = model[0], parameters ordered per
    output channel o as [W_o flattened, b_o] (the penalty's dw = [W.flatten(1) | b])."""
    from torch.func import functional_call, jacrev, vmap
    theta = {k: v.detach() for k, v in model.named_parameters()}

    def f(w, b, xi):
        return functional_call(model, {**theta, "0.weight": w, "0.bias": b}, (xi.unsqueeze(0),))[0, :outputs]

    jw, jb = vmap(jacrev(f, argnums=(0, 1)), in_dims=(None, None, 0))(conv.weight.detach(), conv.bias.detach(), x)
    out, inp = conv.weight.shape[0], conv.weight[0].numel()
    jac = torch.cat([jw.reshape(len(x), outputs, out, inp), jb.reshape(len(x), outputs, out, 1)], 3)
    jac = jac.reshape(len(x) * outputs, -1)
    return jac.t() @ jac


def test_kfc_equals_the_exact_curvature_of_a_conv_output_layer(one_thread):
    """KFC (K-FAC for conv, Grosse & Martens 2016) rebuilt as G ⊗ S equals Σ_n J_nᵀJ_n when the conv is
    the output layer (its derivatives are then spatially uncorrelated: KFC's assumption holds), for
    one output position and for 3x3 positions; behind a ReLU and a linear layer it is a symmetric
    PSD approximation of the same scale."""
    from bitcl.importance.curvature import kfac_sums
    torch.manual_seed(0)
    for size in (3, 5):
        model = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.Flatten())
        x = torch.randn(7, 2, size, size)
        outputs = 3 * (size - 2) ** 2
        (g, s), = kfac_sums(model, {"0": model[0]}, model, x, outputs).values()
        torch.testing.assert_close(torch.kron(g, s) / len(x), conv_jacobian_gram(model, model[0], x, outputs),
                                   rtol=1e-4, atol=1e-4)
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(27, 2))
    x = torch.randn(7, 2, 5, 5)
    (g, s), = kfac_sums(model, {"0": model[0]}, model, x, 2).values()
    rebuilt, exact = torch.kron(g, s) / len(x), conv_jacobian_gram(model, model[0], x, 2)
    torch.testing.assert_close(rebuilt, rebuilt.t())
    assert float(torch.linalg.eigvalsh(rebuilt).min()) > -1e-5 * float(rebuilt.abs().max())
    assert 0.1 < float(torch.trace(rebuilt) / torch.trace(exact)) < 10


def test_kfac_on_every_layer_of_a_conv_net_trains_and_penalises(one_thread):
    """layers=0 with K-FAC on the conv backbone: KFC factors for every conv layer, a positive penalty
    away from the anchor, two tasks trained (this was refused up front before KFC)."""
    from bitcl.support import tiny_digits
    engine = Engine(RunConfig(method="dlcft", arch="conv", backbone="float", tasks=2, classes=[0, 1, 2, 3], epochs=1,
                              width=4, batch_size=16, quiet=True, method_options={"curvature": "kfac", "layers": 0}),
                    data=tiny_digits(per_class=8))
    convs = [n for n, m in engine.model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    try:
        assert len(engine.run().accuracy_matrix) == 2
    finally:
        engine.close()
    assert convs and all(f"kfac/0/{c}/G" in engine.strategy.state for c in convs)
    with torch.no_grad():
        for p in engine.strategy.params.values():
            p.add_(0.01)
    assert float(engine.strategy.penalty()) > 0


def test_curvature_forms_come_from_the_registry_and_keep_their_checkpoint_keys(small_npz):
    """--curvature's choices are the registry's names; each form's state keys are those old checkpoints hold;
    exact curvature over 10,000 parameters is refused with a ConfigError."""
    from bitcl.errors import ConfigError
    from bitcl.importance.curvature import CURVATURES
    from bitcl.strategies.dlcft import DlcftOptions
    assert set(DlcftOptions.__dataclass_fields__["curvature"].metadata["choices"]) == {"exact", "kfac", "diagonal"}
    assert set(CURVATURES) == {"exact", "kfac", "diagonal"}
    state = {kind: set(engine_for(small_npz, layers=1, curvature=kind).strategy.state) for kind in CURVATURES}
    common = {"tasks_seen", "theta0/heads.0.weight", "theta0/heads.0.bias", "anchor/heads.0.weight",
              "anchor/heads.0.bias"}
    assert state["exact"] == common | {"curvature"}
    assert state["diagonal"] == common | {"diag/heads.0.weight", "diag/heads.0.bias"}
    assert state["kfac"] == common  # kfac/<task>/<layer>/G and /S arrive at the end of each task
    cfg = RunConfig(method="dlcft", benchmark="split-mnist", scenario="class", classes=[0, 1, 2, 3], tasks=2,
                    data=small_npz, hidden=[16], backbone="float", quiet=True, epochs=0,
                    method_options={"curvature": "exact", "layers": 0})
    with pytest.raises(ConfigError, match="exact curvature for 12,628 linearised parameters"):
        Engine(cfg)
