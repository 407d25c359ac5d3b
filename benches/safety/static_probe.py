"""Probe: would a static embedding (microseconds per prompt) be as safe as the MiniLM model?

A static table is derived from the default model itself, nothing fetched: each of the 30 522
vocabulary pieces is run alone through paraphrase-MiniLM-L3-v2 (`[CLS] piece [SEP]`, mean-pooled),
the table is centred and each row weighted by a Zipf estimate of its piece's frequency
(a / (a + 1/rank), the vocabulary being roughly in frequency order). A prompt's vector is the
normalised sum of its pieces' rows.

Reported, on the DEVELOPMENT part only (the held-out part is dropped on reading):
1. the pair check retrained with the static cosine in place of MiniLM's (train_pair_check.py's
   own procedure, run here on a rewritten features file): same-answer hits at its wrong-hit target;
2. how often an unrelated prompt's nearest stored prompt is over the 0.85 threshold, for MiniLM
   and for the static table: 500 development prompts against 2 500 others.

Usage (a venv with onnxruntime==1.32.0, tokenizers==0.23.3, numpy):
  static_probe.py MODEL_DIR EVAL.jsonl FEATURES.jsonl TRAIN_PAIR_CHECK.py
FEATURES.jsonl is what `cache-safety EVAL.jsonl MODEL_DIR ORT FEATURES.jsonl` writes.
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

model_dir, eval_path, features_path, trainer = sys.argv[1:5]
tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
tok.no_padding()
tok.no_truncation()

source = ort.InferenceSession(os.path.join(model_dir, "paraphrase-MiniLM-L3-v2.onnx"))
token_output = "onnx::Shape_422"  # the per-token hidden states (see scripts/fetch-models.sh)
vocab = max(json.load(open(os.path.join(model_dir, "tokenizer.json")))["model"]["vocab"].values()) + 1
raw = np.zeros((vocab, 384), np.float32)
for start in range(0, vocab, 1024):
    ids = np.arange(start, min(vocab, start + 1024), dtype=np.int64)
    x = np.stack([np.full_like(ids, 101), ids, np.full_like(ids, 102)], 1)
    raw[start:start + len(ids)] = source.run([token_output], {"input_ids": x, "attention_mask": np.ones_like(x)})[0].mean(1)


def table(centre, a):
    t = raw - raw.mean(0) if centre else raw.copy()
    if a:
        t *= (a / (a + 1.0 / (np.arange(vocab) + 1.0)))[:, None]
    return t


def static(t, text):
    v = t[tok.encode(text, add_special_tokens=False).ids].sum(0)
    return v / (np.linalg.norm(v) + 1e-9)


dense_model = ort.InferenceSession(os.path.join(model_dir, "paraphrase-MiniLM-L3-v2.int8.onnx"))


def dense(text):
    ids = np.array([tok.encode(text).ids[:128]], np.int64)
    v = dense_model.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0][0].mean(0)
    return v / np.linalg.norm(v)


pairs = [json.loads(line) for line in open(eval_path)]
features = [json.loads(line) for line in open(features_path)]
assert len(pairs) == len(features)
variants = {"static, uncentred, unweighted": (False, 0.0), "static, centred, a=1e-3": (True, 1e-3)}

print("## 1. The pair check retrained on the static cosine (development part)\n")
runs = [("MiniLM (as shipped)", None)] + list(variants.items())
TABLES = {name: table(*v) for name, v in variants.items()}
for name, variant in runs:
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as out:
        for p, f in zip(pairs, features):
            if f["split"] != "dev":
                continue
            if variant is not None:
                t = TABLES[name]
                f = dict(f, x=[float(static(t, p["a"]) @ static(t, p["b"]))] + f["x"][1:])
            out.write(json.dumps(f) + "\n")
    result = subprocess.run([sys.executable, trainer, out.name], capture_output=True, text=True, check=True).stdout
    os.unlink(out.name)
    line = next(l for l in result.splitlines() if l.startswith("MIN_SCORE"))
    cosine = next(l for l in result.splitlines() if l.strip().startswith("cosine"))
    print(f"- {name}: {line}; {cosine.strip()}")

print("\n## 2. Unrelated prompts over the threshold (development part)\n")
texts = sorted({p["a"] for p in pairs if p["split"] == "dev"})
rng = np.random.default_rng(20261204)
texts = [texts[i] for i in rng.permutation(len(texts))]
queries, stored = texts[:500], texts[500:3000]
for name, embed in [("MiniLM", dense)] + [(n, (lambda t, tt=TABLES[n]: static(tt, t))) for n in variants]:
    q = np.array([embed(t) for t in queries])
    s = np.array([embed(t) for t in stored])
    top = (q @ s.T).max(1)
    print(f"- {name}: nearest of {len(stored)} over 0.85 for {np.mean(top >= 0.85) * 100:.1f} % of {len(queries)} queries "
          f"(over 0.75: {np.mean(top >= 0.75) * 100:.1f} %; median nearest {np.median(top):.3f})")
