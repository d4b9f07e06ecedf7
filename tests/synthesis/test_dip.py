"""Deep image prior: the degradations, planted denoising / inpainting, the paper's fitting curves, vmap == loop
(under an outer jit), sharded == one device, the parameterisation, bad input.  The generator itself is tested in
tests/nets/test_dip_skip.py."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxinterp import nets
from jaxinterp.data import images
from jaxinterp.synthesis import dip
from jaxinterp.train import sharding

# A small generator for the CPU: 3 scales of 8 channels, 8 input channels.
SMALL = dict(in_channels=8, down=(8, 8, 8), up=(8, 8, 8), skip=(4, 4, 4))
TINY = dict(in_channels=4, down=(4, 4), up=(4, 4), skip=(2, 2))


def test_dip_noise_shape_and_range():
    z = dip.dip_noise(jax.random.key(1), (16, 12), 5)
    assert z.shape == (16, 12, 5) and z.dtype == jnp.float32
    assert float(z.min()) >= 0 and float(z.max()) < 0.1


def test_degrade_operators():
    x = jax.random.uniform(jax.random.key(0), (8, 12, 3))
    low = dip.degrade(x, "super_resolution", factor=4)
    np.testing.assert_allclose(low, np.asarray(x, np.float64).reshape(2, 4, 3, 4, 3).mean((1, 3)), rtol=1e-5)
    m = (jax.random.uniform(jax.random.key(1), (8, 12, 1)) < 0.5).astype(jnp.float32)
    np.testing.assert_array_equal(dip.degrade(x, "inpaint", mask=m), np.asarray(x) * np.asarray(m))
    np.testing.assert_array_equal(dip.degrade(x, "denoise"), x)
    np.testing.assert_allclose(dip.psnr(x, x + 0.1), 20.0, rtol=1e-5)


# -- planted ground truths ----------------------------------------------------------------------------


@pytest.mark.slow
def test_denoising_improves_psnr_by_3db():
    """Gaussian noise sigma 25/255 on a 32 px photograph: the EMA output at its best step gains >= 3 dB."""
    x = jnp.asarray(images.batch(["chelsea"], 32))
    noisy = jnp.clip(x + 25 / 255 * jax.random.normal(jax.random.key(3), x.shape), 0, 1)
    r = dip.deep_image_prior(noisy, key=jax.random.key(0), steps=300, reference=x,
                             down=(8, 16, 32), up=(8, 16, 32), skip=(4, 4, 4))
    before = np.asarray(dip.psnr(noisy, x))
    best = np.asarray(r.psnr)[:, 0].max(axis=-1)
    assert r.images.shape == (1, 1, 32, 32, 3) and r.loss.shape == r.psnr.shape == (1, 1, 300)
    assert np.all(best - before >= 3.0), (before, best)
    # the returned image is the final EMA, whose PSNR is the curve's last value
    np.testing.assert_allclose(dip.psnr(r.images[:, 0], x), np.asarray(r.psnr)[:, 0, -1], rtol=1e-4)


@pytest.mark.slow
def test_fitting_curves_natural_image_fits_fastest():
    """The paper's Fig. 2: the same net fits the image faster than image + noise, scrambled pixels, noise."""
    x = jnp.asarray(images.load("astronaut", 32))[None]
    c = dip.fitting_curves(x, jax.random.key(0), 80, **SMALL)
    assert c.loss.shape == (1, 4, 80) and c.targets.shape == (1, 4, 32, 32, 3)
    t = np.asarray(c.targets)[0]
    np.testing.assert_array_equal(t[0], np.asarray(x)[0])
    np.testing.assert_allclose(np.sort(t[2].reshape(-1, 3), 0), np.sort(t[0].reshape(-1, 3), 0))  # a permutation
    assert not np.allclose(t[2], t[0])
    late = np.asarray(c.loss)[0, :, -20:].mean(-1)
    assert late[0] < 0.5 * late[1:].min(), late
    # every fit makes progress
    assert np.all(np.asarray(c.loss)[0, :, 0] > late)


@pytest.mark.slow
def test_inpainting_beats_mean_colour_fill():
    x = jnp.asarray(images.load("astronaut", 32))[None]
    m = (jax.random.uniform(jax.random.key(5), x.shape[:3]) < 0.5).astype(jnp.float32)
    r = dip.deep_image_prior(x * m[..., None], key=jax.random.key(0), task="inpaint", mask=m, steps=120, **SMALL)
    out, xn, hole = np.asarray(r.images)[0, 0], np.asarray(x)[0], 1 - np.asarray(m)[0, ..., None]
    fill = (xn * (1 - hole)).sum((0, 1)) / (1 - hole).sum()

    def hole_psnr(a):
        return -10 * np.log10(((a - xn) ** 2 * hole).sum() / (3 * hole.sum()))
    assert hole_psnr(out) > hole_psnr(np.broadcast_to(fill, xn.shape)) + 3.0


# -- vmap == loop, sharding, jit --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def batch_run():
    x = jax.random.uniform(jax.random.key(0), (8, 16, 16, 3))
    ref = jax.random.uniform(jax.random.key(1), (8, 16, 16, 3))
    static = ("task", "steps", "seeds", "in_channels", "down", "up", "skip")
    r = jax.jit(dip.deep_image_prior, static_argnames=static)(x, key=jax.random.key(2), steps=3, seeds=2,
                                                              reference=ref, **TINY)
    return x, ref, r


def test_vmap_over_images_and_seeds_equals_loop(batch_run):
    x, ref, r = batch_run
    assert r.images.shape == (8, 2, 16, 16, 3) and r.loss.shape == r.psnr.shape == (8, 2, 3)
    one = jax.jit(functools.partial(dip.restore_one, steps=3, **TINY))
    for i in range(8):
        for s in range(2):
            image, loss, q = one(x[i], jax.random.fold_in(jax.random.key(2), s), reference=ref[i])
            np.testing.assert_allclose(r.images[i, s], image, rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(r.loss[i, s], loss, rtol=1e-4)
            np.testing.assert_allclose(r.psnr[i, s], q, rtol=1e-4)
    assert not np.allclose(r.images[:, 0], r.images[:, 1])        # seeds are independent


def test_sharded_over_eight_devices_equals_one_device(batch_run):
    x, ref, r = batch_run
    mesh = sharding.data_mesh()
    assert mesh.size == 8
    xs = jax.device_put(x, NamedSharding(mesh, P("data")))
    rs = jax.device_put(ref, NamedSharding(mesh, P("data")))
    out = dip.deep_image_prior(xs, key=jax.random.key(2), steps=3, seeds=2, reference=rs, **TINY)
    np.testing.assert_allclose(out.images, r.images, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out.loss, r.loss, rtol=1e-4)
    np.testing.assert_allclose(out.psnr, r.psnr, rtol=1e-4)
    assert len(out.images.sharding.device_set) == 8


def test_super_resolution_shapes():
    low = jax.random.uniform(jax.random.key(0), (1, 4, 4, 3))
    r = dip.deep_image_prior(low, key=jax.random.key(1), task="super_resolution", factor=4, steps=2, **TINY)
    assert r.images.shape == (1, 1, 16, 16, 3) and r.loss.shape == (1, 1, 2) and r.psnr is None
    assert np.all(np.isfinite(r.loss)) and float(r.images.min()) > 0 and float(r.images.max()) < 1


def test_parameterisation_trains_the_net_and_keeps_z():
    par = dip.dip_parameterisation((16, 16), **TINY)
    p0 = par.init(jax.random.key(0))
    np.testing.assert_array_equal(p0["z"], dip.dip_noise(jax.random.fold_in(jax.random.key(0), 1), (16, 16), 4))
    image = par.to_image(p0)
    assert image.shape == (16, 16, 3)
    np.testing.assert_allclose(image, nets.skip_net_apply(p0["net"], p0["z"]), rtol=1e-6)
    target = jax.random.uniform(jax.random.key(1), (16, 16, 3))
    loss = lambda p: jnp.mean((par.to_image(p) - target) ** 2)
    import optax
    opt = optax.adam(0.01)

    @jax.jit
    def fit(p):
        def step(c, _):
            p, s = c
            g = jax.grad(loss)(p)
            u, s = opt.update(g, s, p)
            return (optax.apply_updates(p, u), s), loss(p)
        return jax.lax.scan(step, (p, opt.init(p)), length=5)

    (p1, _), losses = fit(p0)
    assert float(jnp.abs(jax.grad(loss)(p0)["z"]).max()) == 0.0
    np.testing.assert_array_equal(p1["z"], p0["z"])
    assert not np.allclose(p1["net"]["out"]["w"], p0["net"]["out"]["w"])
    assert losses[-1] < losses[0]


# -- bad input --------------------------------------------------------------------------------------


@pytest.mark.parametrize("call, match", [
    (lambda x, k: dip.deep_image_prior(x[0], key=k, **TINY), "x: expected images of rank 4"),
    (lambda x, k: dip.deep_image_prior(x.astype(jnp.int32), key=k, **TINY), "x: expected a floating"),
    (lambda x, k: dip.deep_image_prior(x.at[0, 0, 0, 0].set(jnp.nan), key=k, **TINY), "x: expected finite"),
    (lambda x, k: dip.deep_image_prior(x[:, :10, :10], key=k, **TINY), "x: the skip net has 2 scales"),
    (lambda x, k: dip.deep_image_prior(x, key=k, task="deblur", **TINY), "task: expected one of"),
    (lambda x, k: dip.deep_image_prior(x, key=k, steps=0, **TINY), "steps: expected a positive"),
    (lambda x, k: dip.deep_image_prior(x, key=k, task="super_resolution", factor=1, **TINY), "factor"),
    (lambda x, k: dip.deep_image_prior(x, key=k, factor=2.5, **TINY), "factor: expected a positive"),
    (lambda x, k: dip.deep_image_prior(x, key=k, task="inpaint", **TINY), "mask: task 'inpaint' needs"),
    (lambda x, k: dip.deep_image_prior(x, key=k, task="inpaint", mask=jnp.ones((2, 8, 8)), **TINY), "mask: expected shape"),
    (lambda x, k: dip.deep_image_prior(x, key=k, task="inpaint", mask=2 * jnp.ones((2, 16, 16)), **TINY),
     r"mask: expected values in \[0, 1\]"),
    (lambda x, k: dip.deep_image_prior(x, key=k, mask=jnp.ones((2, 16, 16)), **TINY), "mask: only task 'inpaint'"),
    (lambda x, k: dip.deep_image_prior(x, key=k, seeds=0, **TINY), "seeds"),
    (lambda x, k: dip.deep_image_prior(x, key=k, ema=1.5, **TINY), "ema"),
    (lambda x, k: dip.deep_image_prior(x, key=k, lr=-1.0, **TINY), "lr"),
    (lambda x, k: dip.deep_image_prior(x, key=k, reg_noise_std=-1.0, **TINY), "reg_noise_std"),
    (lambda x, k: dip.deep_image_prior(x, key=k, reference=x[:1], **TINY), "reference"),
    (lambda x, k: dip.deep_image_prior(x, key=k, upsample="cubic", **TINY), "upsample"),
    (lambda x, k: dip.deep_image_prior(x, key=k, in_channels=4, down=(4, 4), up=(4,), skip=(2, 2)), "up:"),
    (lambda x, k: dip.deep_image_prior(x, key=k, in_channels=4, down=(4, 0), up=(4, 4), skip=(2, 2)), "down:"),
    (lambda x, k: dip.dip_parameterisation((18, 16), **TINY), "image_size: the skip net"),
    (lambda x, k: dip.dip_parameterisation((16,), **TINY), "image_size: expected"),
    (lambda x, k: dip.fitting_curves(x, k, 0, **TINY), "steps"),
])
def test_bad_input_raises(call, match):
    x = jax.random.uniform(jax.random.key(0), (2, 16, 16, 3))
    with pytest.raises(ValueError, match=match):
        call(x, jax.random.key(1))
