"""bench/extremal_agreement.py's helpers: the IoU of thresholded masks, and the float32-rounding perturbations.

The script itself runs TorchRay for minutes per entry (docs/results/extremal_torchray.md has its
figures); here in tests/parity because its TorchRay twin needs PyTorch.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")



@pytest.fixture(scope="module")
def bench(load_bench):
    return load_bench("extremal_agreement")


def test_iou_of_masks_thresholded_at_one_half(bench):
    a = np.zeros((3, 4, 4))
    b = np.zeros((3, 4, 4))
    a[0, :2] = 0.9                      # 8 pixels against 4 of them: 4 / 8
    b[0, :1] = 0.6
    a[1, 0, 0] = 0.5                    # 0.5 is not above the threshold: both empty, IoU 1
    b[2, 3] = 1.0                       # disjoint from an empty mask: 0
    np.testing.assert_allclose(bench.iou(a, b), [0.5, 1.0, 0.0])


def test_perturbations_change_the_last_bits_only(bench):
    rng = np.random.default_rng(0)
    tree = {"w": rng.normal(size=(64, 64)).astype(np.float32), "b": np.ones(5, np.float32)}
    out = bench.perturbed(tree, 1)
    for k in tree:
        rel = np.abs(out[k] / tree[k] - 1)
        assert out[k].dtype == np.float32 and rel.max() <= 2.0 ** -22 and rel.max() > 0
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)).eval()
    with torch.no_grad():
        model[1].running_var.fill_(2.0)
    twin = bench.perturbed_torch(model, 2)
    before = dict(model.state_dict())
    for name, t in twin.state_dict().items():
        if t.is_floating_point():
            rel = (t / before[name] - 1).abs().max().item() if before[name].abs().min() > 0 else 0.0
            assert rel <= 2.0 ** -22, name
    assert not torch.equal(twin[0].weight, model[0].weight) and not torch.equal(twin[1].running_var, model[1].running_var)
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(twin(x), model(x), rtol=1e-5, atol=1e-5)
