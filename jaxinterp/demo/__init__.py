"""The sections of ``jaxinterp demo``: the pretrained EfficientNet-Lite0 on photographs (:mod:`.photos`)."""

from jaxinterp.demo import photos

__all__ = ["photos"]
