"""The NumPy bilinear resize the analysis tests compare against (torch's ``align_corners=False``)."""

import numpy as np


def bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) float64 weights: half-pixel centres, sources clamped to the border, by a loop."""
    m = np.zeros((n_out, n_in))
    for i in range(n_out):
        s = min(max((i + 0.5) * n_in / n_out - 0.5, 0.0), n_in - 1.0)
        lo = int(np.floor(s))
        m[i, lo] += 1 - (s - lo)
        m[i, min(lo + 1, n_in - 1)] += s - lo
    return m


def resize_bilinear(a, hw) -> np.ndarray:
    """(h, w, c) -> (H, W, c) float64."""
    a = np.asarray(a, np.float64)
    return np.einsum("yY,YXc,xX->yxc", bilinear_matrix(a.shape[0], hw[0]), a, bilinear_matrix(a.shape[1], hw[1]))
