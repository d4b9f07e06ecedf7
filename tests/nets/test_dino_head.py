"""DINO's projection head (nets.dino_head): a float64 NumPy oracle, outputs are cosines, the NNX module against the
pure functions, the parameter count in closed form, the init's distributions, vmap over params, bad input."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxinterp import nets


def _np_head(head, feats):
    """dense -> batch norm (the batch's statistics, biased variance, eps 1e-5) -> exact GELU, twice; dense;
    then the dot of the L2-normalised bottleneck with the L2-normalised prototypes, all in float64."""
    h = jax.tree.map(lambda a: np.asarray(a, np.float64), head)
    x = np.asarray(feats, np.float64)
    erf = np.vectorize(math.erf)
    for i in (1, 2):
        x = x @ h[f"dense{i}"]["kernel"] + h[f"dense{i}"]["bias"]
        x = (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5) * h[f"norm{i}"]["scale"] + h[f"norm{i}"]["bias"]
        x = 0.5 * x * (1 + erf(x / math.sqrt(2)))
    x = x @ h["dense3"]["kernel"] + h["dense3"]["bias"]
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x @ (h["prototypes"] / np.linalg.norm(h["prototypes"], axis=1, keepdims=True)).T


def _perturbed(head, seed=1):
    """The head with every parameter moved, so that the batch norms' affine terms and the biases matter."""
    keys = iter(jax.random.split(jax.random.key(seed), len(jax.tree.leaves(head))))
    return jax.tree.map(lambda a: a + 0.3 * jax.random.normal(next(keys), a.shape), head)


def test_outputs_are_cosines_equal_to_float64_numpy():
    head = _perturbed(nets.dino_mlp_init(jax.random.key(0), 12, 16, 8, 6))
    feats = 2.0 * jax.random.normal(jax.random.key(2), (9, 12))
    out = np.asarray(jax.jit(nets.dino_mlp)(head, feats))
    assert out.shape == (9, 6) and out.dtype == np.float32
    assert np.all(np.abs(out) <= 1 + 1e-6)
    np.testing.assert_allclose(out, _np_head(head, feats), atol=2e-5)
    # cosines: scaling the prototypes changes nothing
    scaled = {**head, "prototypes": 7.0 * head["prototypes"]}
    np.testing.assert_allclose(nets.dino_mlp(scaled, feats), out, atol=1e-6)


def test_module_and_pure_apply_agree_on_the_same_params():
    module = nets.DinoHead(12, 16, 8, 6, rngs=nnx.Rngs(params=3))
    head = nnx.to_pure_dict(nnx.state(module))
    feats = jax.random.normal(jax.random.key(2), (5, 12))
    np.testing.assert_array_equal(module(feats), nets.dino_mlp(head, feats))
    same = jax.tree.map(lambda a: (a.shape, a.dtype), nets.dino_mlp_init(jax.random.key(0), 12, 16, 8, 6))
    assert same == jax.tree.map(lambda a: (a.shape, a.dtype), head)


@pytest.mark.parametrize("dims", [(12, 16, 8, 6), (2048, 2048, 256, 65536)])
def test_param_count_in_closed_form(dims):
    d, hidden, bottleneck, k = dims
    abstract = jax.eval_shape(lambda key: nets.dino_mlp_init(key, *dims), jax.random.key(0))
    want = (d + 1) * hidden + 2 * hidden + (hidden + 1) * hidden + 2 * hidden + (hidden + 1) * bottleneck \
        + k * bottleneck
    assert nets.count_params(abstract) == want


def test_init_distributions():
    """Kernels 0.02 N(0, 1) truncated at +-2 (std 0.02 x 0.880), biases 0, BN 1 / 0, prototypes N(0, 1)."""
    head = nets.dino_mlp_init(jax.random.key(0), 128, 256, 64, 512)
    for i in (1, 2, 3):
        w = np.asarray(head[f"dense{i}"]["kernel"], np.float64)
        assert np.abs(w).max() <= 0.04 + 1e-7 and np.abs(w).max() > 0.039
        np.testing.assert_allclose(w.std(), 0.02 * 0.8796, rtol=0.03)
        np.testing.assert_array_equal(head[f"dense{i}"]["bias"], 0.0)
    for i in (1, 2):
        np.testing.assert_array_equal(head[f"norm{i}"]["scale"], 1.0)
        np.testing.assert_array_equal(head[f"norm{i}"]["bias"], 0.0)
    p = np.asarray(head["prototypes"], np.float64)
    np.testing.assert_allclose(p.std(), 1.0, rtol=0.03)
    assert abs(p.mean()) < 0.02
    assert not np.allclose(head["dense1"]["kernel"][:, :64], head["dense3"]["kernel"][:128])


def test_vmap_over_heads_equals_loop():
    keys = jax.random.split(jax.random.key(0), 3)
    heads = jax.vmap(lambda k: nets.dino_mlp_init(k, 12, 16, 8, 6))(keys)
    feats = jax.random.normal(jax.random.key(2), (5, 12))
    out = jax.jit(jax.vmap(nets.dino_mlp, in_axes=(0, None)))(heads, feats)
    for i in range(3):
        one = nets.dino_mlp(jax.tree.map(lambda a: a[i], heads), feats)
        np.testing.assert_allclose(out[i], one, rtol=1e-5, atol=1e-6)
    assert not np.allclose(out[0], out[1])


def test_bad_input_raises():
    head = nets.dino_mlp_init(jax.random.key(0), 8, 16, 4, 6)
    feats = jnp.ones((4, 8))
    with pytest.raises(ValueError, match="^hidden"):
        nets.dino_mlp_init(jax.random.key(0), 8, 0, 4, 6)
    with pytest.raises(ValueError, match="^k: expected a positive integer"):
        nets.DinoHead(8, 16, 4, 2.5, rngs=nnx.Rngs(params=0))
    for bad in (feats[:, :7], feats[:1], feats[None]):
        with pytest.raises(ValueError, match=r"^feats: expected \(B >= 2, 8\)"):
            nets.dino_mlp(head, bad)
    with pytest.raises(ValueError, match="^head: expected the dict of dino_mlp_init"):
        nets.dino_mlp({"dense1": head["dense1"]}, feats)
    with pytest.raises(ValueError, match=r"^head: \['norm1'\]\['scale'\] has shape \(3,\)"):
        nets.dino_mlp({**head, "norm1": {**head["norm1"], "scale": jnp.ones(3)}}, feats)
