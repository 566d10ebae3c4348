"""The edge install's code: everything that runs, judges and serves an exported model, with
numpy, onnxruntime and Pillow alone (OpenVINO when its extra is installed). Nothing in this
subpackage imports torch or onnx at import time; tests/test_import.py imports every module here
and runs predict, evaluate, bench, parity and tune where torch cannot be imported.

    spec, errors, policy, layout, files, machine   the contract, the error tree, the thresholds
    data, images                                   MNIST files; photos and scans -> 28x28
    runners, backends/                             the catalogue: backend x format x precision
    runtime                                        Predictor (built on a runner)
    evaluate, parity, bench, tune, predict         what the inference commands do
    manifest, web, emulate                         artifacts' index, the browser page, other CPUs
"""
