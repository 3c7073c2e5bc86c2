"""Optimizer updates against the algorithms documented for torch.optim, step by step."""
import numpy as np
import pytest

import nnlite
from nnlite import layers, optim

from conftest import require

#: These oracles run on both kernel paths: the compiled kernels (the numba extra) and NumPy.
pytestmark = pytest.mark.usefixtures("kernel_path")


def reference(name, theta, grads, lr, **hp):
    """The torch.optim documentation's pseudo-code, written plainly for one array."""
    theta = theta.copy()
    m = np.zeros_like(theta)
    v = np.zeros_like(theta)
    b = np.zeros_like(theta)
    wd = hp.get("weight_decay", 1e-2 if name == "AdamW" else 0.0)
    for t, grad in enumerate(grads, start=1):
        if name == "SGD":
            g = grad + wd * theta
            mu = hp.get("momentum", 0.0)
            if mu:
                b = mu * b + g if t > 1 else g.copy()
                g = g + mu * b if hp.get("nesterov") else b
            theta = theta - lr * g
        elif name in ("Adam", "AdamW"):
            b1, b2 = hp.get("betas", (0.9, 0.999))
            eps = hp.get("eps", 1e-8)
            if name == "AdamW":
                theta = theta - lr * wd * theta
                g = grad
            else:
                g = grad + wd * theta
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            m_hat, v_hat = m / (1 - b1 ** t), v / (1 - b2 ** t)
            theta = theta - lr * m_hat / (np.sqrt(v_hat) + eps)
        elif name == "RMSprop":
            alpha, eps, mu = hp.get("alpha", 0.99), hp.get("eps", 1e-8), hp.get("momentum", 0.0)
            g = grad + wd * theta
            v = alpha * v + (1 - alpha) * g * g
            if mu:
                b = mu * b + g / (np.sqrt(v) + eps)
                theta = theta - lr * b
            else:
                theta = theta - lr * g / (np.sqrt(v) + eps)
    return theta


CONFIGS = [
    ("SGD", {}), ("SGD", {"momentum": 0.9}), ("SGD", {"momentum": 0.9, "nesterov": True}),
    ("SGD", {"momentum": 0.5, "weight_decay": 0.1}),
    ("Adam", {}), ("Adam", {"weight_decay": 0.05, "betas": (0.8, 0.99), "eps": 1e-6}),
    ("AdamW", {}), ("AdamW", {"weight_decay": 0.3}),
    ("RMSprop", {}), ("RMSprop", {"momentum": 0.9, "weight_decay": 0.01}),
]


@pytest.mark.parametrize("name, hp", CONFIGS, ids=[f"{n}-{h}" for n, h in CONFIGS])
def test_updates_match_torch_algorithms(name, hp, rng):
    shapes = [(3, 4), (4,), (2, 2)]
    params = [nnlite.Parameter(rng.standard_normal(s), np.float64) for s in shapes]
    start = [p.data.copy() for p in params]
    grads = [[rng.standard_normal(s) for _ in range(6)] for s in shapes]
    opt = getattr(optim, name)(params, lr=0.05, **hp)
    for step in range(6):
        opt.zero_grad()
        for p, g in zip(params, grads):
            p.grad += g[step]
        opt.step()
    for p, theta0, g in zip(params, start, grads):
        np.testing.assert_allclose(p.data, reference(name, theta0, g, 0.05, **hp),
                                   rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_adam_blocks_do_not_change_the_update(name, rng):
    """Adam updates in blocks of optim.BLOCK values; here block edges fall inside parameters."""
    shapes = [(optim.BLOCK + 5,), (3, optim.BLOCK // 2)]
    params = [nnlite.Parameter(rng.standard_normal(s), np.float64) for s in shapes]
    start = [p.data.copy() for p in params]
    grads = [[rng.standard_normal(s) for _ in range(3)] for s in shapes]
    opt = getattr(optim, name)(params, lr=0.05)
    for step in range(3):
        opt.zero_grad()
        for p, g in zip(params, grads):
            p.grad[...] = g[step]
        opt.step()
    for p, theta0, g in zip(params, start, grads):
        np.testing.assert_allclose(p.data, reference(name, theta0, g, 0.05),
                                   rtol=1e-10, atol=1e-12)


def test_adam_first_step_by_hand():
    p = nnlite.Parameter(np.array([1.0, -2.0]), np.float64)
    p.grad[...] = [0.5, -3.0]
    optim.Adam([p], lr=0.1).step()
    # m̂ = g and v̂ = g², so the first step is lr · g/(|g| + ε) ≈ lr · sign(g)
    np.testing.assert_allclose(p.data, [0.9, -1.9], rtol=1e-7)


def test_sgd_step_by_hand():
    p = nnlite.Parameter(np.array([1.0, 2.0]), np.float64)
    opt = optim.SGD([p], lr=0.5, momentum=0.9)
    for _ in range(2):
        p.grad[...] = [1.0, -1.0]
        opt.step()
    # b₁ = g, θ₁ = θ₀ − 0.5g; b₂ = 0.9g + g = 1.9g, θ₂ = θ₁ − 0.95g
    np.testing.assert_allclose(p.data, [1 - 0.5 - 0.95, 2 + 0.5 + 0.95])


def test_optimizer_does_not_modify_grad_when_decaying():
    p = nnlite.Parameter(np.array([1.0, 2.0]), np.float64)
    p.grad[...] = [0.1, 0.2]
    optim.Adam([p], weight_decay=0.5).step()
    np.testing.assert_array_equal(p.grad, [0.1, 0.2])


def test_reassigned_data_and_grad_are_respected():
    layer = layers.Linear(3, 2, dtype=np.float64)
    opt = optim.SGD(layer.parameters(), lr=1.0)
    layer.weight.data = np.ones((2, 3))          # a fresh array
    layer.bias.data[...] = 5.0                    # edited in place
    layer.weight.grad = np.full((2, 3), 0.25)     # a fresh gradient array
    opt.step()
    np.testing.assert_array_equal(layer.weight.data, 0.75)
    np.testing.assert_array_equal(layer.bias.data, 5.0)
    opt.zero_grad()
    np.testing.assert_array_equal(layer.weight.grad, 0)


def test_a_second_optimizer_over_the_same_parameters():
    p = nnlite.Parameter(np.array([1.0]), np.float64)
    first = optim.SGD([p], lr=1.0)
    second = optim.SGD([p], lr=0.1)
    p.grad[...] = 1.0
    second.step()
    assert p.data[0] == pytest.approx(0.9)
    p.grad[...] = 1.0
    first.step()          # sees the 0.9 the second optimizer left
    assert p.data[0] == pytest.approx(-0.1)
    p.grad[...] = 1.0
    second.step()
    assert p.data[0] == pytest.approx(-0.2)


def test_changed_shape_is_a_clear_error():
    p = nnlite.Parameter(np.zeros(3), np.float64)
    opt = optim.SGD([p], lr=0.1)
    p.data = np.zeros(4)
    with pytest.raises(ValueError, match=r"changed shape from \(3,\) to \(4,\)"):
        opt.step()


def test_converting_the_model_under_an_optimizer_is_a_clear_error():
    layer = layers.Linear(3, 2)
    opt = optim.Adam(layer.parameters())
    layer.astype(np.float64)
    with pytest.raises(ValueError, match="changed dtype from float32 to float64"):
        opt.step()


@pytest.mark.parametrize("make", [
    lambda ps: optim.SGD(ps, lr=0), lambda ps: optim.Adam(ps, lr=-1e-3),
    lambda ps: optim.RMSprop(ps, lr=0.0), lambda ps: optim.AdamW(ps, lr=float("nan")),
])
def test_non_positive_learning_rate_is_rejected(make):
    with pytest.raises(ValueError, match="lr must be a positive number"):
        make([nnlite.Parameter(np.zeros(2), np.float64)])


def test_empty_parameter_list_is_rejected():
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.Adam([])


def test_clip_grad_norm():
    a, b = nnlite.Parameter(np.zeros(2), np.float64), nnlite.Parameter(np.zeros(1), np.float64)
    a.grad[...] = [3.0, 0.0]
    b.grad[...] = [4.0]
    assert optim.clip_grad_norm_([a, b], 1.0) == pytest.approx(5.0)
    np.testing.assert_allclose(np.concatenate([a.grad, b.grad]), [0.6, 0, 0.8], rtol=1e-5)


def test_max_grad_norm_clips_before_the_step():
    p = nnlite.Parameter(np.array([0.0, 0.0]), np.float64)
    p.grad[...] = [30.0, 40.0]
    optim.SGD([p], lr=1.0, max_grad_norm=5.0).step()
    np.testing.assert_allclose(p.data, [-3.0, -4.0], rtol=1e-6)


def test_schedules():
    p = nnlite.Parameter(np.zeros(1), np.float64)
    opt = optim.SGD([p], lr=1.0)
    step = optim.StepLR(opt, step_size=2, gamma=0.5)
    lrs = []
    for _ in range(5):
        step.step()
        lrs.append(opt.lr)
    assert lrs == [1.0, 0.5, 0.5, 0.25, 0.25]
    opt2 = optim.SGD([p], lr=1.0)
    cos = optim.CosineAnnealingLR(opt2, T_max=4, eta_min=0.0)
    values = []
    for _ in range(4):
        cos.step()
        values.append(opt2.lr)
    np.testing.assert_allclose(values, [0.5 + 0.5 * np.cos(np.pi * k / 4) for k in range(1, 5)])


def test_mixed_dtypes_are_a_clear_error():
    with pytest.raises(ValueError, match="different dtypes"):
        optim.SGD([nnlite.Parameter(np.zeros(2), np.float32),
                   nnlite.Parameter(np.zeros(2), np.float64)], lr=0.1)


# -- the optimizers and schedules of the recipes people port, against torch.optim ----------
TORCH_CONFIGS = [
    ("Adagrad", {}), ("Adagrad", {"lr_decay": 0.05, "weight_decay": 0.1,
                                  "initial_accumulator_value": 0.3, "eps": 1e-8}),
    ("Adadelta", {}), ("Adadelta", {"rho": 0.8, "eps": 1e-5, "weight_decay": 0.1}),
    ("NAdam", {}), ("NAdam", {"weight_decay": 0.1, "momentum_decay": 0.01}),
    ("NAdam", {"weight_decay": 0.1, "decoupled_weight_decay": True, "betas": (0.8, 0.99)}),
    ("RAdam", {}), ("RAdam", {"weight_decay": 0.1, "eps": 1e-6}),
    ("RAdam", {"weight_decay": 0.1, "decoupled_weight_decay": True}),
]


@pytest.mark.parametrize("name, hp", TORCH_CONFIGS, ids=[f"{n}-{h}" for n, h in TORCH_CONFIGS])
def test_new_optimizers_equal_torch_after_25_steps_with_groups(name, hp, rng):
    torch = require("torch")
    shapes = [(3, 4), (4,), (2, 2)]
    start = [rng.standard_normal(s) for s in shapes]
    grads = [[rng.standard_normal(s) for s in shapes] for _ in range(25)]
    ours = [nnlite.Parameter(w.copy(), np.float64) for w in start]
    theirs = [torch.nn.Parameter(torch.from_numpy(w.copy())) for w in start]
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # torch's scalar state (NAdam's μ product) too
    try:
        mine = getattr(optim, name)([{"params": ours[:2]}, {"params": ours[2:], "lr": 0.02}],
                                    lr=0.05, **hp)
        reference = getattr(torch.optim, name)([{"params": theirs[:2]},
                                                {"params": theirs[2:], "lr": 0.02}],
                                               lr=0.05, **hp)
        for step in grads:
            mine.zero_grad()
            for p, t, g in zip(ours, theirs, step):
                p.grad += g
                t.grad = torch.from_numpy(g.copy())
            mine.step()
            reference.step()
    finally:
        torch.set_default_dtype(before)
    for p, t in zip(ours, theirs):
        np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=1e-10, atol=1e-12)


def _lrs(scheduler, steps, momentum=None):
    """The lr (and momentum) of each group at each of ``steps`` steps of ``scheduler``."""
    seq = []
    for _ in range(steps):
        groups = scheduler.optimizer.param_groups
        seq.append([(g["lr"], g[momentum] if momentum else None) for g in groups])
        scheduler.step()
    return seq


def _momentum(value):
    return value[0] if isinstance(value, tuple) else value


@pytest.mark.parametrize("make, torch_name, args, momentum", [
    (optim.SGD, "ExponentialLR", {"gamma": 0.9}, None),
    (optim.SGD, "OneCycleLR", {"max_lr": 0.5, "total_steps": 30}, "momentum"),
    (optim.Adam, "OneCycleLR", {"max_lr": [0.5, 0.2], "epochs": 3, "steps_per_epoch": 10,
                                "anneal_strategy": "linear", "pct_start": 0.25}, "betas"),
    (optim.SGD, "OneCycleLR", {"max_lr": 0.5, "total_steps": 30, "three_phase": True,
                               "div_factor": 10, "final_div_factor": 100}, "momentum"),
    (optim.RMSprop, "OneCycleLR", {"max_lr": 0.5, "total_steps": 30,
                                   "cycle_momentum": False}, None)])
def test_new_schedules_equal_torchs_over_30_steps(make, torch_name, args, momentum):
    torch = require("torch")
    extra = {"momentum": 0.9} if make is optim.SGD else {}
    groups = [[nnlite.Parameter(np.zeros(2))], [nnlite.Parameter(np.zeros(3))]]
    mine = getattr(optim, torch_name)(make([{"params": g} for g in groups], lr=0.1, **extra),
                                      **args)
    tensors = [[torch.zeros(2, requires_grad=True)], [torch.zeros(3, requires_grad=True)]]
    torch_opt = getattr(torch.optim, make.__name__)([{"params": t} for t in tensors], lr=0.1,
                                                    **extra)
    theirs = getattr(torch.optim.lr_scheduler, torch_name)(torch_opt, **args)
    ours_seq = _lrs(mine, 30, momentum)
    for step, groups_now in enumerate(ours_seq):
        want = [(g["lr"], g[momentum] if momentum else None) for g in torch_opt.param_groups]
        for (lr, mom), (lr_t, mom_t) in zip(groups_now, want):
            assert lr == pytest.approx(lr_t, rel=1e-12), step
            if momentum:
                assert _momentum(mom) == pytest.approx(_momentum(mom_t), rel=1e-12), step
        torch_opt.step()
        theirs.step()


def test_one_cycle_refuses_to_step_past_its_total_and_an_optimizer_without_momentum():
    opt = optim.SGD([nnlite.Parameter(np.zeros(2))], lr=0.1, momentum=0.9)
    schedule = optim.OneCycleLR(opt, max_lr=1.0, total_steps=3)
    for _ in range(3):
        schedule.step()
    with pytest.raises(ValueError, match="more than total_steps 3"):
        schedule.step()
    with pytest.raises(ValueError, match="no momentum or beta1"):
        optim.OneCycleLR(optim.Adagrad([nnlite.Parameter(np.zeros(2))]), max_lr=1.0,
                         total_steps=3)
    with pytest.raises(ValueError, match="total_steps, or epochs and steps_per_epoch"):
        optim.OneCycleLR(opt, max_lr=1.0)


METRICS = [1.0, 0.9, 0.95, 0.95, 0.96, 0.9, 0.89, 0.91, 0.92, 0.93, 0.94, 0.95, 0.88, 0.88,
           0.9, 0.95, 0.97, 0.99, 1.0, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 0.49, 0.49, 0.5, 0.51, 0.5]


@pytest.mark.parametrize("args", [
    {}, {"patience": 2}, {"patience": 1, "cooldown": 2, "factor": 0.5},
    {"mode": "max", "patience": 1, "threshold": 0.05},
    {"patience": 0, "threshold_mode": "abs", "threshold": 0.02, "min_lr": [0.01, 0.002]}])
def test_reduce_lr_on_plateau_equals_torchs_over_30_epochs(args):
    torch = require("torch")
    groups = [{"params": [nnlite.Parameter(np.zeros(2))]},
              {"params": [nnlite.Parameter(np.zeros(2))], "lr": 0.02}]
    opt = optim.SGD(groups, lr=0.1)
    mine = optim.ReduceLROnPlateau(opt, **args)
    torch_opt = torch.optim.SGD([{"params": [torch.zeros(2, requires_grad=True)]},
                                 {"params": [torch.zeros(2, requires_grad=True)], "lr": 0.02}],
                                lr=0.1)
    theirs = torch.optim.lr_scheduler.ReduceLROnPlateau(torch_opt, **args)
    for epoch, value in enumerate(METRICS):
        mine.on_epoch_end(epoch, {"val_loss": value, "loss": 0.0})
        theirs.step(value)
        assert [g["lr"] for g in opt.param_groups] == pytest.approx(
            [g["lr"] for g in torch_opt.param_groups], rel=1e-12), epoch


def test_reduce_lr_on_plateau_in_fit_reads_its_metric_and_names_a_missing_one(rng):
    x = rng.standard_normal((64, 4)).astype(np.float32)
    y = rng.integers(0, 2, 64)
    model = nnlite.Sequential(layers.Linear(4, 2))
    opt = optim.SGD(model.parameters(), lr=1e-6)   # learns nothing: the loss plateaus
    plateau = optim.ReduceLROnPlateau(opt, patience=0, monitor="loss", threshold=0.5)
    model.fit(x, y, loss=nnlite.losses.CrossEntropy(), optimizer=opt, epochs=3, verbose=False,
              callbacks=[plateau])
    assert opt.lr == pytest.approx(1e-6 * 0.1 ** 2)
    with pytest.raises(ValueError, match="'val_loss' is not among the logged metrics"):
        model.fit(x, y, loss=nnlite.losses.CrossEntropy(), optimizer=opt, epochs=1,
                  verbose=False, callbacks=[optim.ReduceLROnPlateau(opt)])
