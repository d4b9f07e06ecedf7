"""A TFDS mock whose examples are known in advance and whose split slices are honoured.

``tfds.testing.mock_data``'s default mock ignores slices (``train[4:10]`` yields
the same examples as ``train``); the tests of sharding, shuffling and of the
resumable cache need the slice semantics, and references computed from the very
examples the mock serves.  Used by tests/data/test_tfds.py and
tests/test_experiments_sela.py (not a test module itself).
"""

import contextlib
import types

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

FLAG = {"voc/2007": ("difficult", "is_difficult"), "coco/2014": ("crowd", "is_crowd")}


def indexed_examples(name, n, seed=0):
    """n valid examples; the classification ``label`` and the first box label = index.

    ImageNet images have random sides in [20, 60); CIFAR-10 images are 32 x 32.
    """
    rng = np.random.default_rng(seed)
    examples = []
    for i in range(n):
        h, w = (32, 32) if name == "cifar10" else rng.integers(20, 60, size=2)
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        if name == "imagenet2012":
            examples.append({"image": image, "label": np.int64(i), "file_name": b"x"})
            continue
        if name == "cifar10":
            examples.append({"id": b"x", "image": image, "label": np.int64(i)})
            continue
        k = int(rng.integers(1, 5))
        lo = rng.uniform(0.0, 0.5, (k, 2))
        bbox = np.concatenate([lo, lo + rng.uniform(0.1, 0.5, (k, 2))], 1)
        label = rng.integers(0, 20, k)
        label[0] = i
        examples.append(
            {
                "image": image,
                "objects": {
                    "bbox": bbox.astype(np.float32),
                    "label": label.astype(np.int64),
                    FLAG[name][1]: rng.random(k) < 0.5,
                },
            }
        )
    return examples


def _signature(example):
    return tf.nest.map_structure(
        lambda x: tf.TensorSpec((None,) * np.ndim(x), tf.as_dtype(np.asarray(x).dtype)),
        example,
    )


@contextlib.contextmanager
def indexed_mock(name, sizes, requested=None):
    """Mocks ``tfds.load`` (split slices honoured) and ``tfds.data_source``.

    Args:
        name: the dataset the examples are made for.
        sizes: an int (the size of a ``validation`` split) or {split: size}; split
            number k is made by ``indexed_examples(name, size, seed=k)``.
        requested: a list to which the spans read by each ``tfds.load`` are appended,
            as a list of (split, start, stop) per call.

    Yields:
        {split: the list of examples served}.
    """
    sizes = {"validation": sizes} if isinstance(sizes, int) else dict(sizes)
    examples = {s: indexed_examples(name, n, seed=k) for k, (s, n) in enumerate(sizes.items())}
    infos = {s: types.SimpleNamespace(num_examples=n) for s, n in sizes.items()}

    def as_dataset(self, split, **kwargs):
        del self, kwargs
        spans = tfds.core.ReadInstruction.from_spec(split).to_absolute(infos)
        if requested is not None:
            requested.append([(s.splitname, s.from_, s.to) for s in spans])
        chosen = [
            examples[s.splitname][i]
            for s in spans
            for i in range(s.from_ or 0, sizes[s.splitname] if s.to is None else s.to)
        ]
        first = next(iter(examples.values()))[0]
        return tf.data.Dataset.from_generator(
            lambda: iter(chosen), output_signature=_signature(first)
        )

    def as_data_source(self, split, **kwargs):
        del self, kwargs
        return examples[split]

    with tfds.testing.mock_data(as_dataset_fn=as_dataset, as_data_source_fn=as_data_source):
        yield examples
