"""The evaluation centre crop equals torchvision's and timm's; the class names equal timm's ImageNet lemmas."""

import math
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transforms = pytest.importorskip("torchvision.transforms")
timm_data = pytest.importorskip("timm.data")

import matplotlib.cbook  # noqa: E402
import skimage  # noqa: E402
from PIL import Image  # noqa: E402

from jaxinterp.data import images, imagenet_classes  # noqa: E402

_SKIMAGE = os.path.join(os.path.dirname(skimage.__file__), "data")
FILES = {  # name -> the file, opened with PIL independently of jaxinterp
    "astronaut": os.path.join(_SKIMAGE, "astronaut.png"),
    "camera": os.path.join(_SKIMAGE, "camera.png"),
    "chelsea": os.path.join(_SKIMAGE, "chelsea.png"),
    "coffee": os.path.join(_SKIMAGE, "coffee.png"),
    "grace_hopper": matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False),
    "hubble_deep_field": os.path.join(_SKIMAGE, "hubble_deep_field.jpg"),
    "ihc": os.path.join(_SKIMAGE, "ihc.png"),
    "motorcycle": os.path.join(_SKIMAGE, "motorcycle_left.png"),
    "retina": os.path.join(_SKIMAGE, "retina.jpg"),
    "rocket": os.path.join(_SKIMAGE, "rocket.jpg"),
}


def _pil(name):
    with Image.open(FILES[name]) as im:
        return im.convert("RGB")


def _hwc(tensor):
    return tensor.permute(1, 2, 0).numpy()


def test_files_cover_all_names():
    assert tuple(sorted(FILES)) == images.all_names()


@pytest.mark.parametrize("name", sorted(FILES))
@pytest.mark.parametrize("size, crop_fraction", [(224, 0.875), (64, 0.875), (97, 1.0), (240, 0.9)])
def test_centre_crop_equals_torchvision(name, size, crop_fraction):
    """Resize(floor(size / crop_fraction), BICUBIC) + CenterCrop(size) + ToTensor on the PIL image: exactly equal."""
    tf = transforms.Compose([
        transforms.Resize(math.floor(size / crop_fraction), interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(size),
        transforms.ToTensor(),
    ])
    expected = _hwc(tf(_pil(name)))
    got = images.load_centre_crop(name, size, crop_fraction)
    assert got.shape == expected.shape == (size, size, 3) and got.dtype == expected.dtype == np.float32
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("name", ["chelsea", "grace_hopper", "camera", "rocket"])
@pytest.mark.parametrize("model", ["tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2"])
def test_centre_crop_equals_timm_eval_transform(name, model):
    """timm's eval transform of EfficientNet-Lite0/1/2 (crop_mode 'center', bicubic), unnormalised."""
    import timm
    cfg = timm.models.get_pretrained_cfg(model)
    assert cfg.interpolation == "bicubic" and cfg.crop_mode == "center"
    size, crop_pct = cfg.input_size[-1], cfg.crop_pct
    tf = timm_data.create_transform(size, is_training=False, interpolation=cfg.interpolation,
                                    crop_pct=crop_pct, crop_mode=cfg.crop_mode, normalize=False)
    expected = _hwc(tf(_pil(name)))                            # uint8 (MaybePILToTensor)
    assert expected.dtype == np.uint8 and expected.shape == (size, size, 3)
    np.testing.assert_array_equal(images.load_centre_crop(name, size, crop_pct),
                                  expected.astype(np.float32) / np.float32(255.0))


def test_batch_centre_crop_equals_torchvision():
    tf = transforms.Compose([transforms.Resize(256, interpolation=transforms.InterpolationMode.BICUBIC),
                             transforms.CenterCrop(224), transforms.ToTensor()])
    names = ["coffee", "grace_hopper"]
    expected = np.stack([_hwc(tf(_pil(n))) for n in names])
    np.testing.assert_array_equal(images.batch_centre_crop(names, 224), expected)


def test_pointing_set_images_equal_torchvision():
    tf = transforms.Compose([transforms.Resize(256, interpolation=transforms.InterpolationMode.BICUBIC),
                             transforms.CenterCrop(224), transforms.ToTensor()])
    s = images.pointing_set(224)
    for photo, image in zip(s["photo"], s["image"]):
        np.testing.assert_array_equal(image, _hwc(tf(_pil(str(photo)))))


def test_class_names_are_timm_first_lemmas():
    info = timm_data.ImageNetInfo("imagenet-1k")
    lemmas = [info.index_to_description(i) for i in range(1000)]
    first = [lemma.split(",")[0].strip() for lemma in lemmas]
    ours = imagenet_classes()
    qualified = {134: "crane (bird)", 517: "crane (machine)", 638: "maillot (tights)",
                 639: "maillot (tank suit)"}
    assert {i: ours[i] for i in qualified} == qualified
    assert all(ours[i].split(" (")[0] == first[i] for i in qualified)
    assert [ours[i] for i in range(1000) if i not in qualified] == [first[i] for i in range(1000)
                                                                    if i not in qualified]
    assert info.index_to_label_name(0) == "n01440764" and info.index_to_label_name(999) == "n15075141"
