"""Learning-rate schedules, as ``torch.optim.lr_scheduler``; each is also a ``fit`` callback.

A schedule sets each parameter group's ``lr`` from the count of epochs (or, for a per-batch
schedule, of batches) done and the group's ``initial_lr``. ``nnlite.optim`` re-exports them.
"""
from __future__ import annotations

import math
from typing import Any, Callable

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
