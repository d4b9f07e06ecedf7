"""DINO's projection head for convnets (Caron et al. ICCV 2021, Sec. 3.1) as a Flax NNX module.

:class:`DinoHead` maps a batch of features (B, D) to K cosines with its
prototypes: three linear layers D -> hidden -> hidden -> bottleneck, the first
two followed by batch norm (on the batch's own statistics) and GELU, an
L2-normalised bottleneck and a weight-normalised last layer whose norm is fixed
to 1 (DINO's ``norm_last_layer``), i.e. the cosines of the bottleneck with the
prototypes (:func:`jaxinterp.ops.cosine_scores`).  :func:`dino_mlp_init` and
:func:`dino_mlp` are its pure form, used by :class:`jaxinterp.train.dino.DINO`:
the params are a plain dict of arrays built on the module (``nnx.to_pure_dict``,
``nnx.merge`` with a graph built once per architecture).  The head takes
feature vectors, not RGB images, and has no split points or backward rules, so
it is not a net of :func:`jaxinterp.nets.get`.

References:
  Caron et al., "Emerging properties in self-supervised vision transformers", ICCV 2021.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxinterp import ops
from jaxinterp.checks import check_int
from jaxinterp.nets import layers as L
from jaxinterp.nets.core import check_params_tree, module_graph, module_init, module_merge

__all__ = ["DinoHead", "dino_mlp_init", "dino_mlp"]


def _trunc_normal(key, shape):
    """DINO's linear kernels: N(0, 0.02^2) truncated at two standard deviations."""
    return 0.02 * jax.random.truncated_normal(key, -2.0, 2.0, shape)


class _Norm(nnx.Module):
    """A training-mode batch norm's ``scale`` (1 at init) and ``bias`` (0): no stored statistics."""

    def __init__(self, channels: int):
        self.scale = nnx.Param(jnp.ones((channels,), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((channels,), jnp.float32))

    def __call__(self, x: jax.Array) -> jax.Array:
        return L.batch_norm_train(x, self.scale[...], self.bias[...])


class DinoHead(nnx.Module):
    """DINO's projection head for a convnet: features (B, D) -> (B, K) cosines with the prototypes.

    ``dense1`` (D -> hidden), ``norm1``, GELU, ``dense2`` (hidden -> hidden),
    ``norm2``, GELU, ``dense3`` (hidden -> bottleneck), then the cosines with the
    ``prototypes`` (K, bottleneck).  DINO uses batch norm in the head of convnets
    and none for ViTs.  Linear kernels ~ N(0, 0.02^2) (DINO's truncated normal),
    biases 0; batch-norm scales 1, biases 0; prototypes ~ N(0, 1) (only their
    direction matters).  Not a net of :func:`jaxinterp.nets.get`: it takes feature
    vectors, not RGB images, and has no split points or backward rules.

    Args:
      in_dim: D, the width of the features.
      hidden: the width of the two hidden layers (DINO's ResNet-50: 2048).
      bottleneck: the width of the normalised bottleneck (DINO: 256).
      k: K, the number of prototypes (outputs; DINO: 65536).
      rngs: ``nnx.Rngs`` with a ``params`` stream.

    Raises:
      ValueError: a width that is not a positive int (named).

    Examples:
      >>> import jax
      >>> from flax import nnx
      >>> from jaxinterp.nets import DinoHead
      >>> head = DinoHead(8, 16, 4, 6, rngs=nnx.Rngs(params=0))
      >>> head(jax.random.normal(jax.random.key(1), (5, 8))).shape
      (5, 6)
    """

    def __init__(self, in_dim: int, hidden: int, bottleneck: int, k: int, *, rngs: nnx.Rngs):
        for name, v in (("in_dim", in_dim), ("hidden", hidden), ("bottleneck", bottleneck), ("k", k)):
            check_int(v, name)
        self.dense1 = L.Linear(in_dim, hidden, init=_trunc_normal, rngs=rngs)
        self.norm1 = _Norm(hidden)
        self.dense2 = L.Linear(hidden, hidden, init=_trunc_normal, rngs=rngs)
        self.norm2 = _Norm(hidden)
        self.dense3 = L.Linear(hidden, bottleneck, init=_trunc_normal, rngs=rngs)
        self.prototypes = nnx.Param(jax.random.normal(rngs.params(), (k, bottleneck), jnp.float32))

    def __call__(self, feats: jax.Array) -> jax.Array:
        """The head on features (B, D): see :func:`dino_mlp`."""
        in_dim = self.dense1.kernel.shape[0]
        if not hasattr(feats, "shape") or feats.ndim != 2 or feats.shape[1] != in_dim or feats.shape[0] < 2:
            raise ValueError(f"feats: expected (B >= 2, {in_dim}) features, got shape "
                             f"{getattr(feats, 'shape', type(feats).__name__)}")
        x = feats
        for dense, norm in ((self.dense1, self.norm1), (self.dense2, self.norm2)):
            x = L.dense(x, dense.kernel[...], dense.bias[...])
            x = jax.nn.gelu(norm(x), approximate=False)
        x = L.dense(x, self.dense3.kernel[...], self.dense3.bias[...])
        return ops.cosine_scores(x, self.prototypes[...])


def _config(in_dim, hidden, bottleneck, k) -> tuple:
    return (("bottleneck", bottleneck), ("hidden", hidden), ("in_dim", in_dim), ("k", k))


def dino_mlp_init(key: jax.Array, in_dim: int, hidden: int, bottleneck: int, k: int) -> dict:
    """Params of DINO's projection head (:class:`DinoHead`), compiled once per architecture.

    Args:
      key: a ``jax.random.key``.
      in_dim, hidden, bottleneck, k: as :class:`DinoHead`.

    Returns:
      {'dense1': {'kernel' (in_dim, hidden), 'bias'}, 'norm1': {'scale', 'bias'},
      'dense2', 'norm2', 'dense3': {'kernel' (hidden, bottleneck), 'bias'},
      'prototypes': (K, bottleneck)}, float32.

    Raises:
      ValueError: a width that is not a positive int (named).
    """
    dims = tuple(check_int(v, name) for name, v in
                 (("in_dim", in_dim), ("hidden", hidden), ("bottleneck", bottleneck), ("k", k)))
    return module_init(DinoHead, _config(*dims))(key)


def dino_mlp(head: dict, feats: jax.Array) -> jax.Array:
    """DINO's projection head on features (B, D) -> (B, K) cosines with the prototypes.

    Batch norm uses the statistics of ``feats`` (training mode, as DINO's student
    and teacher): DINO applies the head once to the features of all crops of a
    batch, so its statistics are over every crop
    (:func:`jaxinterp.train.dino.dino_head`).  GELU is the exact one (PyTorch's
    ``nn.GELU``).  Pure and jit-compatible; vmaps over params.

    Args:
      head: :func:`dino_mlp_init`'s params (in_dim D).
      feats: (B, D) float features, B >= 2 (batch norm needs a batch).

    Returns:
      (B, K) float32 cosines in [-1, 1].

    Raises:
      ValueError: ``head`` not :func:`dino_mlp_init`'s params; ``feats`` not (B >= 2, D).

    Examples:
      >>> import jax
      >>> from jaxinterp import nets
      >>> head = nets.dino_mlp_init(jax.random.key(0), 8, 16, 4, 6)
      >>> head["dense1"]["kernel"].shape, head["prototypes"].shape
      ((8, 16), (6, 4))
      >>> scores = jax.jit(nets.dino_mlp)(head, jax.random.normal(jax.random.key(1), (5, 8)))
      >>> scores.shape, bool((abs(scores) <= 1 + 1e-6).all())
      ((5, 6), True)

    References:
      Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021.
    """
    bad = ValueError("head: expected the dict of dino_mlp_init ('dense1', 'norm1', 'dense2', 'norm2', "
                     "'dense3', 'prototypes')")
    try:
        hidden, bottleneck = (int(d) for d in head["dense3"]["kernel"].shape)
        config = _config(int(head["dense1"]["kernel"].shape[0]), hidden, bottleneck,
                         int(head["prototypes"].shape[0]))
    except (KeyError, TypeError, AttributeError, IndexError, ValueError):
        raise bad from None
    check_params_tree(head, module_graph(DinoHead, config)[1], "this head", "the output of dino_mlp_init",
                      arg="head")
    return module_merge(DinoHead, config, head)(feats)
