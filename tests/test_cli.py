import json
import re

import pytest
from conftest import assert_clean_error
from conftest import cli as run

from mnist_edge import checkpoint as ckpt_io
from mnist_edge.cli import app

COMMANDS = {"train", "evaluate", "export", "quantize", "parity", "predict", "bench", "tune",
            "serve"}  # fmt: skip


def test_help_lists_every_command():
    result = run("--help")
    assert result.exit_code == 0
    registered = {c.name for c in app.registered_commands}
    assert registered == COMMANDS  # a new command must be added here (the docs' CLI reference
    # is generated from the app)
    for command in COMMANDS:
        assert re.search(rf"│ {command} ", result.output), command
        sub = run(command, "--help")
        assert sub.exit_code == 0 and "Usage:" in sub.output, command


def test_train_accepts_the_original_flag_spellings(mnist_dir, tmp_path):
    result = run(
        "train", "--epochs", 1, "--batch_size", 32, "--learning_rate", 0.002, "--limit", 256,
        "--test-limit", 100, "--data-dir", mnist_dir, "--output-dir", tmp_path, "--threads", 2,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert re.search(r"epoch 1/1 .*test accuracy \d+\.\d\d%", result.output)
    assert f"checkpoint {tmp_path / 'mnist_cnn.pt'}" in result.output
    cfg = ckpt_io.load(tmp_path / "mnist_cnn.pt").train_config
    assert (cfg["batch_size"], cfg["learning_rate"]) == (32, 0.002)


def test_evaluate_prints_accuracy_and_writes_json(trained, mnist_dir, tmp_path):
    out = tmp_path / "eval.json"
    result = run(
        "evaluate", "--checkpoint", trained, "--data-dir", mnist_dir, "--test-limit", 1000,
        "--json", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    match = re.search(r"accuracy (\d+\.\d\d)% \((\d+)/1000", result.output)
    assert match, result.output
    report = json.loads(out.read_text())
    assert f"{report['accuracy']:.2f}" == match.group(1)
    assert int(match.group(2)) == sum(report["confusion"][i][i] for i in range(10))
    assert sum(map(sum, report["confusion"])) == report["n"] == 1000
    assert len(report["per_class_accuracy"]) == 10
    assert "confusion matrix" in result.output


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["train", "--epochs", "0"], "epochs must be at least 1"),
        (["train", "--learning-rate", "-1"], "learning rate must be a positive"),
        (["train", "--batch-size", "0"], "batch size must be at least 1"),
        (["evaluate", "--checkpoint", "/nonexistent/mnist_cnn.pt"], "no checkpoint at"),
    ],
)
def test_bad_input_gets_one_clean_line(args, fragment):
    assert_clean_error(run(*args), fragment)


def test_data_dir_without_mnist_is_a_clean_error(trained, tmp_path):
    assert_clean_error(run("evaluate", "--checkpoint", trained, "--data-dir", tmp_path), "no MNIST")


def test_corrupt_checkpoint_is_a_clean_error(tmp_path):
    bad = tmp_path / "mnist_cnn.pt"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    assert_clean_error(run("evaluate", "--checkpoint", bad), "not a readable checkpoint")


def test_unwritable_output_dir_is_a_clean_error(mnist_dir, tmp_path):
    (tmp_path / "file").write_text("")
    result = run("train", "--data-dir", mnist_dir, "--output-dir", tmp_path / "file" / "out")
    assert_clean_error(result, "cannot write to the output folder")


def test_limit_larger_than_data_is_a_clean_error(mnist_dir, tmp_path):
    result = run("train", "--data-dir", mnist_dir, "--output-dir", tmp_path, "--limit", 10**8)
    assert_clean_error(result, "larger than")
    assert not (tmp_path / "mnist_cnn.pt").exists()


def test_export_all_runs_parity_and_records_it(trained, mnist_dir, tmp_path):
    report = tmp_path / "parity.json"
    result = run(
        "export", "--format", "all", "--checkpoint", trained, "--output-dir", tmp_path,
        "--data-dir", mnist_dir, "--test-limit", 300, "--json", report,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    # `all`: every format whose converter this install has (make test installs them all)
    from mnist_edge.edge.layout import FILENAMES, exportable

    assert f"parity passed for {len(exportable())} artifact(s)" in result.output
    manifest = json.loads((tmp_path / "manifest.json").read_text())["artifacts"]
    assert set(manifest) == {FILENAMES[f] for f in exportable()}
    assert {"onnx", "torchscript", "pt2", "ort"} <= set(exportable())
    for entry in manifest.values():
        assert entry["parity"]["passed"] is True
        assert entry["parity"]["decisive_agreement"] == 100.0
    assert json.loads(report.read_text())["passed"] is True
    # `all` includes the web page exactly when onnxruntime-web is installed locally (make test
    # installs it), built from the ONNX just exported
    from mnist_edge.edge import web
    from mnist_edge.edge.files import sha256

    page = tmp_path / "web" / "model.json"
    assert page.is_file() == (web.find_ort_web() is not None), result.output
    if page.is_file():
        model = json.loads(page.read_text())["models"]["fp32"]
        assert model["sha256"] == sha256(tmp_path / "mnist_cnn.onnx")
    # parity with no artifact named: every artifact in the manifest
    again = run(
        "parity", "--checkpoint", trained, "--output-dir", tmp_path, "--data-dir", mnist_dir,
        "--test-limit", 100,
    )  # fmt: skip
    assert again.exit_code == 0, again.output
    assert again.output.count("PASS") == len(exportable())


def test_parity_fails_with_exit_1_naming_the_artifact(trained, exported, mnist_dir, tmp_path):
    import onnx

    model = onnx.load(str(exported / "mnist_cnn.onnx"))
    next(n for n in model.graph.node if n.op_type == "LogSoftmax").op_type = "Softmax"
    bad = tmp_path / "softmax.onnx"
    onnx.save(model, str(bad))
    result = run(
        "parity", bad, exported / "mnist_cnn.pt2", "--checkpoint", trained,
        "--data-dir", mnist_dir, "--test-limit", 100,
    )  # fmt: skip
    assert result.exit_code == 1
    assert f"parity FAILED for {bad}" in result.stderr
    assert "mnist_cnn.pt2" not in result.stderr  # the good one is not blamed


def test_export_bad_inputs_are_clean_errors(trained, tmp_path):
    assert_clean_error(run("export", "--format", "tflite", "--checkpoint", trained), "tflite")
    assert_clean_error(
        run("export", "--checkpoint", tmp_path / "none.pt", "--output-dir", tmp_path),
        "no checkpoint at",
    )
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    assert_clean_error(
        run("parity", tmp_path / "junk.onnx", "--checkpoint", trained), "not a loadable ONNX"
    )
    assert_clean_error(
        run("parity", "--checkpoint", trained, "--output-dir", tmp_path), "no artifacts to check"
    )


def test_predict_prints_one_line_per_file(exported, mnist_dir, tmp_path):
    from PIL import Image

    from mnist_edge.edge.data import load_split

    digits = load_split("test", mnist_dir, 2)
    files = []
    for i, d in enumerate(digits.images):
        files.append(tmp_path / f"digit{i}.png")
        Image.fromarray(255 - d).save(files[-1])  # dark ink on white, as a user would draw
    model = exported / "mnist_cnn.onnx"
    result = run("predict", *files, "--model", model, "--top", 3)
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2
    for path, line in zip(files, lines, strict=True):
        assert re.fullmatch(rf"{re.escape(str(path))}  \d  \d+\.\d%  \(\d .*%  \d .*%\)", line)
    as_json = run("predict", *files, "--model", model, "--json")
    rows = json.loads(as_json.stdout)
    assert [r["file"] for r in rows] == [str(f) for f in files]
    assert all(0 <= r["label"] <= 9 and 0 < r["confidence"] <= 1 for r in rows)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    mixed = run("predict", files[0], text, "--model", model)
    assert mixed.exit_code == 1  # some files failed: 1; every file failed: 2
    assert_clean_error(run("predict", text, "--model", model), "not a readable image")
    assert str(files[0]) in mixed.stdout and "not a readable image" in mixed.stderr


def test_predict_without_a_model_is_a_clean_error(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    result = run("predict", tmp_path / "a.png", "--model", tmp_path / "none.onnx")
    assert_clean_error(result, "no model at")


# Each command's option -> the config field that holds its default (same name unless given).
CONFIG_DEFAULTS = {
    "train": ("mnist_edge.train:TrainConfig", {}),
    "quantize": ("mnist_edge.quantize:QuantConfig", {"min_agreement": "min_argmax_agreement"}),
    "export": ("mnist_edge.quantize:QuantConfig", {"min_agreement": "min_argmax_agreement"}),
    "tune": ("mnist_edge.edge.tune:TuneConfig", {"min_agreement": "min_argmax_agreement"}),
    "bench": ("mnist_edge.edge.bench:BenchConfig", {"idle_gap": "idle_gap_s"}),
    "parity": ("mnist_edge.edge.parity:VerifyConfig", {}),
    "predict": ("mnist_edge.edge.predict:PredictConfig", {}),
}


@pytest.mark.parametrize("command", sorted(CONFIG_DEFAULTS))
def test_option_defaults_are_the_configs_own(command):
    """A default is written once: every option that sets a config field shows that field's
    default (both read edge/policy.py), so the CLI and a library caller get the same run."""
    import dataclasses
    import importlib

    import typer

    where, renames = CONFIG_DEFAULTS[command]
    module, name = where.split(":")
    config = getattr(importlib.import_module(module), name)
    fields = {f.name: f.default for f in dataclasses.fields(config)
              if f.default is not dataclasses.MISSING}  # fmt: skip
    params = typer.main.get_command(app).commands[command].params
    compared = 0
    for p in params:
        field = renames.get(p.name, p.name)
        if (
            field not in fields
            or p.default is None
            or p.name in ("data_dir", "output_dir", "model", "checkpoint")
        ):
            continue
        want = fields[field]
        if isinstance(want, tuple) and isinstance(p.default, str):  # "1,8,64" for (1, 8, 64)
            want = ",".join(str(v) for v in want)
        assert p.default == want, f"{command} --{p.name}: {p.default!r} vs {name}.{field} {want!r}"
        compared += 1
    assert compared >= 1, f"{command}: no option matched a field of {name}"


def test_min_sqnr_default_is_the_policys():
    import typer

    from mnist_edge.edge import policy

    params = {p.name: p for p in typer.main.get_command(app).commands["parity"].params}
    assert params["min_sqnr"].default == policy.MIN_SQNR_DB


def test_export_all_leaves_out_a_format_whose_converter_is_missing(trained, mnist_dir, tmp_path,
                                                                   monkeypatch):  # fmt: skip
    """Without the executorch and litert-export extras, `all` writes the rest and says, on
    stderr, what it left out and which extra brings it; naming the format is one error line."""
    import sys

    for name in ("executorch", "litert_torch"):
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed
    result = run("export", "--format", "all", "--checkpoint", trained, "--output-dir", tmp_path,
                 "--no-parity")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "left out executorch" in result.stderr and "mnist-edge[executorch]" in result.stderr
    assert "left out litert" in result.stderr and "mnist-edge[litert-export]" in result.stderr
    assert not list(tmp_path.glob("*.pte")) and not list(tmp_path.glob("*.tflite"))
    assert (tmp_path / "mnist_cnn.onnx").is_file()
    for fmt, extra in (("executorch", "executorch"), ("litert", "litert-export")):
        out = tmp_path / fmt
        named = run("export", "--format", f"onnx,{fmt}", "--checkpoint", trained,
                    "--output-dir", out, "--no-parity")  # fmt: skip
        assert_clean_error(named, f"pip install 'mnist-edge[{extra}]'")
        assert not out.exists() or not list(out.iterdir())  # refused before writing anything
