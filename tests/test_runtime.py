import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest
from conftest import P_AGREE, assert_same_answers, binomial_floor
from PIL import Image

from mnist_edge.edge import parity
from mnist_edge.edge.data import batches, load_split
from mnist_edge.edge.errors import ArtifactError, InputError
from mnist_edge.edge.runners import load_runner
from mnist_edge.edge.runtime import Predictor, prepare_image


@pytest.fixture(scope="module")
def predictor(exported):
    return Predictor(exported / "mnist_cnn.onnx", threads=1)


@pytest.fixture(scope="module")
def digits(mnist_dir):
    return load_split("test", mnist_dir, 200)


def test_answers_agree_with_pytorch_on_real_digits(predictor, digits, trained):
    """Predictor.predict (its own preprocessing) against PyTorch fed by the training pipeline's
    normalisation: the same answer wherever the parity rule protects it."""
    pred = predictor.predict(digits.images)
    reference = load_runner(trained)(next(batches(digits.images, len(digits.images))))
    assert_same_answers(reference, np.log(pred.probabilities))
    assert pred.probabilities.shape == (200, 10)
    np.testing.assert_allclose(pred.probabilities.sum(1), 1, rtol=1e-5)
    np.testing.assert_allclose(pred.confidences, pred.probabilities.max(1))
    assert predictor.contract_from_model


def test_every_accepted_form_gives_the_same_answer(predictor, digits):
    u8 = digits.images[:5]
    f01 = u8.astype(np.float32) / 255
    forms = [u8, u8[:, None], f01, f01[:, None], f01.astype(np.float64)]
    results = [predictor.predict(x) for x in forms]
    for r in results[1:]:  # uint8 goes through a table, floats through arithmetic: the rule
        assert parity.compare("form", np.log(results[0].probabilities), np.log(r.probabilities))
        assert_same_answers(np.log(results[0].probabilities), np.log(r.probabilities))
    single = predictor.predict(u8[0])
    assert single.labels.shape == (1,) and single.labels[0] == results[0].labels[0]


@pytest.mark.parametrize(
    "x, message",
    [
        (np.zeros((28, 28, 3), np.uint8), r"expected uint8 or float32 .*got uint8 \(28, 28, 3\)"),
        (np.zeros((2, 3, 28, 28), np.float32), r"got float32 \(2, 3, 28, 28\)"),
        (np.zeros((32, 32), np.uint8), r"got uint8 \(32, 32\)"),
        (np.zeros((0, 28, 28), np.uint8), "empty batch"),
        (np.zeros((28, 28), np.int64), "got int64"),
        (np.full((28, 28), np.nan, np.float32), "NaN or Inf"),
        (np.full((28, 28), np.inf, np.float32), "NaN or Inf"),
        (np.full((28, 28), 255.0, np.float32), "must lie in 0..1, got 255"),
    ],
)
def test_bad_input_says_what_was_expected_and_what_came(predictor, x, message):
    with pytest.raises(InputError, match=message):
        predictor.predict(x)


def test_foreign_model_falls_back_to_standard_values_and_says_so(exported, tmp_path):
    import onnx

    model = onnx.load(str(exported / "mnist_cnn.onnx"))
    del model.metadata_props[:]
    foreign = tmp_path / "foreign.onnx"
    onnx.save(model, str(foreign))
    with pytest.warns(UserWarning, match="no mnist-edge metadata"):
        p = Predictor(foreign)
    assert not p.contract_from_model and p.contract.mean == 0.1307


def test_not_an_mnist_model_is_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "identity",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 224, 224])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 224, 224])],
    )
    path = tmp_path / "other.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(ArtifactError, match=r"expects .*224.*takes float \(N, 1, 28, 28\)"):
        Predictor(path)
    with pytest.raises(ArtifactError, match="no model at"):
        Predictor(tmp_path / "absent.onnx")


def paper_scan(digit: np.ndarray, size=(200, 150), box=84, at=(100, 50)) -> Image.Image:
    """The digit as dark ink on white paper, enlarged and off-centre."""
    page = Image.new("L", size, 255)
    page.paste(Image.fromarray(255 - digit).resize((box, box), Image.BICUBIC), at)
    return page


def test_image_pipeline_inverts_crops_scales_and_centres(digits, tmp_path):
    canonical = [prepare_image(Image.fromarray(d)) for d in digits.images[:50]]
    inverted = [prepare_image(Image.fromarray(255 - d)) for d in digits.images[:50]]
    for a, b in zip(canonical, inverted, strict=True):
        # polarity detection undoes the inversion, up to one rounding step (half-to-even
        # rounds a value x.5 and its mirror 255 - x.5 one level apart)
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
    predictor = Predictor.pretrained()  # labels are judged with the packaged model
    scans = [paper_scan(d) for d in digits.images[:50]]
    want = predictor.predict(np.stack(canonical)).labels
    got = predictor.predict_images(scans).labels
    assert (got == want).sum() >= binomial_floor(50, P_AGREE)
    prepared = prepare_image(scans[0])
    ys, xs = np.nonzero(prepared)
    assert np.ptp(ys) < 20 and np.ptp(xs) < 20  # fits the 20x20 box
    com = np.array(
        [(prepared.sum(1) * np.arange(28)).sum(), (prepared.sum(0) * np.arange(28)).sum()]
    )
    assert np.abs(com / prepared.sum() - 13.5).max() <= 1.0  # centre of mass near the centre
    path = tmp_path / "scan.png"
    scans[0].convert("RGB").save(path)
    assert predictor.predict_image(path).labels[0] == got[0]


def test_bad_image_files_are_clear_errors(predictor, tmp_path):
    with pytest.raises(InputError, match="no image file at"):
        predictor.predict_image(tmp_path / "absent.png")
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(InputError, match="not a readable image"):
        predictor.predict_image(text)
    blank = tmp_path / "blank.png"
    Image.new("L", (50, 50), 255).save(blank)
    with pytest.raises(InputError, match="blank"):
        predictor.predict_image(blank)
    with pytest.raises(InputError, match="none"):
        predictor.predict_images([])


def test_transparent_png_with_dark_ink(predictor, digits, tmp_path):
    rgba = Image.new("RGBA", (28, 28), (0, 0, 0, 0))
    ink = Image.fromarray(digits.images[0])
    rgba.putalpha(ink)  # black ink whose opacity is the digit
    path = tmp_path / "ink.png"
    rgba.save(path)
    want = predictor.predict(prepare_image(Image.fromarray(digits.images[0]))).labels[0]
    assert predictor.predict_image(path).labels[0] == want


def test_one_predictor_is_thread_safe(predictor, digits):
    work = [digits.images[i : i + 1 + i % 5] for i in range(80)]
    sequential = [predictor.predict(x).probabilities for x in work]
    results: dict[int, np.ndarray] = {}

    def worker(k: int) -> None:
        for i in range(k, len(work), 4):
            results[i] = predictor.predict(work[i]).probabilities

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == list(range(len(work)))
    for i, probs in enumerate(sequential):
        np.testing.assert_array_equal(results[i], probs)


def test_predictor_works_where_torch_cannot_be_imported(exported):
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['torchvision'] = None\n"
        "import numpy as np\n"
        "from mnist_edge.edge.runtime import Predictor\n"
        "assert 'PIL' not in sys.modules, 'Pillow must be imported lazily'\n"
        f"p = Predictor({str(exported / 'mnist_cnn.onnx')!r})\n"
        "print(p.predict(np.zeros((2, 28, 28), np.uint8)).labels.shape)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "(2,)"


def test_top_k_is_sorted(predictor, digits):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        top = predictor.predict(digits.images[:3]).top(3)
    for row in top:
        probs = [p for _, p in row]
        assert probs == sorted(probs, reverse=True) and len(row) == 3
