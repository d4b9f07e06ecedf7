"""Config of experiments/dip.py: deep image prior restorations and fitting curves.

``get_config()`` is the paper's protocol (512 px photographs, its 128-channel
5-scale skip net, 3000 / 6000 / 2000 steps); ``get_config('local')`` is a CPU
run of about a minute, mostly compilation (one 32 px photograph, a 3-scale net of
8 channels, 100-200 steps).
"""

import ml_collections


def get_config(variant: str = "full") -> ml_collections.ConfigDict:
    """Fields.

    images: bundled photographs (jaxinterp.data.images names) restored.
    image_size: side of the clean images (divisible by 2**len(down)).
    tasks: of 'denoise', 'inpaint', 'super_resolution'.
    sigma: std of the Gaussian noise of the denoising task (25/255 in the paper's Table 1).
    mask_fraction: share of pixels dropped at random for inpainting (0.5).
    factor: super-resolution factor (4).
    steps: task -> Adam steps (docs/references.md, Deep image prior: 3000 denoising,
      about 6000 inpainting, 2000 x4 SR).
    curve_steps: steps of the fitting curves (paper's Fig. 2; 0 skips them).
    seeds, lr, in_channels, down, up, skip, upsample: deep_image_prior's arguments.
    seed: base random seed (noise, masks, nets).
    out.
    """
    if variant not in ("full", "local"):
        raise ValueError(f"variant: expected 'full' or 'local', got {variant!r}")
    full = variant == "full"
    c = ml_collections.ConfigDict()
    c.images = ["astronaut", "chelsea", "coffee", "motorcycle"] if full else ["chelsea"]
    c.image_size = 512 if full else 32
    c.tasks = ["denoise", "inpaint", "super_resolution"]
    c.sigma = 25.0 / 255.0
    c.mask_fraction = 0.5
    c.factor = 4
    c.steps = ({"denoise": 3000, "inpaint": 6000, "super_resolution": 2000} if full
               else {"denoise": 200, "inpaint": 150, "super_resolution": 150})
    c.curve_steps = 2400 if full else 100
    c.seeds = 1
    c.lr = 0.01
    c.in_channels = 32 if full else 8
    c.down = [128] * 5 if full else [8, 8, 8]
    c.up = [128] * 5 if full else [8, 8, 8]
    c.skip = [4] * 5 if full else [4, 4, 4]
    c.upsample = "bilinear"
    c.seed = 0
    c.out = "runs/dip"
    return c
