"""Config of experiments/sela.py: SeLa self-labelling (Asano et al. 2020) of the smallcnn.

``get_config('local')``: the synthetic 'easy' set at 32 px, 1024 training and 256
held-out images, K = 32 clusters, a CPU run of a few minutes.  ``'full'`` is the
same recipe, longer and on more images (CIFAR-10 / ImageNet through TFDS are not
wired in yet).
"""

import ml_collections


def get_config(variant: str = "local") -> ml_collections.ConfigDict:
    """Fields: images, heldout, size, clusters, epochs, batch_size, lr, lam, label_every,
    eval_every, knn_k, scale, blur_max, seed, out."""
    if variant not in ("full", "local"):
        raise ValueError(f"variant: expected 'full' or 'local', got {variant!r}")
    local = variant == "local"
    config = ml_collections.ConfigDict()
    config.images = 1024 if local else 8192
    config.heldout = 256 if local else 1024
    config.size = 32 if local else 64
    config.clusters = 32            # over-clustering of the 8 classes (SeLa: K > classes helps)
    config.epochs = 20 if local else 100
    config.batch_size = 128
    config.lr = 2e-3
    config.lam = 10.0               # SeLa's CIFAR value (25 on ImageNet)
    config.label_every = 1
    config.eval_every = 5
    config.knn_k = 20
    config.scale = (0.3, 1.0)       # crop area range (SimCLR: 0.08 on ImageNet, 0.2 on CIFAR)
    config.blur_max = 1.0           # blur sigma range (0.1, blur_max) in pixels
    config.seed = 0
    config.out = "runs/sela"
    return config
