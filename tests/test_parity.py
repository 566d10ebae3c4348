from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from mnist_edge.edge import parity, policy
from mnist_edge.edge.data import load_split
from mnist_edge.edge.errors import ArtifactError, ConfigError
from mnist_edge.edge.layout import Layout
from mnist_edge.edge.runners import load_runner


def test_identical_outputs_pass_with_zero_differences():
    ref = np.log(np.full((4, 10), 0.1, np.float32))
    r = parity.compare("x", ref, ref.copy(), labels=np.zeros(4, int))
    assert r and r.max_abs_diff == 0 and r.argmax_agreement == 100
    assert r.min_atol == r.min_rtol == 0


def test_element_passes_within_atol_or_rtol():
    ref = np.array([[-100.0, -1e-6]], np.float32)
    close_rel = np.array([[-100.05, -1e-6]], np.float32)  # |d|=0.05 > atol, rel 5e-4 < rtol
    assert parity.compare("rel", ref, close_rel)
    close_abs = np.array([[-100.0, -5e-5]], np.float32)  # rel huge, |d| < atol
    assert parity.compare("abs", ref, close_abs)
    off = np.array([[-100.2, -1e-6]], np.float32)  # |d|=0.2, rel 2e-3: beyond both
    r = parity.compare("off", ref, off)
    assert not r and r.failing_elements == 1
    assert r.min_atol == pytest.approx(0.2, rel=1e-3)  # the atol that would have passed
    assert r.min_rtol == pytest.approx(2e-3, rel=1e-3)


def test_nan_in_candidate_fails():
    ref = np.zeros((2, 10), np.float32)
    cand = ref.copy()
    cand[1, 3] = np.nan
    assert not parity.compare("nan", ref, cand)


# Polygraphy's comparator cases: NaN vs NaN and inf vs inf of the same sign are equal outputs;
# -inf vs inf and inf vs a finite number are not; a shape mismatch is an error, not a pass.
@pytest.mark.parametrize(
    "ref_value, cand_value, passes",
    [
        (np.nan, np.nan, False),
        (np.inf, np.inf, True),
        (-np.inf, -np.inf, True),
        (-np.inf, np.inf, False),
        (np.inf, 1.0, False),
        (-3.0, -np.inf, False),
    ],
)
def test_non_finite_values(ref_value, cand_value, passes):
    ref = np.full((2, 10), -2.3, np.float32)
    cand = ref.copy()
    ref[0, 1], cand[0, 1] = ref_value, cand_value
    r = parity.compare("x", ref, cand)
    assert bool(r) is passes
    assert r.failing_elements == (0 if passes else 1)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ArtifactError, match="shape"):
        parity.compare("x", np.zeros((2, 10)), np.zeros((2, 9)))


def test_groups_cover_test_set_batch_sizes_and_edges():
    images = np.zeros((300, 28, 28), np.uint8)
    groups = parity.input_groups(images, np.zeros(300, int))
    names = [g.name for g in groups]
    assert names[:5] == ["test set", "batch 1", "batch 2", "batch 7", "batch 64"]
    assert {"all background", "all ink", "uniform noise", "far out of range"} <= set(names)
    assert groups[0].n == 300
    assert {len(b) for b in groups[1].batches} == {1}
    assert [len(b) for b in groups[3].batches] == [7] * 18 + [2]
    first = next(groups[0].batches)  # the test set goes in the one inference batch size
    assert first.dtype == np.float32 and first.shape == (policy.BATCH, 1, 28, 28)


@pytest.fixture(scope="module")
def report(trained, exported, mnist_dir):
    layout = Layout(exported)
    targets = [layout.onnx, layout.torchscript, layout.pt2]
    return parity.check_against(trained, targets, load_split("test", mnist_dir, 500))


def test_exports_match_pytorch(report):
    """Judged by the parity rule alone: every element within atol or rtol, the same answer
    wherever the reference's margin exceeds what the rule lets move, and accuracy equal but for
    the near-ties (a different CPU may break those the other way)."""
    assert report.passed, [a.verdict() for a in report.artifacts]
    for art in report.artifacts:
        test = art.group("test set")
        assert test.n == 500 and test.decisive_agreement == 100
        assert abs(test.candidate_accuracy - test.reference_accuracy) <= test.near_ties / 5


def test_decisive_rows_follow_the_tolerances():
    ref = np.log(np.array([[0.6, 0.4] + [1e-9] * 8, [0.50001, 0.49999] + [1e-9] * 8]))
    keep = parity.decisive_rows(ref)  # row 2: margin 4e-5; each may move by rtol x 0.69
    assert keep.tolist() == [True, False]
    assert parity.decisive_rows(ref, atol=0, rtol=0).tolist() == [True, True]
    flipped = ref.copy()
    flipped[1, [0, 1]] = flipped[1, [1, 0]]  # a near-tie flips: allowed, and counted
    r = parity.compare("x", ref.astype(np.float32), flipped.astype(np.float32))
    assert r.argmax_agreement == 50 and r.decisive_agreement == 100 and r.near_ties == 1
    flipped[0, [0, 1]] = flipped[0, [1, 0]]  # a decisive row flips: it shows
    r = parity.compare("x", ref.astype(np.float32), flipped.astype(np.float32))
    assert r.decisive_agreement == 0 and not r
    nan = ref.copy()
    nan[0, 3] = np.nan
    assert not parity.decisive_rows(nan)[0]


def test_report_serialises_with_polygraphy_style_keys(report):
    d = report.to_dict()
    group = d["artifacts"][0]["groups"][0]
    for key in ("max_abs_diff", "max_rel_diff", "mean_abs_diff", "median_abs_diff",
                "p99_abs_diff", "min_atol", "argmax_agreement", "candidate_accuracy",
                "decisive_agreement", "near_ties"):  # fmt: skip
        assert key in group
    assert d["passed"] is True


def edit_onnx(src: Path, dest: Path, edit) -> Path:
    model = onnx.load(str(src))
    edit(model)
    onnx.save(model, str(dest))
    return dest


def perturb_weights(model):
    """Add noise of 1% of the weights' spread to fc.weight: a subtly broken model."""
    init = next(i for i in model.graph.initializer if i.name == "fc.weight")
    w = numpy_helper.to_array(init)
    noisy = w + np.random.default_rng(0).normal(0, 0.01 * w.std(), w.shape).astype(w.dtype)
    init.CopyFrom(numpy_helper.from_array(noisy, init.name))


def softmax_output(model):
    """Probabilities instead of log-probabilities: same argmax, other numbers."""
    node = next(n for n in model.graph.node if n.op_type == "LogSoftmax")
    node.op_type = "Softmax"


@pytest.mark.parametrize("edit", [perturb_weights, softmax_output])
def test_checker_catches_injected_faults(trained, exported, mnist_dir, tmp_path, edit):
    bad = edit_onnx(exported / "mnist_cnn.onnx", tmp_path / f"{edit.__name__}.onnx", edit)
    r = parity.check_against(trained, [bad], load_split("test", mnist_dir, 200))
    assert not r and not r.artifacts[0]
    assert r.artifacts[0].path.endswith(f"{edit.__name__}.onnx")
    assert "test set" in r.artifacts[0].verdict()["failed_groups"]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_onnx_of_another_model_is_refused(tmp_path):
    import torch

    from mnist_edge.model import MnistCNN

    other = tmp_path / "big.onnx"
    model = MnistCNN(image_size=32).eval()
    torch.onnx.export(model, (torch.zeros(2, 1, 32, 32),), str(other), dynamo=False)
    with pytest.raises(ArtifactError, match=r"expects .*32, 32"):
        load_runner(other, fmt="onnx")


def test_artifact_against_artifact_needs_no_checkpoint(exported, mnist_dir):
    layout = Layout(exported)
    r = parity.check_against(layout.onnx, [layout.ort], load_split("test", mnist_dir, 200))
    assert r.passed and r.checkpoint == str(layout.onnx)
    assert r.artifacts[0].group("test set").decisive_agreement == 100


def test_task_rule_is_read_back_from_metadata():
    rule = parity.TaskRule(max_accuracy_drop=0.7, min_argmax_agreement=97.5)
    assert parity.TaskRule.from_metadata(rule.to_metadata()) == rule
    assert parity.TaskRule.from_metadata({}) == parity.TaskRule()
    assert rule.passes(99.0, 98.4, 97.5) and not rule.passes(99.0, 98.2, 99.0)
    assert not rule.passes(99.0, 99.0, 97.4)
    with pytest.raises(ConfigError):
        parity.TaskRule(max_accuracy_drop=-1)
