"""The 1000 ImageNet-1k (ILSVRC-2012) class names, in the standard index order.

    from jaxinterp.data.imagenet import imagenet_classes, imagenet_class_index
    imagenet_classes()[281]            # 'tabby'
    imagenet_class_index("espresso")   # 967

Index i is the i-th WordNet synset in sorted order (n01440764 'tench' is 0,
n15075141 'toilet tissue' is 999), the order of torchvision's, timm's and the
TF reference ImageNet classifiers.  Each name is the first WordNet lemma of
the synset, as listed by timm (``timm/data/_info/imagenet_synsets.txt`` and
``imagenet_synset_to_lemma.txt``).  Two lemmas occur twice and are qualified
here: 134 'crane (bird)' / 517 'crane (machine)' and 638 'maillot (tights)' /
639 'maillot (tank suit)'.  264 'Cardigan' (the Welsh corgi) and 474
'cardigan' (the jacket) differ only in case.  The names are shipped in
``jaxinterp/data/imagenet_classes.txt``; credits in
``third_party/imagenet_classes/LICENSE.txt``.
"""

from __future__ import annotations

import functools
import importlib.resources

__all__ = ["imagenet_classes", "imagenet_class_index", "NUM_CLASSES"]

NUM_CLASSES = 1000


@functools.lru_cache(maxsize=1)
def imagenet_classes() -> tuple[str, ...]:
    """The ImageNet-1k class names.

    Returns:
      1000 distinct str, index i the name of class i (0 'tench', 281 'tabby',
      282 'tiger cat', 285 'Egyptian cat', 967 'espresso', 999 'toilet tissue').
    """
    text = importlib.resources.files("jaxinterp.data").joinpath("imagenet_classes.txt").read_text("utf-8")
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(names) != NUM_CLASSES or len(set(names)) != NUM_CLASSES:
        raise RuntimeError(f"imagenet_classes.txt: expected {NUM_CLASSES} distinct names, "
                           f"got {len(names)} ({len(set(names))} distinct)")
    return names


def _base(name: str) -> str:
    """The name without its qualifier: 'crane (bird)' -> 'crane'."""
    return name.split(" (", 1)[0]


def imagenet_class_index(name: str) -> int:
    """The index of an ImageNet class given its name.

    An exact (case-sensitive) match wins; otherwise the name is compared without
    case, both with the full class names and with their unqualified forms (so
    'Tiger Cat' is 282 and 'crane' matches 'crane (bird)' and 'crane (machine)').

    Args:
      name: a class name, as :func:`imagenet_classes` lists it.

    Returns:
      int in [0, 1000).

    Raises:
      ValueError: ``name`` not a str, unknown, or ambiguous (it matches several
        classes; the message lists them).
    """
    if not isinstance(name, str):
        raise ValueError(f"name must be a str, got {name!r}")
    classes = imagenet_classes()
    if name in classes:
        return classes.index(name)
    key = name.strip().lower()
    hits = [i for i, c in enumerate(classes) if key in (c.lower(), _base(c).lower())]
    if not hits:
        raise ValueError(f"name {name!r} is not an ImageNet class name")
    if len(hits) > 1:
        options = ", ".join(f"{i} {classes[i]!r}" for i in hits)
        raise ValueError(f"name {name!r} is ambiguous: it matches {options}")
    return hits[0]
