"""Config of experiments/deepdream.py: DeepDream (google/deepdream) on the smallcnn.

``get_config()`` dreams 2 held-out synthetic images per variant and 4 bundled
photographs at three layers of the trained smallcnn at 64 px with the
reference's schedule (4 octaves of 1.4, 10 steps each, step 1.5 / 255);
``get_config('local')`` is a CPU run of seconds (2 photographs, 32 px, 1
layer, 2 octaves of 3 steps).
"""

import ml_collections


def get_config(variant: str = "full") -> ml_collections.ConfigDict:
    """Fields.

    pretrained: the trained smallcnn (zoo.pretrained) or random weights (False).
    image_size, held_out, photos: the images (as experiments/pre_image.py).
    layers: split points dreamed at (one shard each).
    octaves, octave_scale, steps, step_size: passed to jaxinterp.synthesis.deepdream
      (google/deepdream: 4, 1.4, 10, 1.5 / 255).
    jitter: roll jitter in pixels (google/deepdream: 32 at 224 px; 8 here at 64 px,
      the same fraction of the image).
    seed, out, cache_dir.
    """
    if variant not in ("full", "local"):
        raise ValueError(f"variant: expected 'full' or 'local', got {variant!r}")
    full = variant == "full"
    c = ml_collections.ConfigDict()
    c.pretrained = True
    c.image_size = 64 if full else 32
    c.held_out = 2 if full else 0
    c.photos = ["chelsea", "coffee", "astronaut", "rocket"] if full else ["chelsea", "coffee"]
    c.layers = ["features.4", "features.7", "features.10"] if full else ["features.4"]
    c.octaves = 4 if full else 2
    c.octave_scale = 1.4
    c.steps = 10 if full else 3
    c.step_size = 1.5 / 255
    c.jitter = 8 if full else 4
    c.seed = 0
    c.out = "runs/deepdream"
    c.cache_dir = ml_collections.config_dict.placeholder(str)
    return c
