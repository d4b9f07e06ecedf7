"""Config of experiments/sela.py: SeLa self-labelling (Asano et al. 2020) of the smallcnn.

``get_config('local')``: the synthetic 'easy' set at 32 px, 2048 training and 512
held-out images, K = 32 clusters, 100 epochs: 8.5 minutes on two CPU cores.  ``'full'`` is the
same recipe, longer and on more images.

TFDS variants (the 'full' recipe on real images; ``data_dir`` must hold the
prepared dataset, nothing is downloaded; each split is written once as uint8
to a resumable ``.npy`` memmap in ``cache_dir`` or the run directory, see
:func:`jaxinterp.data.tfds.cache_split`):

* ``'cifar10'``: CIFAR-10 at 32 px (no crop), the 50 000 training and 10 000
  test images, SeLa's CIFAR setting K = 128, lambda = 10.
* ``'imagenet'``: ImageNet-2012 at 64 px (shorter side resized to 73, centre
  crop), the 1 281 167 training and 50 000 validation images, SeLa's ImageNet
  K = 3000, lambda = 25.  SeLa trains 10 heads there; the trainer
  (:func:`jaxinterp.train.selfsup.fit`) has one head, so this is one head.

    python -m experiments.sela --config cifar10 --set data_dir=~/tensorflow_datasets
    python -m experiments.sela --config local --set dataset=cifar10 --set data_dir=...

``--set dataset=...`` on another variant keeps that variant's hyper-parameters
and sizes (e.g. 'local' on CIFAR-10: the first 1024 / 256 images, K = 32, 32 px).
Data fields: ``dataset`` ('synthetic', 'cifar10' or 'imagenet2012'), ``data_dir``
(TFDS data directory, required for the TFDS sets), ``cache_dir`` ('' = the run
directory; a shared directory lets runs reuse the caches, one writer at a time),
``size`` (the image side), ``images`` / ``heldout`` (the leading examples of
the training and held-out split: CIFAR-10 'train' / 'test', ImageNet
'train' / 'validation').
"""

import ml_collections

VARIANTS = ("local", "full", "cifar10", "imagenet")


def get_config(variant: str = "local") -> ml_collections.ConfigDict:
    """Fields: images, heldout, size, clusters, epochs, batch_size, lr, lam, label_every,
    label_views, eval_every, knn_k, augmentation, scale, blur_max, seed, out, dataset,
    data_dir, cache_dir.

    ``augmentation`` is ``'sela'`` (SeLa's transform, ``AugmentConfig.sela``: hue jitter
    0.4, always, no blur) or ``'simclr'`` (``AugmentConfig.simclr`` with blur sigma
    (0.1, ``blur_max``), the contrastive experiments' choice); ``scale`` is the crop
    area range of either.  ``label_views``: augmented views per image averaged in
    SeLa's label step (:func:`jaxinterp.train.selfsup.label_log_probs`; SeLa's code:
    1).  On the local set (100 epochs) 4 views reach a k-NN accuracy of 40 % and one
    view 23 % (README): the labels of one view change with the draw.

    Args:
      variant: 'local', 'full', 'cifar10' or 'imagenet' (module docstring).
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant: expected one of {VARIANTS}, got {variant!r}")
    local = variant == "local"
    config = ml_collections.ConfigDict()
    config.images = 2048 if local else 8192
    config.heldout = 512 if local else 1024
    config.size = 32 if local else 64
    config.clusters = 32            # over-clustering of the 8 classes (SeLa: K > classes helps)
    config.epochs = 100
    config.batch_size = 128
    config.lr = 2e-3
    config.lam = 10.0               # SeLa's CIFAR value (25 on ImageNet)
    config.label_every = 1
    config.label_views = 4
    config.eval_every = 5
    config.knn_k = 20
    config.augmentation = "sela"
    config.scale = (0.2, 1.0)       # crop area range (SeLa and SimCLR on CIFAR: 0.2)
    config.blur_max = 1.0           # blur sigma range (0.1, blur_max) in pixels
    config.seed = 0
    config.out = "runs/sela"
    config.dataset = "synthetic"    # 'synthetic', 'cifar10' or 'imagenet2012'
    config.data_dir = ""            # TFDS data directory (required for cifar10 / imagenet2012)
    config.cache_dir = ""           # the uint8 .npy caches of the TFDS splits ('' = the run directory)
    if variant == "cifar10":        # SeLa's CIFAR setting
        config.update(dataset="cifar10", images=50_000, heldout=10_000, size=32, clusters=128, lam=10.0)
    elif variant == "imagenet":     # SeLa's ImageNet K and lambda (one head, not 10)
        config.update(dataset="imagenet2012", images=1_281_167, heldout=50_000, size=64,
                      clusters=3000, lam=25.0)
    return config
