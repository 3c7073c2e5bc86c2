"""Learning-rate schedules, as ``torch.optim.lr_scheduler``; each is also a ``fit`` callback.

A schedule sets each parameter group's ``lr`` from the count of epochs (or, for a per-batch
schedule, of batches) done and the group's ``initial_lr``. ``nnlite.optim`` re-exports them.
"""
from __future__ import annotations

import math
from typing import Any, Callable

from ..core.door import check_number
from .callbacks import Callback

Optimizer = Any  # an nnlite.optim.Optimizer (this module sits below it)


class LRScheduler(Callback):
    """Sets each group's learning rate from the count of epochs (or, with ``per_batch``,
    of batches) done: ``lr = lr_at(count, the group's initial lr)``; ``step()`` counts one.

    It is also a Callback: pass it to ``fit(callbacks=[...])`` and it steps itself, after
    every epoch, or after every batch for a per-batch schedule.
    """

    per_batch = False

    def __init__(self, optimizer: Optimizer):
        super().__init__()
        self.optimizer = optimizer
        self.last_epoch = 0

    def lr_at(self, count: int, base_lr: float) -> float:
        raise NotImplementedError

    @property
    def base_lr(self) -> float:
        return self.optimizer.initial_lr

    def _apply(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(self.last_epoch, group["initial_lr"])

    def step(self) -> None:
        self.last_epoch += 1
        self._apply()

    def on_train_begin(self, logs: dict | None = None) -> None:
        if self.per_batch:  # every optimizer step is a batch done, across epochs and resumes
            self.last_epoch = self.optimizer.steps
        else:
            self.last_epoch = self.model.initial_epoch if self.model is not None else 0
        self._apply()

    def on_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.per_batch:
            self.step()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if not self.per_batch:
            self.step()


class StepLR(LRScheduler):
    """lr = base_lr · γ^⌊epoch / step_size⌋."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1):
        super().__init__(optimizer)
        self.step_size, self.gamma = int(step_size), float(gamma)

    def lr_at(self, count: int, base_lr: float) -> float:
        return base_lr * self.gamma ** (count // self.step_size)


class CosineAnnealingLR(LRScheduler):
    """lr = η_min + ½(base_lr − η_min)(1 + cos(π · epoch / T_max))."""

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0):
        super().__init__(optimizer)
        self.T_max, self.eta_min = int(T_max), float(eta_min)

    def lr_at(self, count: int, base_lr: float) -> float:
        return self.eta_min + 0.5 * (base_lr - self.eta_min) * (
            1 + math.cos(math.pi * count / self.T_max))


class LambdaLR(LRScheduler):
    """lr = base_lr · lr_lambda(batches done), as ``torch.optim.lr_scheduler.LambdaLR``;
    as a ``fit`` callback it steps after every batch, counting across epochs."""

    per_batch = True

    def __init__(self, optimizer: Optimizer, lr_lambda: Callable[[int], float]):
        super().__init__(optimizer)
        self.lr_lambda = lr_lambda

    def lr_at(self, count: int, base_lr: float) -> float:
        return base_lr * self.lr_lambda(count)


class WarmupCosineLR(LRScheduler):
    """Per batch, as nanoGPT: linear warmup, lr = base_lr·(t + 1)/(warmup_steps + 1) for
    t < warmup_steps; then cosine decay to ``min_lr`` at ``total_steps``,
    lr = min_lr + ½(base_lr − min_lr)(1 + cos(π·(t − warmup)/(total − warmup)));
    ``min_lr`` after that. t counts the batches done."""

    per_batch = True

    def __init__(self, optimizer: Optimizer, warmup_steps: int, total_steps: int,
                 min_lr: float = 0.0):
        super().__init__(optimizer)
        if not 0 <= warmup_steps < total_steps:
            raise ValueError(f"WarmupCosineLR: need 0 <= warmup_steps < total_steps, got "
                             f"{warmup_steps} and {total_steps}")
        self.warmup_steps, self.total_steps = int(warmup_steps), int(total_steps)
        self.min_lr = float(min_lr)

    def lr_at(self, count: int, base_lr: float) -> float:
        if count < self.warmup_steps:
            return base_lr * (count + 1) / (self.warmup_steps + 1)
        if count > self.total_steps:
            return self.min_lr
        ratio = (count - self.warmup_steps) / (self.total_steps - self.warmup_steps)
        return self.min_lr + 0.5 * (base_lr - self.min_lr) * (1 + math.cos(math.pi * ratio))


class ExponentialLR(LRScheduler):
    """lr = base_lr · γ^epoch, as ``torch.optim.lr_scheduler.ExponentialLR``."""

    def __init__(self, optimizer: Optimizer, gamma: float):
        super().__init__(optimizer)
        self.gamma = check_number("ExponentialLR", "gamma", gamma, low=0)

    def lr_at(self, count: int, base_lr: float) -> float:
        return base_lr * self.gamma ** count


class OneCycleLR(LRScheduler):
    """The 1cycle policy per batch, as ``torch.optim.lr_scheduler.OneCycleLR``: from
    max_lr/div_factor up to max_lr over the first ``pct_start`` of ``total_steps``
    (= epochs · steps_per_epoch when not given), then down to
    max_lr/(div_factor·final_div_factor) (``three_phase``: back to the start first), each
    phase annealed by cosine, (start − end)/2·(1 + cos(π·pct)) + end, or linearly. With
    ``cycle_momentum`` the momentum (SGD's, or Adam's β₁) moves the other way, between
    ``max_momentum`` and ``base_momentum``. Stepping past ``total_steps`` is a ValueError.
    """

    per_batch = True

    def __init__(self, optimizer: Optimizer, max_lr: float | list[float],
                 total_steps: int | None = None, epochs: int | None = None,
                 steps_per_epoch: int | None = None, pct_start: float = 0.3,
                 anneal_strategy: str = "cos", cycle_momentum: bool = True,
                 base_momentum: float = 0.85, max_momentum: float = 0.95,
                 div_factor: float = 25.0, final_div_factor: float = 1e4,
                 three_phase: bool = False):
        super().__init__(optimizer)
        if total_steps is None:
            if epochs is None or steps_per_epoch is None:
                raise ValueError("OneCycleLR: give total_steps, or epochs and steps_per_epoch")
            total_steps = check_number("OneCycleLR", "epochs", epochs, integer=True, low=1) * \
                check_number("OneCycleLR", "steps_per_epoch", steps_per_epoch, integer=True,
                             low=1)
        self.total_steps = check_number("OneCycleLR", "total_steps", total_steps, integer=True,
                                        low=1)
        pct = check_number("OneCycleLR", "pct_start", pct_start, low=0, high=1)
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"OneCycleLR: anneal_strategy must be 'cos' or 'linear', got "
                             f"{anneal_strategy!r}")
        self.anneal_strategy = anneal_strategy
        groups = optimizer.param_groups
        max_lrs = list(max_lr) if isinstance(max_lr, (list, tuple)) else [max_lr] * len(groups)
        if len(max_lrs) != len(groups):
            raise ValueError(f"OneCycleLR: {len(max_lrs)} max_lr values for {len(groups)} "
                             f"parameter groups")
        self.momentum_key = None
        if cycle_momentum:
            self.momentum_key = next((k for k in ("momentum", "betas") if k in groups[0]), None)
            if self.momentum_key is None:
                raise ValueError(f"OneCycleLR: {type(optimizer).__name__} has no momentum or "
                                 f"beta1 to cycle; pass cycle_momentum=False")
        n = self.total_steps
        ends = [pct * n - 1, 2 * pct * n - 2, n - 1] if three_phase else [pct * n - 1, n - 1]
        self.points = []  # per group: (end step, lr, momentum) at each phase's end
        for group, top in zip(groups, max_lrs):
            top = check_number("OneCycleLR", "max_lr", top, low=0)
            start, low = top / div_factor, top / div_factor / final_div_factor
            lrs = [top, start, low] if three_phase else [top, low]
            moms = [base_momentum, max_momentum, max_momentum] if three_phase else \
                [base_momentum, max_momentum]
            self.points.append([(start, max_momentum)] + list(zip(ends, lrs, moms)))
            group["initial_lr"] = group["lr"] = start
            self._set_momentum(group, max_momentum)

    def _anneal(self, start: float, end: float, pct: float) -> float:
        if self.anneal_strategy == "cos":
            return end + (start - end) / 2 * (1 + math.cos(math.pi * pct))
        return (end - start) * pct + start

    def _set_momentum(self, group: dict[str, Any], value: float) -> None:
        if self.momentum_key == "betas":
            group["betas"] = (value, group["betas"][1])
        elif self.momentum_key == "momentum":
            group["momentum"] = value

    def _apply(self) -> None:
        step = self.last_epoch
        if step > self.total_steps:
            raise ValueError(f"OneCycleLR: stepped {step} times, more than total_steps "
                             f"{self.total_steps}")
        for group, points in zip(self.optimizer.param_groups, self.points):
            (lr, mom), begin = points[0], 0.0
            for i, (end, end_lr, end_mom) in enumerate(points[1:]):
                if step <= end or i == len(points) - 2:
                    pct = (step - begin) / (end - begin)
                    group["lr"] = self._anneal(lr, end_lr, pct)
                    self._set_momentum(group, self._anneal(mom, end_mom, pct))
                    break
                lr, mom, begin = end_lr, end_mom, end


class ReduceLROnPlateau(Callback):
    """Multiply every group's lr by ``factor`` (not below ``min_lr``) when ``monitor`` has
    not improved for more than ``patience`` epochs, as
    ``torch.optim.lr_scheduler.ReduceLROnPlateau``; a ``fit`` callback that reads the
    monitored metric from each epoch's logs (``monitor`` is Keras's name). Improvement: in
    ``mode="min"`` a value below best·(1 − threshold) (``threshold_mode="rel"``) or
    best − threshold (``"abs"``); ``"max"`` the mirror. After a reduction, ``cooldown``
    epochs pass before counting again; a change smaller than ``eps`` is skipped."""

    def __init__(self, optimizer: Optimizer, mode: str = "min", factor: float = 0.1,
                 patience: int = 10, threshold: float = 1e-4, threshold_mode: str = "rel",
                 cooldown: int = 0, min_lr: float | list[float] = 0, eps: float = 1e-8,
                 monitor: str = "val_loss"):
        name = "ReduceLROnPlateau"
        if mode not in ("min", "max") or threshold_mode not in ("rel", "abs"):
            raise ValueError(f"{name}: mode must be 'min' or 'max' and threshold_mode 'rel' "
                             f"or 'abs', got {mode!r} and {threshold_mode!r}")
        self.optimizer, self.mode, self.threshold_mode, self.monitor = (
            optimizer, mode, threshold_mode, monitor)
        self.factor = check_number(name, "factor", factor, low=0, high=1, open_high=True)
        self.patience = check_number(name, "patience", patience, integer=True, low=0)
        self.threshold = check_number(name, "threshold", threshold, low=0)
        self.cooldown = check_number(name, "cooldown", cooldown, integer=True, low=0)
        self.eps = check_number(name, "eps", eps, low=0)
        groups = optimizer.param_groups
        min_lrs = list(min_lr) if isinstance(min_lr, (list, tuple)) else [min_lr] * len(groups)
        if len(min_lrs) != len(groups):
            raise ValueError(f"{name}: {len(min_lrs)} min_lr values for {len(groups)} "
                             f"parameter groups")
        self.min_lrs = [check_number(name, "min_lr", v, low=0) for v in min_lrs]
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = self.cooldown_counter = 0

    def _better(self, value: float) -> bool:
        if self.mode == "min":
            return value < (self.best * (1 - self.threshold) if self.threshold_mode == "rel"
                            else self.best - self.threshold)
        return value > (self.best * (1 + self.threshold) if self.threshold_mode == "rel"
                        else self.best + self.threshold)

    def step(self, value: float) -> None:
        """Count one epoch whose monitored metric was ``value`` (torch's ``step(metrics)``)."""
        if self._better(value):
            self.best, self.num_bad_epochs = value, 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            for group, low in zip(self.optimizer.param_groups, self.min_lrs):
                new = max(group["lr"] * self.factor, low)
                if group["lr"] - new > self.eps:
                    group["lr"] = new
            self.cooldown_counter, self.num_bad_epochs = self.cooldown, 0

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        if self.monitor not in logs:
            raise ValueError(f"ReduceLROnPlateau: '{self.monitor}' is not among the logged "
                             f"metrics {sorted(logs)}; pass validation_data to fit, or "
                             f"monitor one of those")
        self.step(float(logs[self.monitor]))
