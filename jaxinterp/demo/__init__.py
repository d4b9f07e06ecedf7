"""``jaxinterp demo``: the pretrained EfficientNet-Lite0 on photographs (:mod:`.photos`), the small CNN
on the synthetic set (:mod:`.smallcnn`), and the runner that writes the report (:mod:`.run`)."""

from jaxinterp.demo import photos, smallcnn
from jaxinterp.demo.run import run_demo

__all__ = ["photos", "smallcnn", "run_demo"]
