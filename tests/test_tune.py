"""`mnist-edge tune`: every available path is gated by one rule and timed, the fastest passing
one becomes a deployment profile, and a profile only runs on the CPU it was tuned on."""

import json
import shutil

import numpy as np
import pytest
from conftest import assert_clean_error, cli

from mnist_edge.edge import runners, tune
from mnist_edge.edge.data import load_split
from mnist_edge.edge.errors import ArtifactError, ConfigError
from mnist_edge.edge.manifest import read as read_manifest
from mnist_edge.runtime import Predictor, pretrained_path


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """The packaged fp32 and INT8 models, as an exports folder holds them."""
    out = tmp_path_factory.mktemp("deploy")
    for int8 in (False, True):
        shutil.copy(pretrained_path(int8=int8), out)
    return out


@pytest.fixture(scope="module")
def report(folder, mnist_dir):
    cfg = tune.TuneConfig(str(folder / "mnist_cnn.onnx"), threads=(1, 2), test_limit=300,
                          duration=0.1)  # fmt: skip
    return tune.tune(cfg, load_split("test", mnist_dir))


@pytest.fixture(scope="module")
def profile_path(report, folder):
    """The deploy.json that `report`'s run wrote beside the models."""
    return folder / tune.PROFILE_NAME


@pytest.fixture(scope="module")
def digit_png(mnist_dir, tmp_path_factory):
    from PIL import Image

    from mnist_edge.edge.data import load_split

    path = tmp_path_factory.mktemp("digit") / "d.png"
    Image.fromarray(255 - load_split("test", mnist_dir, 1).images[0]).save(path)
    return path


def test_every_available_case_is_tried_at_every_thread_count(report):
    tried = {(t.case.name, t.threads) for t in report.trials}
    assert {("onnxruntime", 1), ("onnxruntime", 2), ("onnxruntime-int8", 1)} <= tried
    names = {t.case.name for t in report.trials} | set(report.skipped)
    assert {"onnxruntime-ort", "torchscript", "pt2"} <= set(report.skipped)  # no such files
    assert "no mnist_cnn.ort beside the model" in report.skipped["onnxruntime-ort"]
    expected = {n for n, (_, fmt, _) in runners.cases().items() if fmt in tune.TUNED_FORMATS}
    assert names == expected  # each case either tried or said why not


def test_the_winner_passed_the_rule_and_is_the_fastest(report):
    best = report.best
    assert best is not None and best.passed
    passing = [t for t in report.trials if t.passed]
    assert best.p50_ms == min(t.p50_ms for t in passing)
    for t in report.trials:  # one rule for all
        assert t.passed == report.rule.passes(t.reference_accuracy, t.accuracy,
                                              t.argmax_agreement)  # fmt: skip
        assert t.peak_rss_mb > 0 and t.images_per_s > 0 and t.p50_ms <= t.p90_ms


def test_the_profile_is_written_listed_and_used(report, folder, profile_path, digit_png):
    profile = json.loads(profile_path.read_text())
    best = report.best
    assert (profile["backend"], profile["precision"], profile["threads"]) == (
        best.case.backend, best.case.precision, best.threads)  # fmt: skip
    assert profile["machine"]["cpu_flags"] is not None
    assert profile["model"] == best.case.path.split("/")[-1]  # beside the profile
    assert read_manifest(folder)["profiles"][tune.PROFILE_NAME]["backend"] == best.case.backend
    p = Predictor.from_profile(profile_path)
    assert (p.backend, p.precision, p.runner.threads) == (best.case.backend, best.case.precision,
                                                          best.threads)  # fmt: skip
    r = cli("predict", digit_png, "--profile", profile_path)
    assert r.exit_code == 0 and f"profile {profile_path}" in r.stderr, r.output
    assert_clean_error(cli("predict", digit_png, "--profile", profile_path,
                           "--backend", "onnxruntime"), "--profile names")  # fmt: skip


def test_a_profile_from_a_cpu_with_other_flags_is_refused(
    folder, profile_path, digit_png, tmp_path
):
    profile = json.loads(profile_path.read_text())
    profile["machine"]["cpu_flags"] = [*profile["machine"]["cpu_flags"], "amx_int8"]
    other = tmp_path / "deploy.json"
    shutil.copy(folder / profile["model"], tmp_path / profile["model"])
    other.write_text(json.dumps(profile))
    with pytest.raises(ConfigError, match="tuned on a CPU with other flags.*run `mnist-edge tune`"):
        Predictor.from_profile(other)
    assert_clean_error(cli("predict", digit_png, "--profile", other), "other flags")


def test_a_profile_whose_model_changed_or_is_not_one_is_refused(profile_path, tmp_path):
    profile = json.loads(profile_path.read_text())
    (tmp_path / "deploy.json").write_text(json.dumps(profile))
    (tmp_path / profile["model"]).write_bytes(b"another model")
    with pytest.raises(ArtifactError, match="missing or changed since it was tuned"):
        Predictor.from_profile(tmp_path / "deploy.json")
    (tmp_path / "junk.json").write_text("{}")
    with pytest.raises(ArtifactError, match="not a deployment profile"):
        Predictor.from_profile(tmp_path / "junk.json")


def bad_precisions(fmt):
    return ("fp32",)


def bad_load(path, fmt, precision, threads):
    """A backend that answers wrong: the tuner must gate it out however fast it is."""
    return runners.Runner(path, fmt, lambda x: np.zeros((len(x), 10), np.float32))


@pytest.fixture
def fast_wrong(monkeypatch):
    import sys

    module = type(sys)("fast_wrong")
    module.precisions, module.load = bad_precisions, bad_load
    monkeypatch.setitem(sys.modules, "fast_wrong", module)
    case = {"fast-wrong": ("onnx", "fp32")}
    runners.register(runners.Backend("fast-wrong", "fast_wrong", ("onnx",), case, "numpy"))
    yield
    runners.unregister("fast-wrong")


def test_a_fast_wrong_backend_fails_the_gate_and_is_not_picked(folder, mnist_dir, tmp_path,
                                                                fast_wrong):  # fmt: skip
    cfg = tune.TuneConfig(
        str(folder / "mnist_cnn.onnx"),
        threads=(1,),
        test_limit=200,
        duration=0.05,
        profile=str(tmp_path / "d.json"),
    )
    r = tune.tune(cfg, load_split("test", mnist_dir))
    wrong = next(t for t in r.trials if t.case.name == "fast-wrong")
    assert not wrong.passed and r.best.case.name != "fast-wrong"
    assert r.ranked()[-1].case.name == "fast-wrong"  # failing cases rank last


def test_cli_writes_json_and_exits_1_when_nothing_passes(folder, mnist_dir, tmp_path, fast_wrong):
    args = ["tune", "--model", folder / "mnist_cnn.onnx", "--threads", 1, "--test-limit", 100,
            "--duration", 0.05, "--data-dir", mnist_dir]  # fmt: skip
    r = cli(*args, "--profile", tmp_path / "d.json", "--json", tmp_path / "t.json")
    assert r.exit_code == 0, r.output
    assert "best:" in r.output and "not tried: onnxruntime-ort" in r.output
    assert json.loads((tmp_path / "t.json").read_text())["passed"] is True
    assert_clean_error(cli(*args, "--min-agreement", 100.5), "agreement")
    none = cli(*args, "--backends", "fast-wrong", "--profile", tmp_path / "none.json")
    assert none.exit_code == 1 and "no backend, precision and thread count" in none.stderr
    assert not (tmp_path / "none.json").exists()


@pytest.mark.parametrize("kw, message", [({"objective": "size"}, "objective"),
                                         ({"threads": (0,)}, "thread"),
                                         ({"backends": ("tvm",)}, "unknown backend")])  # fmt: skip
def test_bad_settings(kw, message):
    with pytest.raises(ConfigError, match=message):
        tune.TuneConfig(**kw)


def test_a_bad_model_is_named_before_the_data_is_looked_for(tmp_path, monkeypatch):
    """A junk --model on a machine without MNIST: the error is about the model, not the data."""
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00not a model")
    monkeypatch.delenv("MNIST_EDGE_DATA", raising=False)
    r = cli("tune", "--model", junk, "--data-dir", tmp_path / "nowhere")
    assert_clean_error(r, "junk.onnx is not a loadable ONNX model")
