"""Checkpoint -> ExecuTorch (.pte), XNNPACK-delegated: fp32, and INT8 through PT2E.

`pip install 'mnist-edge[executorch]'`. The program is `torch.export` -> `to_edge_transform_and_
lower(..., partitioner=[XnnpackPartitioner()])` -> `to_executorch()`; INT8 quantizes the exported
graph first with torchao's PT2E flow and ExecuTorch's XNNPACKQuantizer (symmetric int8,
per-channel weights), calibrated on the same training images as the ONNX INT8 model.

**The batch bound.** The batch is dynamic, 1..MAX_BATCH. A bound is needed: ExecuTorch plans the
input's memory, and XNNPACK its workspace, for the largest batch, so memory grows with the bound
(benchmarks/executorch_bound.py measures it; docs/guides/backends.md). The runner feeds larger
batches in chunks of the bound.
The example batch is the bound itself: from an example under 16, the XNNPACK partitioner in
executorch 1.5 narrows the bound to 15.

**The contract** travels inside the program: a constant method `spec.PTE_METADATA_METHOD`
returns the metadata as one JSON string. Programs are deterministic: the same checkpoint gives the
same bytes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .edge import spec
from .edge.backends.base import quiet_stderr
from .edge.data import batches
from .edge.files import atomic_write

MAX_BATCH = 64
INT8_SETTINGS = {"quantizer": "PT2E XNNPACKQuantizer", "weights": "int8 symmetric per-channel",
                 "activations": "int8"}  # fmt: skip


def _example(bound: int = MAX_BATCH) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(bound, *spec.INPUT_SHAPE)  # (64, 1, 28, 28)


def _dynamic(bound: int = MAX_BATCH) -> dict[str, Any]:
    return {"x": {0: torch.export.Dim("batch", min=1, max=bound)}}  # keyed by forward's arg


def _lower(program: torch.export.ExportedProgram, meta: dict[str, str]) -> bytes:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    for node in program.graph.nodes:  # the trace's Python stack: build-machine paths
        node.meta.pop("stack_trace", None)
    edge = to_edge_transform_and_lower(
        program, partitioner=[XnnpackPartitioner()],
        constant_methods={spec.PTE_METADATA_METHOD: json.dumps(meta, sort_keys=True)},
    )  # fmt: skip
    return bytes(edge.to_executorch().buffer)


def export_executorch(model: torch.nn.Module, meta: dict[str, str], dest: Path,
                      max_batch: int = MAX_BATCH) -> None:  # fmt: skip
    """fp32 .pte, batch 1..max_batch (benchmarks/executorch_bound.py tries others), with the
    metadata, written atomically."""
    with quiet_stderr():  # torchao's and ExecuTorch's notices
        program = torch.export.export(model.eval(), (_example(max_batch),),
                                      dynamic_shapes=_dynamic(max_batch))  # fmt: skip
        content = _lower(program, meta)
    atomic_write(dest, lambda tmp: tmp.write_bytes(content))


def int8_settings(calibration_size: int) -> dict[str, object]:
    """How the INT8 program is made, as recorded in its metadata and the manifest."""
    return {**INT8_SETTINGS, "calibration_size": calibration_size, "max_batch": MAX_BATCH}


def quantize_executorch(model: torch.nn.Module, meta: dict[str, str], dest: Path,
                        calibration: np.ndarray) -> None:  # fmt: skip
    """INT8 .pte (PT2E, XNNPACKQuantizer) calibrated on `calibration` (uint8 (N, 28, 28)
    training images), with the metadata, written atomically."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    with quiet_stderr():
        graph = torch.export.export(model.eval(), (_example(),), dynamic_shapes=_dynamic())
        quantizer = XNNPACKQuantizer().set_global(
            get_symmetric_quantization_config(is_per_channel=True)
        )
        prepared = prepare_pt2e(graph.module(), quantizer)
        with torch.no_grad():
            for batch in batches(calibration, MAX_BATCH):  # (<=64, 1, 28, 28)
                prepared(torch.from_numpy(batch))
        converted = convert_pt2e(prepared)
        program = torch.export.export(converted, (_example(),), dynamic_shapes=_dynamic())
        content = _lower(program, meta)
    atomic_write(dest, lambda tmp: tmp.write_bytes(content))
