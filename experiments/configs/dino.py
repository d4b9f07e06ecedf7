"""Config of experiments/dino.py: DINO self-distillation (Caron et al. ICCV 2021) of the smallcnn.

The fields and variants of configs/sela.py (``clusters``, ``lam``, ``label_every``,
``scale`` unused) plus:

* ``head_dim``: K, the head's output width (256; DINO: 65536 for ImageNet's 1.28M images).
* ``head_hidden``, ``head_bottleneck``: DINO's projection head with batch norm
  (:func:`jaxinterp.nets.dino_mlp`; DINO's ResNet-50: 2048, 256; here 512, 128
  on the smallcnn's 128-d features); ``head_hidden = 0`` drops the MLP (the smallcnn's
  linear classifier is then DINO's last layer).
* ``optimiser`` 'lars', ``lr`` 0.15 (SimCLR's 0.3 x 128 / 256), ``weight_decay`` 1e-6;
  ``freeze_last_layer`` 1 epoch (DINO).
* ``backbone_batch_norm``: the smallcnn with a batch norm after each conv, trained on
  batch statistics (``fit(batch_statistics=True)``, DINO's ResNet-50 with SyncBatchNorm);
  its evaluations recompute the statistics from the training images (True).
* ``n_local``, ``local_size``: the local crops per image (DINO: 8 at 96 of 224 px;
  'local': none, since local crops of 14 px lowered the linear probe on the synthetic
  set; the others 4 at 7/16 of ``size``).
* ``global_scale`` (0.4, 1), ``local_scale`` (0.05, 0.4): crop area ranges (DINO).
* ``hue``, ``jitter_p``: the colour jitter's hue range and probability on every crop
  (DINO: 0.1 and 0.8; 'local': SeLa's 0.4 and 1.0, as experiments/sela.py's transform,
  because with DINO's jitter the teacher's targets sort the synthetic images by their
  colour rather than their class).
* ``blur_max``: the blur sigma range (0.1, ``blur_max``) in pixels of every crop: DINO's
  (0.1, 2.0) is in pixels of 224-pixel crops (96 for the locals, about the same ratio
  as ``local_size`` / ``size`` here), so ``blur_max`` = 2.0 x ``size`` / 224 (0.29 at
  32 px, 0.57 at 64). SeLa's and SimCLR's ``blur_max`` of 1.0 px, applied always on
  global view 1, blurs a 32-px image as sigma 7 px would a 224-px one, which wipes out
  the shapes of the synthetic set.
* ``student_temp`` 0.1, ``teacher_temp`` 0.07, ``warmup_teacher_temp`` 0.04 (DINO;
  'local': 0.04 throughout, which keeps the 256 outputs from going uniform there),
  ``warmup_teacher_fraction``: the warm-up lasts round(fraction x epochs) epochs
  (0.3: DINO's 30 of 100).
* ``momentum_teacher``: the teacher EMA momentum at the start, cosine to 1 (DINO
  0.996 over ~10^5 updates; 0.99 for the 1 600 updates of 'local', where 0.996 would
  leave the teacher near its initialisation).
* ``centre_momentum`` 0.9 (DINO).

``epochs``: 200 for 'local' (3 200 updates, about an hour on one core); 100 for the
others (DINO's ablations).

The runs of the 'local' recipe and the variants tried on the synthetic set are in
docs/results/selfsup_synthetic.md.

References:
  Caron et al., "Emerging properties in self-supervised vision transformers", ICCV 2021.
  Asano, Rupprecht and Vedaldi, "Self-labelling via simultaneous clustering and
  representation learning", ICLR 2020 (the colour jitter of the 'local' variant).
"""

import ml_collections

from experiments.configs import sela


def get_config(variant: str = "local") -> ml_collections.ConfigDict:
    config = sela.get_config(variant)
    local = variant == "local"
    config.epochs = 200 if local else 100
    config.head_dim = 256
    config.head_hidden = 512
    config.head_bottleneck = 128
    config.optimiser = "lars"
    config.lr = 0.3 * config.batch_size / 256
    config.weight_decay = 1e-6
    config.freeze_last_layer = 1
    config.backbone_batch_norm = True
    config.n_local = 0 if local else 4
    config.local_size = round(config.size * 7 / 16)
    config.global_scale = (0.4, 1.0)
    config.hue = 0.4 if local else 0.1
    config.jitter_p = 1.0 if local else 0.8
    config.local_scale = (0.05, 0.4)
    config.blur_max = round(2.0 * config.size / 224, 2)
    config.student_temp = 0.1
    config.teacher_temp = 0.04 if local else 0.07
    config.warmup_teacher_temp = 0.04
    config.warmup_teacher_fraction = 0.3
    config.momentum_teacher = 0.99 if local else 0.996
    config.centre_momentum = 0.9
    config.out = "runs/dino"
    return config
