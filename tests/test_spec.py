import numpy as np

from mnist_edge.edge import spec


def test_contract_round_trips_through_metadata():
    c = spec.Contract(mean=0.5, std=0.25)
    meta = c.to_metadata()
    assert all(isinstance(v, str) for v in meta.values())
    assert spec.Contract.from_metadata(meta) == c


def test_contract_absent_from_foreign_metadata():
    assert spec.Contract.from_metadata({"producer": "someone"}) is None


def test_normalize_uses_the_training_statistics():
    pixels = np.array([[0, 255]], np.uint8)
    out = spec.normalize(pixels)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[-0.1307 / 0.3081, (1 - 0.1307) / 0.3081]], rtol=1e-6)
