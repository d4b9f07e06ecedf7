"""Vision transformer ViT-S/16 in the layout of DINO (Caron et al. ICCV 2021) and timm.

Parameter names equal those of DINO's ``vit_small`` and timm's
``vit_small_patch16_224`` (``patch_embed.proj``, ``cls_token``, ``pos_embed``,
``blocks.i.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}``, ``norm``,
``head``), so either checkpoint loads directly.  ``num_classes=0`` (the default,
as in DINO) makes ``head`` the identity: the output is the CLS token after the
final norm, (N, 384).

Split points: ``patch_embed`` (N, T, D) patch tokens; ``pos_drop`` (N, 1 + T, D)
with the CLS token and positions added; ``blocks.0`` .. ``blocks.11``; ``norm``;
``head``.  Taps (``stop`` only): ``blocks.i.attn``, the attention probabilities
(N, heads, 1 + T, 1 + T) of block i, and ``blocks.i.keys``, its keys with heads
concatenated (N, 1 + T, D) (the features of deep spectral methods).

For inputs other than 224 x 224 the position embedding of the patch grid is
resized bicubically, as DINO's ``interpolate_pos_encoding`` does; JAX's bicubic
kernel (Keys, a = -0.5) differs slightly from PyTorch's (a = -0.75), so only
224 x 224 is bit-for-bit comparable with the PyTorch model.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxinterp.nets import layers as L
from jaxinterp.nets.cnn import IMAGENET_MEAN, IMAGENET_STD
from jaxinterp.nets.core import register
from jaxinterp.nets.rules import Rules

_INIT = L.trunc_normal(0.02)


class Attention(nnx.Module):
    """Multi-head self-attention with one fused ``qkv`` projection and an output ``proj``."""

    def __init__(self, dim: int, heads: int, *, rngs: nnx.Rngs):
        self.qkv = L.Linear(dim, 3 * dim, init=_INIT, rngs=rngs)
        self.proj = L.Linear(dim, dim, init=_INIT, rngs=rngs)
        self.heads = heads

    def qkv_heads(self, x, rules: Rules):
        """q, k, v each (N, heads, T, head_dim)."""
        n, t, d = x.shape
        qkv = self.qkv(x, rules).reshape(n, t, 3, self.heads, d // self.heads)
        q, k, v = jnp.moveaxis(qkv, 2, 0).transpose(0, 1, 3, 2, 4)
        return q, k, v

    def probabilities(self, q, k):
        """softmax(q k^T / sqrt(head_dim)): (N, heads, T, T)."""
        logits = jnp.einsum("nhqd,nhkd->nhqk", q, k) * (q.shape[-1] ** -0.5)
        return jax.nn.softmax(logits, axis=-1)

    def __call__(self, x, rules: Rules):
        n, t, d = x.shape
        q, k, v = self.qkv_heads(x, rules)
        out = jnp.einsum("nhqk,nhkd->nqhd", self.probabilities(q, k), v).reshape(n, t, d)
        return self.proj(out, rules)


class Mlp(nnx.Module):
    def __init__(self, dim: int, hidden: int, *, rngs: nnx.Rngs):
        self.fc1 = L.Linear(dim, hidden, init=_INIT, rngs=rngs)
        self.fc2 = L.Linear(hidden, dim, init=_INIT, rngs=rngs)

    def __call__(self, x, rules: Rules):
        return self.fc2(jax.nn.gelu(self.fc1(x, rules), approximate=False), rules)


class Block(nnx.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, *, rngs: nnx.Rngs):
        self.norm1 = L.LayerNorm(dim)
        self.attn = Attention(dim, heads, rngs=rngs)
        self.norm2 = L.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), rngs=rngs)

    def __call__(self, x, rules: Rules):
        x = rules.add(x, self.attn(self.norm1(x), rules))
        return rules.add(x, self.mlp(self.norm2(x), rules))

    def attention(self, x, rules: Rules):
        q, k, _ = self.attn.qkv_heads(self.norm1(x), rules)
        return self.attn.probabilities(q, k)

    def keys(self, x, rules: Rules):
        _, k, _ = self.attn.qkv_heads(self.norm1(x), rules)
        n, h, t, hd = k.shape
        return k.transpose(0, 2, 1, 3).reshape(n, t, h * hd)


class VisionTransformer(nnx.Module):
    """ViT with a CLS token, learned positions and a linear head on the CLS token."""

    MEAN = IMAGENET_MEAN
    STD = IMAGENET_STD
    INPUT_SIZE = (224, 224)

    def __init__(self, num_classes: int, dim: int = 384, depth: int = 12, heads: int = 6,
                 patch: int = 16, mlp_ratio: float = 4.0, image_size: int = 224, *,
                 rngs: nnx.Rngs):
        self.patch = patch
        self.depth = depth
        self.patch_embed = nnx.Dict({
            "proj": L.Conv(3, dim, patch, stride=patch, init=_INIT, rngs=rngs)})
        self.cls_token = nnx.Param(jax.random.normal(rngs.params(), (1, 1, dim)) * 1e-6)
        grid = image_size // patch
        self.pos_embed = nnx.Param(_INIT(rngs.params(), (1, 1 + grid * grid, dim)))
        self.blocks = nnx.Dict({str(i): Block(dim, heads, mlp_ratio, rngs=rngs)
                                for i in range(depth)})
        self.norm = L.LayerNorm(dim)
        self.head = L.Linear(dim, num_classes, init=_INIT, rngs=rngs) if num_classes else None

    def _patch_embed(self, x, rules):
        y = self.patch_embed["proj"](x, rules)
        return y.reshape(y.shape[0], -1, y.shape[-1])

    def _pos_embed(self, x, rules):
        n, t, d = x.shape
        cls = jnp.broadcast_to(self.cls_token[...].astype(x.dtype), (n, 1, d))
        return jnp.concatenate([cls, x], axis=1) + self._positions(t).astype(x.dtype)

    def _positions(self, tokens: int):
        """Position embedding (1, 1 + tokens, D), the patch grid resized if needed (square grids)."""
        pos = self.pos_embed[...]
        if pos.shape[1] == 1 + tokens:
            return pos
        g0, g1 = int(round((pos.shape[1] - 1) ** 0.5)), int(round(tokens ** 0.5))
        if g1 * g1 != tokens:
            raise ValueError(f"x: expected a square patch grid, got {tokens} patches")
        grid = pos[:, 1:].reshape(1, g0, g0, -1)
        grid = jax.image.resize(grid, (1, g1, g1, grid.shape[-1]), "bicubic")
        return jnp.concatenate([pos[:, :1], grid.reshape(1, tokens, -1)], axis=1)

    def _norm(self, x, rules):
        return self.norm(x)

    def _head(self, x, rules):
        cls = x[:, 0]
        return cls if self.head is None else self.head(cls, rules)

    def stages(self):
        return ([("patch_embed", self._patch_embed), ("pos_drop", self._pos_embed)]
                + [(f"blocks.{i}", self.blocks[str(i)]) for i in range(self.depth)]
                + [("norm", self._norm), ("head", self._head)])

    def taps(self):
        taps = {}
        for i in range(self.depth):
            block = self.blocks[str(i)]
            taps[f"blocks.{i}.attn"] = (f"blocks.{i}", block.attention)
            taps[f"blocks.{i}.keys"] = (f"blocks.{i}", block.keys)
        return taps


class ViTS16(VisionTransformer):
    """ViT-S/16: dim 384, depth 12, 6 heads, MLP 1536, patch 16 (DINO / timm layout)."""

    def __init__(self, num_classes: int, *, rngs: nnx.Rngs):
        super().__init__(num_classes, 384, 12, 6, 16, 4.0, 224, rngs=rngs)


register("vit_s16", ViTS16, num_classes=0)
