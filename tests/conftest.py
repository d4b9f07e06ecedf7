"""Shared test setup for the whole suite.

Every test process (also each pytest-xdist worker, which imports this file before
any test module) sees 8 CPU devices, so that sharded code is tested against its
single-device result: ``jax_num_cpu_devices`` must be set before JAX initialises
its backends, i.e. before any test module runs a JAX operation.  Tests that need
one device use ``jax.devices()[:1]``.
"""

import jax

jax.config.update("jax_num_cpu_devices", 8)

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def trained_smallcnn():
    """``(net, params, info)`` of the smallcnn trained on the synthetic 'easy' set.

    Trained once (a few minutes on a CPU) and cached by :func:`jaxinterp.train.zoo.pretrained`
    under ``$JAXINTERP_CACHE`` (default ``~/.cache/jaxinterp``); later sessions and
    parallel workers load the cache.
    """
    from jaxinterp.train import zoo

    return zoo.pretrained("smallcnn")
