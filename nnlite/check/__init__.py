"""Checking the math: Jacobians built on request (``jacobian``, ``jvp``, ``vjp``), gradient
checks against finite differences (``check_layer``), and Lipschitz constants
(``lipschitz``, ``lipschitz_bound``). Tools over any layer: they import ``nnlite.core``,
and use what a layer says of itself (its ``lipschitz_bound``), never its class name.
May import: core, layers, models."""
from .jacobians import GradCheckReport, check_layer, jacobian, jvp, numerical_jacobian, vjp
from .lipschitz import lipschitz, lipschitz_bound

__all__ = ["jvp", "vjp", "jacobian", "numerical_jacobian", "check_layer", "GradCheckReport",
           "lipschitz", "lipschitz_bound"]
