# %% [markdown]
# # The Net facade
#
# Every jaxinterp method sees a network through one facade: a static, hashable
# `Net` with pure `init` / `apply`, exact split points and swappable backward
# rules.  This notebook (a Jupytext "percent" script: open it in Jupyter, VS Code,
# or run it with `python notebooks/01_net_facade.py`) walks through it on random
# weights; `jaxinterp.nets.load(name, path)` gives the real ones.

# %%
import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp import nets
from jaxinterp.nets import rules

print(nets.names())
net = nets.get("resnet50")
params = net.init(jax.random.key(0))
print(net, f"{nets.count_params(params):,} parameters")
print("split points:", net.layers[:6], "...", net.layers[-4:])

# %% [markdown]
# Inputs are RGB pixels in [0, 1], NHWC, of any size the net accepts (224 x 224 for
# ImageNet nets; 128 here to keep the notebook fast on a CPU); the net normalises inside.

# %%
x = jax.random.uniform(jax.random.key(1), (2, 128, 128, 3))
apply = jax.jit(net.apply, static_argnames=("start", "stop", "rules", "capture"))   # one compiled program per split
logits = apply(params, x)
print("logits", logits.shape)

# %% [markdown]
# ## Head and tail
# `stop=l` returns the activation at split point `l`; `start=l` runs the rest.
# The two halves compose back to the whole net exactly.

# %%
feats = apply(params, x, stop="layer3")
print("layer3", feats.shape)
rest = apply(params, feats, start="layer3")
print("max |split - whole| =", float(jnp.max(jnp.abs(rest - logits))))

# %% [markdown]
# ## Backward rules
# Guided backpropagation is a rule set, not a hook: the forward pass is unchanged
# and `jax.grad` follows the guided ReLU.  It composes with `jit` and `vmap`.  The params are
# an argument of the jitted function: closed over, they would be compiled into the
# program as constants (slower to compile, and compiled again for other weights).

# %%
def class_score(p, x1, cls, rule_set):
    return net.apply(p, x1[None], rules=rule_set)[0, cls]

saliency = jax.jit(jax.vmap(jax.grad(class_score, argnums=1), (None, 0, 0, None)), static_argnums=3)
g_plain = saliency(params, x, jnp.array([1, 2]), rules.STANDARD)
g_guided = saliency(params, x, jnp.array([1, 2]), rules.GUIDED)
print("plain", g_plain.shape, "guided", g_guided.shape,
      "differ:", not np.allclose(g_plain, g_guided))

# %% [markdown]
# ## Many nets at once
# `apply` is pure in its params, so a stack of networks is one `vmap`.

# %%
small = nets.get("smallcnn")
stack = jax.vmap(small.init)(jax.random.split(jax.random.key(2), 4))
images = jax.random.uniform(jax.random.key(3), (5, 64, 64, 3))
print("4 nets x 5 images:", jax.vmap(small.apply, (0, None))(stack, images).shape)

# %% [markdown]
# ## ViT attention
# `vit_s16` (DINO layout) exposes each block's attention and keys as taps.

# %%
vit = nets.get("vit_s16")
vparams = vit.init(jax.random.key(4))
image = jax.random.uniform(jax.random.key(5), (1, 224, 224, 3))
taps = jax.jit(lambda p, x: vit.apply(p, x, capture=("blocks.11.attn", "blocks.11.keys"))[1])(vparams, image)
attn, keys = taps["blocks.11.attn"], taps["blocks.11.keys"]       # both from one forward pass
print("attention", attn.shape, "keys", keys.shape)
