# %% [markdown]
# # A tour of the attribution methods
#
# Every method of `jaxinterp.attribution` is a pure function
# `method(net, params, x, target, **options) -> maps (N, T, H, W)`: x holds N images
# in [0, 1], target holds T classes per image (or units anywhere in the net), and
# all images and targets go through one compiled call.  This notebook (a Jupytext
# "percent" script; run it with `python notebooks/02_attribution.py`) explains the
# trained smallcnn of the zoo on held-out synthetic images, then a bundled
# photograph through a random-weight vgg16.  Figures go to `runs/notebooks/`.

# %%
import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp import attribution, nets, plot
from jaxinterp.targets import Unit
from jaxinterp.data import images, synthetic
from jaxinterp.train import zoo

QUICK = os.environ.get("JAXINTERP_NOTEBOOK_QUICK") == "1"     # the test suite's shorter loops
SAMPLES = 4 if QUICK else 32                                  # IG steps and SmoothGrad samples
OUT = os.path.join("runs", "notebooks")
os.makedirs(OUT, exist_ok=True)

net, params, info = zoo.pretrained("smallcnn")       # the trained checkpoint ships with the package


def explain(net, method, **options):
    """``method`` as one compiled program of (params, x, target); the net and the options are static.

    The methods run without ``jax.jit`` too, but then op by op: on a CPU compiled calls are
    several times faster (and the same program serves every call with these shapes)."""
    return jax.jit(lambda p, x, t: method(net, p, x, t, **options))


data = synthetic.generate(jax.random.key(zoo.TEST_SEED), 4, variant="easy", size=64)
x, labels = jnp.asarray(data["image"]), jnp.asarray(data["label"])
print(net, "held-out accuracy", info["accuracy"])
print("classes:", [synthetic.CLASSES[int(t)] for t in labels])

# %% [markdown]
# ## Backprop methods
# The gradient, input x gradient and integrated gradients differ in what they
# multiply the backward signal by; deconvnet and guided backprop change the backward
# rule of the ReLUs (`jaxinterp.nets.rules`, custom VJPs: no hooks).  Two targets per
# image: the true class and class 0 ('disk').

# %%
targets = jnp.stack([labels, jnp.zeros_like(labels)], axis=1)        # (N, T=2)
maps = {
    "gradient": explain(net, attribution.gradient)(params, x, targets),
    "guided": explain(net, attribution.guided_backprop)(params, x, targets),
    "deconvnet": explain(net, attribution.deconvnet)(params, x, targets),
    "IG": explain(net, attribution.integrated_gradients, steps=SAMPLES)(params, x, targets),
    "SmoothGrad": explain(net, attribution.smoothgrad, key=jax.random.key(0), samples=SAMPLES)(params, x, targets),
}
for name, m in maps.items():
    print(f"{name:10s} {m.shape}")

# %% [markdown]
# Integrated gradients satisfy completeness: the map sums to the score difference
# between the image and the baseline (here black), up to the quadrature error.

# %%
ig = maps["IG"]
gap = jnp.take_along_axis(net.apply(params, x) - net.apply(params, jnp.zeros_like(x)), targets, axis=1)
print("sum of IG   ", np.round(np.asarray(ig.sum((2, 3))), 3).tolist())
print("f(x) - f(0) ", np.round(np.asarray(gap), 3).tolist())

# %% [markdown]
# ## Layer methods: CAM, Grad-CAM and the linear approximation
# They read the last convolutional activation ('features.10', 8 x 8) and are
# upsampled bilinearly to the image unless `resize=False`.

# %%
gc = explain(net, attribution.grad_cam, layer="features.10")(params, x, targets)
gc_small = explain(net, attribution.grad_cam, layer="features.10", resize=False)(params, x, targets)
cam = explain(net, attribution.cam, layer="features.10")(params, x, targets)
print("Grad-CAM", gc.shape, "at the layer", gc_small.shape)

# %% [markdown]
# ## Perturbation methods
# Occlusion and RISE only run the net forward: every window or mask is one forward
# pass shared by all targets of an image, `chunk_size` of them at a time.

# %%
occ = explain(net, attribution.occlusion, window=8, stride=4)(params, x, targets)
masks = 100 if QUICK else 1000
rise = explain(net, attribution.rise, key=jax.random.key(1), num_masks=masks,
               chunk_size=min(masks, 250))(params, x, targets)

# %% [markdown]
# ## Units as targets
# A target can be a channel (its mean over positions) or a neuron of any split
# point: here channel 5 and 9 of 'features.7', and one neuron of channel 5.

# %%
channels = Unit("features.7", channel=jnp.tile(jnp.array([5, 9]), (x.shape[0], 1)))
neuron = Unit("features.7", channel=jnp.full((x.shape[0],), 5), y=jnp.full((x.shape[0],), 8),
              x=jnp.full((x.shape[0],), 8))
unit_maps = explain(net, attribution.gradient)(params, x, channels)
neuron_maps = explain(net, attribution.guided_backprop)(params, x, neuron)
print("channel maps", unit_maps.shape, "neuron maps", neuron_maps.shape)

# %%
cells, titles = [], []
panels = {**maps, "Grad-CAM": gc, "CAM": cam, "occlusion": occ, "RISE": rise}
for n in range(2):
    cells.append(np.asarray(x[n]))
    titles.append(synthetic.CLASSES[int(labels[n])])
    for name, m in panels.items():
        cells.append(plot.heatmap(m[n, 0], signed=bool((m[n, 0] < 0).any())))
        titles.append(name)
print(plot.grid(cells, titles, os.path.join(OUT, "02_attribution_smallcnn.png"), ncols=len(panels) + 1))

# %% [markdown]
# ## A photograph through vgg16
# The same calls on an ImageNet architecture (random weights here: no pretrained
# weights can be downloaded in this environment; `nets.load("vgg16", path)` gives
# the real ones).  Random weights are exactly what the sanity checks of Adebayo et
# al. feed methods: guided backprop still draws edges.

# %%
vgg = nets.get("vgg16")
vgg_params = vgg.init(jax.random.key(0))
photo = images.batch(["chelsea"], size=64)
top = jnp.argsort(vgg.apply(vgg_params, photo), axis=-1)[:, -2:]       # two top classes
vgg_maps = {
    "gradient": explain(vgg, attribution.gradient)(vgg_params, photo, top),
    "guided": explain(vgg, attribution.guided_backprop)(vgg_params, photo, top),
    "Grad-CAM": explain(vgg, attribution.grad_cam, layer="features.29")(vgg_params, photo, top),
    "LRP eps": explain(vgg, attribution.lrp, rule="epsilon")(vgg_params, photo, top),
    "excitation": explain(vgg, attribution.excitation_backprop)(vgg_params, photo, top),
}
cells = [np.asarray(photo[0])] + [plot.heatmap(m[0, 0], signed=bool((m[0, 0] < 0).any()))
                                  for m in vgg_maps.values()]
print(plot.grid(cells, ["chelsea", *vgg_maps], os.path.join(OUT, "02_attribution_vgg16.png")))
