"""The exporter's open-set threshold: nearest true match vs nearest impostor, balanced accuracy."""

import numpy as np
import pytest

pytest.importorskip("onnx")
from edgereid.export.accuracy import open_set_threshold  # noqa: E402


def test_threshold_separates_true_matches_from_impostors():
    # 1-D embeddings: each query's true match is 0.1 away, the nearest impostor 1.0 away.
    g = np.array([[0.0], [5.0], [10.0]], np.float32)
    g_pids = np.array([1, 2, 3])
    q = np.array([[0.1], [5.1], [9.9]], np.float32)
    q_pids = np.array([1, 2, 3])
    res = open_set_threshold(q, g, q_pids, g_pids)
    assert 0.1 <= res["threshold"] < 4.9
    assert res["true_accept_rate"] == 1.0 and res["true_reject_rate"] == 1.0


def test_threshold_without_any_true_match_says_so():
    res = open_set_threshold(np.zeros((2, 1)), np.ones((2, 1)), np.array([1, 2]), np.array([3, 4]))
    assert res["threshold"] is None
