"""Shared by the LRP and excitation-backprop oracles: a small random smallcnn and 3x3-conv im2col."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp import nets

NUM_CLASSES = 5
WIDTHS = (4, 6, 8, 8)
SIZE = 16


def random_params(net, seed=0, bias_scale=0.1):
    """Random float32 params of the net's structure: He-normal kernels, N(0, bias_scale^2) biases.

    Built with NumPy from ``net.abstract_params()`` (cheaper than compiling ``net.init``).
    """
    rng = np.random.default_rng(seed)

    def leaf(path, a):
        if "bias" in jax.tree_util.keystr(path):
            return jnp.asarray(bias_scale * rng.normal(size=a.shape), jnp.float32)
        fan_in = int(np.prod(a.shape[:-1]))
        return jnp.asarray(rng.normal(size=a.shape) * np.sqrt(2.0 / fan_in), jnp.float32)

    return jax.tree_util.tree_map_with_path(leaf, net.abstract_params())


def small_setup():
    """A small smallcnn with random (non-zero) biases, and 3 images (SIZE x SIZE)."""
    net = nets.get("smallcnn", num_classes=NUM_CLASSES, widths=WIDTHS)
    params = random_params(net)
    x = jnp.asarray(np.random.default_rng(1).uniform(0.02, 0.98, (3, SIZE, SIZE, 3)), jnp.float32)
    return net, params, x


def im2col(a):
    """(H, W, C) -> (H*W, 9*C) patches of a 3x3 convolution with zero padding 1 (order i, j, c)."""
    h, w, c = a.shape
    ap = np.pad(a, ((1, 1), (1, 1), (0, 0)))
    return np.stack([ap[i:i + h, j:j + w] for i in range(3) for j in range(3)], 2).reshape(h * w, 9 * c)


def col2im(cols, h, w, c):
    """The adjoint of :func:`im2col`: sum patch columns (H*W, 9*C) back onto (H, W, C)."""
    cols = cols.reshape(h, w, 9, c)
    out = np.zeros((h + 2, w + 2, c))
    for k, (i, j) in enumerate((i, j) for i in range(3) for j in range(3)):
        out[i:i + h, j:j + w] += cols[:, :, k]
    return out[1:-1, 1:-1]
