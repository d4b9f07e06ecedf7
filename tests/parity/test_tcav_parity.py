"""Parity of jaxinterp.attribution's TCAV with Captum 0.9's ``TCAV`` on the same random weights.

torchvision ``vgg16`` with random weights becomes our params (:mod:`_torch_oracles`);
the CAVs are at ``features.29`` (2 x 2 x 512 at 32 px).  A concept (6 striped
images) is tested against 3 random sets of 6 noise images, and the random sets
against each other (3 random-vs-random CAVs, the t-test's null), on 4 inputs
and 2 classes, in float64 (``jax.enable_x64`` on ours, ``model.double()`` on
torch, the torch model wrapped as ``Sequential(Normalize, model)``).

What is compared.  Captum's TCAV trains its CAVs with a ``Classifier``; it is
given one that returns OUR CAVs (``concept_activation_vectors``; Captum's
weights are (concept, other) rows ``(v, -v)``, reordered by its ``classes``),
so that the scores compare exactly: ``sign_count`` equal, ``magnitude``
(Captum 0.9 computes the mean directional derivative, in float32: it casts
the layer gradients and the CAVs with ``.float()``) to 1e-5 of its largest
value.  The classifier also records the activations Captum trains on, which
must equal ours (1e-10), and the t-test of the concept's sign counts against
the random ones equals ``scipy.stats.ttest_ind`` on Captum's.

Our CAV training is checked separately against scikit-learn on the same
activations: the logistic regression of the same objective (``C = 2 / (n l2)``
on the standardised features, see ``fit_cav``) gives the same direction
(cosine > 0.999), and our held-out accuracy is no lower than that of
scikit-learn's ``LogisticRegression`` and of ``SGDClassifier`` (Captum's
default classifier is a linear model trained by SGD).

Captum (BSD) is only called as an oracle; none of its code is part of jaxinterp.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
pytest.importorskip("captum")
stats = pytest.importorskip("scipy.stats")
linear_model = pytest.importorskip("sklearn.linear_model")

import _torch_oracles as oracles  # noqa: E402
from captum.concept import TCAV, Concept  # noqa: E402
from captum.concept._utils.classifier import Classifier  # noqa: E402

from jaxinterp import attribution, nets  # noqa: E402
from jaxinterp.data import images  # noqa: E402

pytestmark = [pytest.mark.parity]

ARCH, LAYER, SIZE = "vgg16", "features.29", 32
M, R = 6, 3                                   # images per set, random sets
CLASSES = (281, 7)
PAIRS = ((0, 1), (0, 2), (1, 2))              # random-vs-random experiments
L2 = 1e-2                                     # well conditioned: L-BFGS converges in float32
TOL = 1e-5
ERRORS: dict[str, float] = {}


def _sets(rng):
    """Inputs (4, H, W, 3), the concept (M, ...), random sets (R, M, ...): float64 pixels in [0, 1]."""
    photos = images.batch(("chelsea", "coffee"), SIZE).astype(np.float64)
    x = np.clip(np.concatenate([photos, photos[:, :, ::-1]]) + rng.uniform(-1, 1, (4, SIZE, SIZE, 3)) / 255, 0, 1)
    stripes = np.zeros((M, SIZE, SIZE, 3))
    stripes[:, :, ::4] = 1.0
    concept = np.clip(stripes + rng.uniform(0, 0.3, stripes.shape), 0, 1)
    return x, concept, rng.uniform(0, 1, (R, M, SIZE, SIZE, 3))


class OurCAVs(Classifier):
    """A Captum ``Classifier`` that returns given CAVs, keyed by the concept ids of the experiment,
    and records the activations Captum trains it on."""

    def __init__(self, vectors: dict):
        self.vectors, self.seen, self.ids = vectors, {}, None

    def train_and_eval(self, dataloader, **kwargs):
        acts, labels = zip(*dataloader)
        labels = torch.cat(labels).tolist()
        self.ids = tuple(dict.fromkeys(labels))
        self.seen[self.ids] = (torch.cat(acts).reshape(len(labels), -1).numpy(), np.asarray(labels))
        return None

    def weights(self):
        v = torch.from_numpy(self.vectors[self.ids])
        return torch.stack([v, -v])

    def classes(self):
        return list(self.ids)


def _nchw_flat(v: np.ndarray) -> np.ndarray:
    """CAVs (..., h, w, C) -> Captum's flattening of (C, h, w)."""
    return np.moveaxis(v, -1, -3).reshape(*v.shape[:-3], -1)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    rng = np.random.default_rng(0)
    x, concept, randoms = _sets(rng)
    model = oracles.build(ARCH)
    net, targets = nets.get(ARCH), np.repeat(np.asarray([CLASSES], np.int32), len(x), axis=0)
    a_idx, b_idx = np.asarray(PAIRS).T
    with jax.enable_x64(True), jax.default_matmul_precision("highest"):
        params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), oracles.jax_params(ARCH, model))
        activations = jax.jit(lambda p, a: net.apply(p, a, stop=LAYER))
        acts = {name: np.asarray(activations(params, jnp.asarray(s)))
                for name, s in (("concept", concept), ("randoms", randoms.reshape(-1, SIZE, SIZE, 3)))}
        # the R concept-vs-random and the R random-vs-random CAVs in one vmapped fit of the activations
        # (attribution.concept_activation_vectors fits them the same way: tests/attribution/test_tcav.py)
        r_acts = acts["randoms"].reshape(R, M, *acts["randoms"].shape[1:])
        fit = jax.jit(jax.vmap(lambda c, n: attribution.fit_cav(c, n, l2=L2)))
        both = fit(jnp.asarray(np.concatenate([np.stack([acts["concept"]] * R), r_acts[a_idx]])),
                   jnp.asarray(np.concatenate([r_acts, r_acts[b_idx]])))
        cav = attribution.CAV(both.vector[:R], both.offset[:R])
        vectors = both.vector.astype(jnp.float64)
        scores = jax.jit(attribution.tcav, static_argnames=("net", "layer"))(
            net, params, jnp.asarray(x), jnp.asarray(targets), vectors, layer=LAYER)
        ours = dict(sign_count=np.asarray(scores.sign_count), magnitude=np.asarray(scores.magnitude),
                    cav=cav, vectors=np.asarray(vectors), acts=acts)

    # Captum: concept id 0, random sets ids 1..R
    def loader(images_):
        return torch.utils.data.DataLoader(oracles.to_torch(images_), batch_size=len(images_))

    concepts = [Concept(0, "stripes", loader(concept))] + [Concept(1 + i, f"random_{i}", loader(randoms[i]))
                                                          for i in range(R)]
    experiments = [[concepts[0], concepts[1 + i]] for i in range(R)] + \
                  [[concepts[1 + i], concepts[1 + j]] for i, j in PAIRS]
    keys = [(0, 1 + i) for i in range(R)] + [(1 + i, 1 + j) for i, j in PAIRS]
    flat = _nchw_flat(ours["vectors"])
    classifier = OurCAVs({k: flat[e] for e, k in enumerate(keys)})
    tcav = TCAV(oracles.pixels_model(model, torch.float64), [f"1.{LAYER}"], classifier=classifier,
                save_path=str(tmp_path_factory.mktemp("cav")))
    inputs = oracles.to_torch(x).requires_grad_()
    theirs = {"sign_count": np.zeros((2, len(keys))), "magnitude": np.zeros((2, len(keys)))}
    for k, c in enumerate(CLASSES):
        result = tcav.interpret(inputs, experiments, target=c)
        for e, exp in enumerate(experiments):
            key = "-".join(str(con.id) for con in exp)
            for field in theirs:
                theirs[field][k, e] = float(result[key][f"1.{LAYER}"][field][0])
    yield ours, theirs, classifier, x
    oracles.report_errors(ERRORS, "TCAV parity (Captum)", "tcav_parity")


def test_scores(run):
    ours, theirs, classifier, _ = run
    np.testing.assert_array_equal(ours["sign_count"], theirs["sign_count"])
    err = oracles.rel_err(ours["magnitude"], theirs["magnitude"])
    ERRORS[f"tcav magnitude [{ARCH}]"] = err
    print(f"\ntcav magnitude [{ARCH}]: {err:.2e}; sign_count {ours['sign_count'].tolist()}")
    assert err <= TOL, f"tcav magnitude: {err:.2e} > {TOL:.0e}"
    # the activations Captum trained on are ours (NCHW flattening)
    concept_acts = _nchw_flat(ours["acts"]["concept"])
    random_acts = _nchw_flat(ours["acts"]["randoms"]).reshape(R, M, -1)
    for (i, j), (acts, labels) in classifier.seen.items():
        want = np.concatenate([concept_acts if i == 0 else random_acts[i - 1], random_acts[j - 1]])
        np.testing.assert_array_equal(labels, [i] * M + [j] * M)
        assert oracles.rel_err(acts, want) <= 1e-10
    # the t-test of the concept's scores against the random-vs-random ones, for each class
    for k in range(2):
        t, p = attribution.t_test(jnp.asarray(ours["sign_count"][k, :R]), jnp.asarray(ours["sign_count"][k, R:]))
        want = stats.ttest_ind(theirs["sign_count"][k, :R], theirs["sign_count"][k, R:])
        np.testing.assert_allclose([t, p], [want.statistic, want.pvalue], rtol=1e-5, equal_nan=True)


def test_cav_training_against_sklearn(run):
    """Our CAV of the concept against random set 0, against scikit-learn on the same activations."""
    ours, *_ = run
    c, r = ours["acts"]["concept"].reshape(M, -1), ours["acts"]["randoms"].reshape(R, M, -1)
    features = np.concatenate([c, r[0]])
    labels = np.r_[np.ones(M), np.zeros(M)]
    mean, std = features.mean(0), np.maximum(features.std(0), 1e-6)
    n = len(labels)
    logistic = linear_model.LogisticRegression(C=2.0 / (n * L2), tol=1e-10, max_iter=10000)
    logistic.fit((features - mean) / std, labels)
    theirs = logistic.coef_[0] / std
    mine = ours["cav"].vector[0].reshape(-1)
    cosine = float(np.dot(mine, theirs) / (np.linalg.norm(mine) * np.linalg.norm(theirs)))
    ERRORS[f"CAV direction 1 - cosine vs sklearn LogisticRegression [{ARCH}]"] = 1 - cosine
    print(f"\nCAV direction against sklearn: cosine {cosine:.6f}")
    assert cosine > 0.999
    # held out: the concept's images are told from the two other random sets' as well as sklearn does
    held_c, held_r = c, r[1:].reshape(-1, c.shape[1])
    cav = attribution.CAV(jnp.asarray(ours["cav"].vector[:1]), jnp.asarray(ours["cav"].offset[:1]))
    shape = ours["acts"]["concept"].shape[1:]
    mine = float(attribution.cav_accuracy(cav, held_c.reshape(-1, *shape), held_r.reshape(-1, *shape))[0])
    test_x, test_y = np.concatenate([held_c, held_r]), np.r_[np.ones(len(held_c)), np.zeros(len(held_r))]
    sgd = linear_model.SGDClassifier(alpha=L2, random_state=0).fit((features - mean) / std, labels)
    for name, model in (("LogisticRegression", logistic), ("SGDClassifier", sgd)):
        theirs = model.score((test_x - mean) / std, test_y)
        print(f"held-out accuracy: ours {mine:.3f}, sklearn {name} {theirs:.3f}")
        assert mine >= theirs - 1.0 / len(test_y)
