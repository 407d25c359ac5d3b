"""Derives an int8-compute copy of a cache embedding model.

The fetched ONNX files compute in float (all-MiniLM-L6-v2 stores its weights as int8 but casts
each back to f32 before a float MatMul; paraphrase-MiniLM-L3-v2 is plain f32). This folds those
casts (ONNX Runtime's basic graph optimisations) and quantizes the MatMuls dynamically (int8
weights per output channel, 7-bit range so AVX2 machines without VNNI do not saturate), so ONNX
Runtime runs them as integer matmuls. Deterministic for the pinned tool versions;
fetch-models.sh checks the result's sha256.

With TOKEN_OUTPUT, the model's graph outputs are replaced by that one tensor (the per-token
hidden states, `[batch, tokens, dim]`) under the name `last_hidden_state`, which the cache
mean-pools; the exported L3 model has four outputs and no such name.

usage: quantize-embedder.py SOURCE.onnx DEST.onnx [TOKEN_OUTPUT]
"""

import logging
import os
import sys
import tempfile

import onnxruntime as ort
from onnxruntime.quantization import QuantType, quantize_dynamic


def only_token_output(src: str, dest: str, name: str) -> None:
    import onnx

    model = onnx.load(src)
    shapes = {o.name: o for o in model.graph.output}
    if name not in shapes:
        sys.exit(f"{src} has no output {name!r} (outputs: {', '.join(shapes)})")
    for node in model.graph.node:
        for edges in (node.input, node.output):
            for i, edge in enumerate(edges):
                if edge == name:
                    edges[i] = "last_hidden_state"
    del model.graph.output[:]
    model.graph.output.append(
        onnx.helper.make_tensor_value_info(
            "last_hidden_state",
            onnx.TensorProto.FLOAT,
            ["batch_size", "sequence_length", shapes[name].type.tensor_type.shape.dim[2].dim_value],
        )
    )
    onnx.save(model, dest)


def main(src: str, dest: str, token_output: str = "") -> None:
    logging.disable(logging.WARNING)  # "consider pre-processing": not needed for MatMul-only
    with tempfile.TemporaryDirectory() as tmp:
        if token_output:
            single = os.path.join(tmp, "single.onnx")
            only_token_output(src, single, token_output)
            src = single
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
