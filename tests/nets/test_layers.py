"""layers.conv2d against XLA's own convolution: TF 'SAME' padding, grouped and depthwise kernels."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxinterp.nets import layers as L


def _reference(x, k, stride, padding, groups):
    """lax.conv_general_dilated with XLA's 'SAME' (TensorFlow's rule) or explicit symmetric padding."""
    pad = "SAME" if padding == "SAME" else ((padding, padding),) * 2
    return lax.conv_general_dilated(x, k, (stride, stride), pad, dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                    feature_group_count=groups, precision=lax.Precision.HIGHEST)


_conv2d = jax.jit(L.conv2d, static_argnames=("stride", "padding", "groups"))


@pytest.mark.parametrize("size", [7, 16])
@pytest.mark.parametrize("kernel, stride", [(1, 1), (3, 2), (5, 1), (5, 2)])
@pytest.mark.parametrize("padding", ["SAME", 1])
@pytest.mark.parametrize("groups", [1, 2, 6])
def test_conv2d_matches_xla(size, kernel, stride, padding, groups):
    with jax.enable_x64(True):
        kx, kk = jax.random.split(jax.random.key(size * 100 + kernel * 10 + stride))
        x = jax.random.normal(kx, (2, size, size, 6), jnp.float64)
        k = jax.random.normal(kk, (kernel, kernel, 6 // groups, 6), jnp.float64)
        got = _conv2d(x, k, stride=stride, padding=padding, groups=groups)
        want = _reference(x, k, stride, padding, groups)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
        if padding == "SAME":
            assert got.shape[1] == -(-size // stride)


def test_same_padding_puts_the_odd_pixel_after():
    assert L.same_padding(224, 3, 2) == (0, 1)      # EfficientNet's stride-2 stem at 224 px
    assert L.same_padding(225, 3, 2) == (1, 1)
    assert L.same_padding(112, 5, 2) == (1, 2)
    assert L.same_padding(14, 5, 1) == (2, 2)
    assert L.same_padding(7, 1, 1) == (0, 0)


@pytest.mark.parametrize("size", [8, 9])
@pytest.mark.parametrize("kernel, stride, padding, groups", [(5, 2, "SAME", 4), (3, 1, "SAME", 4), (3, 2, 1, 4),
                                                              (5, 1, 2, 4), (1, 1, 0, 1), (3, 1, 1, 1),
                                                              (3, 2, 1, 1), (7, 2, 3, 1), (3, 2, "SAME", 1),
                                                              (1, 2, 0, 1), (5, 3, 0, 1)])
def test_conv_gradients_match_xla(size, kernel, stride, padding, groups):
    """The hand-written backward passes (the depthwise sum, the 1 x 1 convolution as a matrix product, the
    dense convolution's canonical-layout gradients), for one cotangent and for a batch of cotangents (vmap
    over the vjp, as attribution methods use it)."""
    with jax.enable_x64(True):
        x = jax.random.normal(jax.random.key(0), (2, size, size, 4), jnp.float64)
        k = jax.random.normal(jax.random.key(1), (kernel, kernel, 4 // groups, 4), jnp.float64)
        g = jax.random.normal(jax.random.key(2), (3, *_reference(x, k, stride, padding, groups).shape), jnp.float64)

        def vjps(conv):
            _, pullback = jax.vjp(conv, x, k)
            return jax.vmap(pullback)(g)

        ours = jax.jit(lambda: vjps(lambda x, k: L.conv2d(x, k, stride=stride, padding=padding, groups=groups)))()
        ref = vjps(lambda x, k: _reference(x, k, stride, padding, groups))
        for a, b in zip(ours, ref):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_conv_rejects_groups_that_do_not_divide_the_widths():
    with pytest.raises(ValueError, match="groups"):
        L.Conv(6, 4, 3, groups=4, rngs=__import__("flax").nnx.Rngs(params=0))


def test_second_order_gradients_match_xla():
    """grad of a function of the input gradient (adversarial and sanity methods differentiate saliency)."""
    with jax.enable_x64(True):
        x = jax.random.normal(jax.random.key(0), (2, 9, 9, 3), jnp.float64)
        k = jax.random.normal(jax.random.key(1), (3, 3, 3, 4), jnp.float64)

        def outer(conv):
            saliency = jax.grad(lambda x: jnp.sum(jnp.tanh(conv(x, k)) ** 2))
            return jax.grad(lambda x, k: jnp.sum(saliency(x) ** 2), argnums=(0, 1))(x, k)

        ours = outer(lambda x, k: L.conv2d(x, k, stride=2, padding=1))
        ref = outer(lambda x, k: _reference(x, k, 2, 1, 1))
        for a, b in zip(ours, ref):
            np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-11)


def test_gradient_convolutions_inside_a_loop_keep_the_fast_layout():
    """XLA:CPU rewrites convolutions into the NHWC / HWIO layout of its fast (Eigen) path in the entry
    computation only; JAX's automatic gradient convolutions inside a ``lax.scan`` body would stay in
    another layout and run on the naive emitter (2x slower VGG16 steps).  Every convolution of a scanned
    input-and-kernel gradient, once compiled, has the canonical dim labels."""
    x = jnp.ones((2, 12, 12, 3), jnp.float32)
    k = jnp.ones((3, 3, 3, 8), jnp.float32)

    def steps(x, k):
        def body(carry, _):
            x, k = carry
            gx, gk = jax.grad(lambda x, k: jnp.sum(L.conv2d(x, k, stride=2, padding=1) ** 2), (0, 1))(x, k)
            return (x - 1e-3 * gx, k - 1e-3 * gk), None
        return jax.lax.scan(body, (x, k), None, length=3)[0]

    hlo = jax.jit(steps).lower(x, k).compile().as_text()
    labels = re.findall(r"convolution\(.*?dim_labels=([^,\s]+)", hlo)
    assert len(labels) == 3, labels                  # forward, input gradient, kernel gradient
    assert set(labels) == {"b01f_01io->b01f"}, labels
