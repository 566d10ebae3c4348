"""The gRPC messages of the inference protocol, generated from Triton's published proto files
(grpc_service.proto and model_config.proto, kept here as published; the Open Inference
Protocol's open_inference_grpc.proto is a subset of grpc_service.proto, with the same field
numbers, which tests/test_grpc.py checks). `make grpc-stubs` regenerates them (regenerate.py).

They live in a descriptor pool of their own: an application may also import tritonclient's
modules, which register the same `inference.*` names in protobuf's default pool."""

from google.protobuf import descriptor_pool

POOL = descriptor_pool.DescriptorPool()
