"""Every threshold that decides a verdict, and every default the commands and their configs
share, in one place (numbers only). Configs take their defaults from here and the CLI shows the
same values (tests/test_cli.py holds every option's default against its config's).

Each threshold is recorded with the verdict it decided (parity reports carry their tolerances,
INT8 models and deployment profiles their rule, bench reports their regression limit), so a later
reader judges by the rule that was applied.
"""

from __future__ import annotations

# Parity of fp32 artifacts, element by element (an element passes within atol OR rtol).
# log-probabilities are O(1..30); ONNX Runtime and PyTorch sum the 61,952 products of the last
# layer in another order, which moves fp32 results by ~3e-5 here: 1e-4 keeps ~3x headroom.
ATOL = 1e-4
# lets large-magnitude outputs (far out-of-range inputs) differ in the 4th significant digit
RTOL = 1e-3

# The INT8 rule (the quantization gate and parity of an INT8 file): the accuracy may drop at
# most this many points, and at least this percent of test images keep the fp32 answer.
INT8_MAX_ACCURACY_DROP = 0.2
INT8_MIN_AGREEMENT = 99.0
# log-probability differences of INT8 files are reported against these looser tolerances
INT8_ATOL = 0.5
INT8_RTOL = 0.1
# Layerwise parity of an INT8 file: a layer passes at this SQNR (dB) or more. Its layers sit at
# ~14-19 dB here; a broken one falls far below (docs/guides/int8.md, "where an export diverges").
MIN_SQNR_DB = 10.0

# The deployment rule: what `mnist-edge tune` asks of every (backend, precision, threads) before
# it may be picked, and what parity asks of a bf16 run. Stricter than the INT8 gate: a path is
# only "fastest correct" if it keeps the model's answers.
DEPLOY_MAX_ACCURACY_DROP = 0.1
DEPLOY_MIN_AGREEMENT = 99.8

# bench: the server scenario is valid while its p99 stays under this bound (MLPerf's rule), and
# `bench --compare` calls a case a regression when its p50 rises, or its throughput falls, by
# more than this percent against the baseline.
SERVER_LATENCY_BOUND_MS = 20.0
MAX_REGRESSION_PCT = 20.0

# Images per inference call wherever mnist-edge feeds a model a set of images (predict,
# evaluate, parity, INT8 calibration, tune's gate). Peak memory grows with the batch (~1.4 MB
# an image) while throughput stops improving past ~100 images: the 10,000 test images peaked at
# 14.7 GB in one call and at 254 MB in chunks of 128, at the same images/s
# (benchmarks/results/predict_memory.json).
BATCH = 128

# How much data each check uses by default.
CALIBRATION_SIZE = 512  # training images INT8 calibration sees
TUNE_TEST_LIMIT = 2000  # test digits tune gates every case on
DOCTOR_IMAGES = 1000  # test digits the quantization doctor compares layers on

# `mnist-edge serve`: the batcher and the limits of the Open Inference Protocol server.
SERVE_MAX_BATCH = 64  # images per model call; past ~64 throughput stops rising on CPU
SERVE_MAX_DELAY_US = 500  # how long a request waits for others to join its batch
SERVE_MAX_QUEUE = 2048  # images waiting at once; beyond, 503 with Retry-After
SERVE_MAX_BODY = 16 << 20  # bytes in one request body; beyond, 413
SERVE_MAX_REQUEST_IMAGES = 1024  # images in one request
SERVE_MAX_CONNECTIONS = 512  # open connections and requests at once; beyond, 503
SERVE_TIMEOUT_S = 30.0  # a request's whole life: reading its body and waiting for its answer
SERVE_MAX_URL = 8 << 10  # bytes in a request's target (path and query); beyond, 414
SERVE_MAX_HEAD = 32 << 10  # bytes in a request line and its headers together; beyond, 431
