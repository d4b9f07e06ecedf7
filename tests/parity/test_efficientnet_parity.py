"""EfficientNet-Lite0/1/2: the zoo nets against timm, the pretrained weights against their reference code.

1. Random weights (batch-norm statistics and affine terms randomised too): every
   split point of ``tf_efficientnet_lite0/1/2`` against timm's module outputs at
   the nets' own input sizes (224 / 240 / 260 px, where TF 'SAME' padding is
   asymmetric on every stride-2 convolution), max |ours - theirs| / max |theirs|
   <= 1e-8 in float64 on both sides.  (In float32 the ReLU6 of ``bn2`` differs by
   3e-4 of its peak: random weights give head pre-activations in the hundreds, whose
   float32 rounding survives where the clip caps the peak at 6.)
2. Pretrained: :func:`jaxinterp.nets.pretrained` against the PyTorch reference code
   the weights were converted for (``efficientnet-lite-pytorch`` 0.1.0,
   ``EfficientNet.from_pretrained``) on the bundled photographs, logits <= 1e-4;
   and top-k classes of photographs whose object is unambiguous.

Both sides see the same normalised input (255 x - 127) / 128.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

import _torch_oracles as oracles  # noqa: E402
from jaxinterp import nets  # noqa: E402
from jaxinterp.data import images  # noqa: E402

pytestmark = pytest.mark.parity

NAMES = ("tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2")
TOL = 1e-4      # float32 against float32 (pretrained logits)
TOL64 = 1e-8    # float64 against float64 (split points)


def _normalised_nchw(x: np.ndarray) -> "torch.Tensor":
    return torch.from_numpy(np.ascontiguousarray(((x * 255 - 127) / 128).transpose(0, 3, 1, 2)))


def _rel_err(ours, theirs) -> float:
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


def _timm_outputs(model, xt, layers):
    """{split point: timm output (NHWC for feature maps)} from forward hooks on the same-named modules."""
    out, hooks = {}, []
    for layer in layers:
        def hook(_, __, y, layer=layer):
            a = y.detach().numpy()
            out[layer] = a.transpose(0, 2, 3, 1) if a.ndim == 4 else a
        hooks.append(model.get_submodule(layer).register_forward_hook(hook))
    with torch.no_grad():
        out[None] = model(xt).numpy()
    for h in hooks:
        h.remove()
    return out


_segment = jax.jit(lambda net, params, x, start, stop: net.apply(params, x, start=start, stop=stop),
                   static_argnums=(0, 3, 4))


def _our_outputs(net, params, x, layers):
    """{split point: activation}, each segment run from the previous split point (one compile per segment)."""
    out, a, start = {}, x, None
    for layer in layers:
        a = _segment(net, params, a, start, layer)
        out[layer], start = np.asarray(a), layer
    out[None] = np.asarray(_segment(net, params, a, start, None))
    return out


@pytest.mark.parametrize("name", NAMES)
def test_every_split_point_matches_timm(name):
    model = oracles.randomise_norms(timm.create_model(name, pretrained=False), seed=1).double()
    net = nets.get(name)
    size = net.input_size[0]
    assert size == model.pretrained_cfg["input_size"][-1]
    x = np.random.default_rng(0).uniform(size=(2, size, size, 3))
    stages = [layer for layer in net.layers if not (layer.count(".") == 1 and layer.startswith("blocks"))]
    theirs = _timm_outputs(model, _normalised_nchw(x), stages)
    with jax.enable_x64(True):
        params = jax.tree.map(lambda a: np.asarray(a, np.float64), nets.from_state_dict(
            name, {k: v.numpy() for k, v in model.state_dict().items()}))
        ours = _our_outputs(net, params, x, stages)
    assert ours[None].dtype == np.float64
    errors = {k or "logits": _rel_err(ours[k], theirs[k]) for k in theirs}
    print(f"\n{name}: {len(errors)} split points, worst {max(errors, key=errors.get)} "
          f"{max(errors.values()):.1e}")
    assert all(v <= TOL64 for v in errors.values()), {k: v for k, v in errors.items() if v > TOL64}
    # The aliases name the last block of each stage.
    for s, depth in enumerate(np.unique([int(l.split(".")[1]) for l in stages if l.startswith("blocks")],
                                        return_counts=True)[1]):
        assert net.layers.index(f"blocks.{s}") == net.layers.index(f"blocks.{s}.{depth - 1}") + 1


PHOTOS = ("chelsea", "coffee", "motorcycle", "camera", "rocket", "astronaut")


@pytest.fixture(scope="module")
def reference():
    lite = pytest.importorskip("efficientnet_lite_pytorch")
    out = {}
    for name in NAMES:
        net = nets.get(name)
        x = images.batch_centre_crop(PHOTOS, net.input_size[0])
        model = lite.EfficientNet.from_pretrained(name[3:].replace("_", "-"),
                                                  weights_path=nets.pretrained_path(name)).eval()
        with torch.no_grad():
            theirs = model(_normalised_nchw(x)).numpy()
        with jax.default_matmul_precision("highest"):
            ours = np.asarray(jax.jit(net.apply)(nets.pretrained(name), x))
        out[name] = ours, theirs
    return out


@pytest.mark.parametrize("name", NAMES)
def test_pretrained_logits_match_the_reference_code(name, reference):
    ours, theirs = reference[name]
    err = _rel_err(ours, theirs)
    print(f"\n{name} pretrained logits on {len(PHOTOS)} photographs: max rel. error {err:.1e}")
    assert err <= TOL
    np.testing.assert_array_equal(ours.argmax(-1), theirs.argmax(-1))


# Photograph -> ImageNet classes its top-1 must be among (every net), and what the top 3 must contain.
TOP1 = {"chelsea": {"tabby", "tiger cat", "Egyptian cat"}, "coffee": {"espresso"},
        "camera": {"tripod", "reflex camera"}}


@pytest.mark.parametrize("name", NAMES)
def test_pretrained_nets_recognise_the_photographs(name, reference):
    from jaxinterp.data import imagenet_classes
    classes = imagenet_classes()
    ours, _ = reference[name]
    for i, photo in enumerate(PHOTOS):
        top = [classes[k] for k in np.argsort(-ours[i])[:5]]
        print(f"{name} {photo}: {top}")
        if photo in TOP1:
            assert top[0] in TOP1[photo], (photo, top)
    cat = [classes[k] for k in np.argsort(-ours[0])[:3]]
    assert set(cat) <= TOP1["chelsea"] | {"lynx"}, cat
    assert "moped" in [classes[k] for k in np.argsort(-ours[2])[:5]] or \
        "motor scooter" in [classes[k] for k in np.argsort(-ours[2])[:5]]


def test_pretrained_path_names_the_extra_when_the_package_is_missing(monkeypatch):
    import importlib
    real = importlib.import_module

    def missing(name, *a, **k):
        if name.startswith("efficientnet_lite"):
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", missing)
    with pytest.raises(ValueError, match=r"jaxinterp\[pretrained\]"):
        nets.pretrained_path("tf_efficientnet_lite1")
    with pytest.raises(ValueError, match="name"):
        nets.pretrained("resnet50")
