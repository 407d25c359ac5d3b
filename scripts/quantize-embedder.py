"""Derives an int8-compute copy of the cache's embedding model.

The fetched all-MiniLM-L6-v2 ONNX file stores its weights as int8 but computes in float: each
weight is cast back to f32 before a float MatMul. This folds those casts (ONNX Runtime's basic
graph optimisations) and quantizes the MatMuls dynamically (int8 weights per output channel,
7-bit range so AVX2 machines without VNNI do not saturate), so ONNX Runtime runs them as integer
matmuls. Deterministic for the pinned tool versions; fetch-models.sh checks the result's sha256.

usage: quantize-embedder.py SOURCE.onnx DEST.onnx
"""

import logging
import os
import sys
import tempfile

import onnxruntime as ort
from onnxruntime.quantization import QuantType, quantize_dynamic


def main(src: str, dest: str) -> None:
    logging.disable(logging.WARNING)  # "consider pre-processing": not needed for MatMul-only
    with tempfile.TemporaryDirectory() as tmp:
        folded = os.path.join(tmp, "folded.onnx")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = folded
        ort.InferenceSession(src, options, providers=["CPUExecutionProvider"])
        quantize_dynamic(
            folded, dest, weight_type=QuantType.QInt8, per_channel=True, reduce_range=True
        )


if __name__ == "__main__":
    main(*sys.argv[1:])
