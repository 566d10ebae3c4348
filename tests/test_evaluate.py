import numpy as np
import pytest
from conftest import decisive

from mnist_edge.edge import evaluate as ev
from mnist_edge.edge.data import load_split
from mnist_edge.edge.layout import Layout
from mnist_edge.edge.parity import ATOL, RTOL


def test_score_counts_and_losses():
    logp = np.log(np.array([[0.7, 0.2, 0.1] + [0] * 7, [0.1, 0.8, 0.1] + [0] * 7]) + 1e-30)
    r = ev.score(logp, np.array([0, 2]))
    assert r.accuracy == 50 and r.correct == 1 and r.n == 2
    assert r.loss == pytest.approx(-(np.log(0.7) + np.log(0.1)) / 2, rel=1e-6)
    assert r.confusion[0][0] == 1 and r.confusion[2][1] == 1
    assert r.per_class_accuracy[0] == 100 and r.per_class_accuracy[2] == 0
    assert np.isnan(r.per_class_accuracy[5])  # no image of that class


def test_logits_and_log_probabilities_score_alike():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 10))
    labels = rng.integers(0, 10, 50)
    a, b = ev.score(logits, labels), ev.score(ev.log_softmax(logits), labels)
    assert a.loss == pytest.approx(b.loss) and a.confusion == b.confusion


def _allowed_change(reference: np.ndarray, labels: np.ndarray) -> tuple[int, float]:
    """What the parity rule lets differ between two correct runs of one model: answers on the
    near-ties (images moved between cells of the confusion matrix), and the loss by the largest
    tolerance of a true class's log-probability."""
    ties = int((~decisive(reference)).sum())
    true = np.abs(reference[np.arange(len(labels)), labels])
    return ties, float(np.maximum(ATOL, RTOL * true).max())


def _moved(a, b) -> int:
    """Images counted in another cell of the confusion matrix."""
    return int(np.abs(np.array(a.confusion) - np.array(b.confusion)).sum()) // 2


def test_checkpoint_and_its_exports_evaluate_alike(trained, exported, mnist_dir):
    from mnist_edge.edge.runners import load_runner, outputs

    test = load_split("test", mnist_dir, 500)
    results = {
        fmt: ev.evaluate(src, test)
        for fmt, src in [("checkpoint", trained), ("onnx", Layout(exported).onnx),
                         ("ort", Layout(exported).ort), ("pt2", Layout(exported).pt2)]
    }  # fmt: skip
    ties, loss_slack = _allowed_change(outputs(load_runner(trained), test.images), test.labels)
    ref = results["checkpoint"]
    for fmt, r in results.items():
        assert r.format == fmt and r.n == 500
        assert _moved(r, ref) <= ties, fmt
        assert r.loss == pytest.approx(ref.loss, abs=loss_slack)


def test_batch_size_does_not_change_the_numbers(exported, mnist_dir):
    from mnist_edge.edge.runners import load_runner, outputs

    test = load_split("test", mnist_dir, 300)
    a = ev.evaluate(Layout(exported).onnx, test, batch_size=7)
    b = ev.evaluate(Layout(exported).onnx, test, batch_size=300)
    ties, loss_slack = _allowed_change(outputs(load_runner(Layout(exported).onnx), test.images),
                                       test.labels)  # fmt: skip
    assert _moved(a, b) <= ties and a.loss == pytest.approx(b.loss, abs=loss_slack)
