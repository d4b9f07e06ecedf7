"""Training pieces: one training loop, data-parallel sharding, orbax checkpoints, a classifier, a model cache.

The classifier (``classifier.py``), the self-supervised methods (``selfsup.fit`` with
``sela.py``, ``simclr.py``, ``dino.py``, ``gdt.py``) and the learned inverter of
``jaxinterp.synthesis`` all run on ``loop.run`` (``loop.py``).

    mesh = train.data_mesh()
    state, history = train.fit(net, data_fn, steps=500, batch_size=64, checkpoint_dir=d)
    acc = train.evaluate(net, state.params, images, labels)

    from jaxinterp.train import zoo                        # imports jaxinterp.data
    net, params, info = zoo.pretrained("smallcnn")         # trained once, then cached
"""

from jaxinterp.train.checkpoint import Checkpointer, latest_step
from jaxinterp.train.classifier import TrainState, evaluate, fit, init_state, optimiser, train_step
from jaxinterp.train.sharding import data_mesh, gather, replicate, shard_batch

__all__ = ["Checkpointer", "latest_step", "TrainState", "evaluate", "fit", "init_state",
           "optimiser", "train_step", "data_mesh", "gather", "replicate", "shard_batch"]
