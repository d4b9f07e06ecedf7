"""Backward rules: how a net differentiates its ReLUs, max-pools, linear maps and sums.

Every zoo net routes four kinds of operation through a static :class:`Rules`
object instead of calling them directly:

* ``rules.relu(x)``                        rectified linear unit;
* ``rules.max_pool(x, window, stride, padding)``  max-pooling (NHWC, -inf padding);
* ``rules.linear(f, x, *weights)``         an affine map ``f(x, *weights)`` of x
  (convolution, dense layer, eval-mode batch norm, average pooling);
* ``rules.add(a, b)``                      a residual sum.

The forward value of every rule is the standard one; a rule changes only the
backward pass, through :func:`jax.custom_vjp`.  ``jax.grad`` of a net applied
with ``rules=GUIDED`` is therefore guided backpropagation, under ``jit`` and
``vmap``, with no hooks.  :data:`STANDARD` (plain autodiff) is the default.

A new rule set is a :meth:`Rules.replace` of an existing one::

    my_rules = STANDARD.replace(name="mine", relu=my_relu)

Rules are frozen dataclasses of module-level functions, hence hashable and
usable as static arguments of ``jax.jit``.

References:
  Springenberg et al., "Striving for simplicity: the all convolutional net",
  ICLR workshop 2015 (guided backpropagation).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax

__all__ = [
    "Rules",
    "STANDARD",
    "GUIDED",
    "standard_relu",
    "standard_max_pool",
    "standard_linear",
    "standard_add",
    "guided_relu",
]


def standard_relu(x: jax.Array) -> jax.Array:
    """ReLU max(x, 0) with the standard derivative 1[x > 0]."""
    return jnp.maximum(x, 0)


def standard_max_pool(x: jax.Array, window: int, stride: int, padding: int = 0) -> jax.Array:
    """Max-pooling of x (N, H, W, C) over window x window cells, padding with -inf.

    Matches ``torch.nn.MaxPool2d(window, stride, padding)`` (floor mode).
    """
    pad = ((0, 0), (padding, padding), (padding, padding), (0, 0))
    return lax.reduce_window(
        x, -jnp.inf, lax.max, (1, window, window, 1), (1, stride, stride, 1), pad
    )


def standard_linear(f: Callable[..., jax.Array], x: jax.Array, *weights) -> jax.Array:
    """Apply the affine map ``f(x, *weights)`` with its ordinary derivative."""
    return f(x, *weights)


def standard_add(a: jax.Array, b: jax.Array) -> jax.Array:
    """Residual sum a + b with the ordinary derivative (the gradient is copied)."""
    return a + b


@jax.custom_vjp
def guided_relu(x: jax.Array) -> jax.Array:
    """ReLU whose backward pass keeps only positive gradients at positive inputs.

    Forward: max(x, 0).  Backward: dL/dx = max(g, 0) * 1[x > 0], with g the
    incoming gradient (Springenberg et al. 2015).
    """
    return jnp.maximum(x, 0)


def _guided_relu_fwd(x):
    return jnp.maximum(x, 0), x


def _guided_relu_bwd(x, g):
    return (jnp.where((x > 0) & (g > 0), g, jnp.zeros_like(g)),)


guided_relu.defvjp(_guided_relu_fwd, _guided_relu_bwd)


@dataclasses.dataclass(frozen=True)
class Rules:
    """A static set of backward rules used by every net of the zoo.

    Attributes:
      name: a short name, shown in reprs and reports.
      relu: ``relu(x) -> y``.
      max_pool: ``max_pool(x, window, stride, padding) -> y`` on NHWC input.
      linear: ``linear(f, x, *weights) -> f(x, *weights)``; f is affine in x.
      add: ``add(a, b) -> a + b`` for residual connections.
    """

    name: str = "standard"
    relu: Callable[[jax.Array], jax.Array] = standard_relu
    max_pool: Callable[..., jax.Array] = standard_max_pool
    linear: Callable[..., jax.Array] = standard_linear
    add: Callable[[jax.Array, jax.Array], jax.Array] = standard_add

    def replace(self, **changes) -> "Rules":
        """Return a copy with some rules replaced (e.g. ``relu=guided_relu``)."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"changes: unknown rule(s) {sorted(unknown)}; "
                             f"expected some of {[f.name for f in dataclasses.fields(self)]}")
        return dataclasses.replace(self, **changes)


STANDARD = Rules()
"""Plain automatic differentiation."""

GUIDED = STANDARD.replace(name="guided", relu=guided_relu)
"""Guided backpropagation (Springenberg et al. 2015): ReLU passes max(g, 0) * 1[x > 0]."""
