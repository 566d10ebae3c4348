"""The edge install's code: everything that runs, judges and serves an exported model, with
numpy, onnxruntime and Pillow alone (OpenVINO, LiteRT when their extras are installed). Nothing in
this subpackage imports torch or onnx, with one exception that runs only when its backend does:
ExecuTorch's Python runtime is built on torch (backends/executorch; a device runs .pte files in
ExecuTorch's C++ runtime instead). tests/test_import.py imports every module here and runs
predict, evaluate, bench, parity and tune where torch cannot be imported.

Floors, bottom up. A module imports only from lower modules of its own floor and from the
floors below (tests/test_floors.py reads every import, function-level ones too, and fails on
a loop or an upward import); function-level imports are only for optional or heavy packages
(openvino, ray, Pillow, the quantizer).

    core       spec, errors, policy     the contract, the error tree, every threshold/default
               layout                   the one Format table; where each file of a model lives
               files, machine, threads  atomic writes; CPU facts; every pool a command starts
               phases, timing, metrics  progress marks; the timing loop; judging answers
               profile, data, manifest  deploy.json; MNIST, read once; the artifacts' index
    engines    backends/base            the Runner and the checks every engine shares
               backends/onnxruntime, backends/openvino, backends/executorch, backends/litert
                                        one module per engine, owning its sessions
               runners                  the catalogue: backend x format x precision
    predictor  images, runtime          photos and scans -> 28x28; Predictor on one runner
    tasks      evaluate, parity, bench, tune, predict, web
                                        data in as values, results out, nothing printed
               protocol, batching, serve
                                        the Open Inference Protocol server
               cluster                  the same on Ray: Ray Data batches, Ray Serve (ray extra)
               triton                   a Triton model repository of the exported models

Above this subpackage: the training floor (model, checkpoint, augment, train, executorch_export,
litert_export, export, quantize, doctor, layers, torch_backend) and the top (render, options,
workflow, cli). Development tools (the browser driver, QEMU) live in tests/devtools/, outside the
wheel.
"""
