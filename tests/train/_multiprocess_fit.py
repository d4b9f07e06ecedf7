"""Worker of tests/train/test_multiprocess.py: one of several CPU processes running selfsup.fit on one mesh.

    python _multiprocess_fit.py PROCESS_ID NUM_PROCESSES PORT OUT_DIR

Each process owns 8 / NUM_PROCESSES CPU devices, joins the others through
``jax.distributed`` (gloo collectives) and runs :func:`run` on the mesh over all
8 devices; every process writes its copy of the final params and its history.
"""

import json
import os
import sys

import numpy as np

N, SIZE, HELD = 64, 16, 16


def run(mesh, checkpoint_dir=None):
    """The run compared across process layouts: SeLa (labels, NMI, k-NN, linear probe) for 2 epochs."""
    from jaxinterp import nets
    from jaxinterp.train import selfsup
    from jaxinterp.train.augment import AugmentConfig
    from jaxinterp.train.sela import SeLa

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (N + HELD, SIZE, SIZE, 3), dtype=np.uint8)   # the same on every process
    classes = rng.integers(0, 4, N + HELD)
    net = nets.get("smallcnn", num_classes=8, widths=(4, 4, 4, 8))
    aug = AugmentConfig.simclr(size=(SIZE, SIZE), blur_sigma=(0.1, 0.5))
    settings = selfsup.Settings(epochs=2, batch_size=16, lr=1e-2, eval_every=1, knn_k=3, checkpoint_dir=checkpoint_dir)
    return selfsup.fit(net, images[:N], SeLa(aug=aug, lam=10.0), settings, classes=classes[:N],
                       heldout=(images[N:], classes[N:]), progress=None, mesh=mesh)


if __name__ == "__main__":
    pid, nproc, port, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.config.update("jax_num_cpu_devices", 8 // nproc)
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=nproc, process_id=pid)
    from jaxinterp.train import sharding
    mesh = sharding.data_mesh()
    assert mesh.shape["data"] == 8 and jax.process_count() == nproc
    state, history = run(mesh, checkpoint_dir=os.path.join(out, "ckpt"))
    flat = {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(state.params)}
    np.savez(os.path.join(out, f"params{pid}.npz"), labels=np.asarray(state.labels), **flat)
    with open(os.path.join(out, f"history{pid}.json"), "w") as f:
        json.dump([{k: v for k, v in row.items() if k != "seconds"} for row in history], f)
    jax.distributed.shutdown()
