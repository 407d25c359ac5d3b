"""Learns the pair check's score (`cache/src/pair.rs`: WEIGHTS, BIAS, MIN_SCORE) from the
DEVELOPMENT part of the labelled pairs only. The held-out part is dropped on reading and never
looked at here.

Input: the features `cache-safety EVAL.jsonl MODEL_DIR ORT FEATURES.jsonl` writes (the Rust
code's own feature values, so training and serving cannot disagree).

Model: L2-regularised logistic regression on the pairs the score actually decides (quantities
match, not a surface repeat, cosine at or above the default threshold), trained by full-batch
gradient descent from zero (deterministic). MIN_SCORE: the lowest score whose wrong-hit rate over
all development different-answer pairs is at most TARGET_WRONG, surface repeats included.

Usage: train_pair_check.py FEATURES.jsonl
"""
import json
import sys

import numpy as np

THRESHOLD = 0.85
TARGET_WRONG = 0.015
L2 = 1e-2
STEPS = 4000
RATE = 0.5
NAMES = ["cosine", "content_edits/n", "short_edits/n", "typo", "blocks", "reordered", "single_small_edit", "wrapped"]

rows = [json.loads(line) for line in open(sys.argv[1])]
rows = [r for r in rows if r["split"] == "dev"]
X = np.array([r["x"] for r in rows], dtype=np.float64)
y = np.array([r["same"] for r in rows], dtype=np.float64)
quantities = np.array([r["quantities_match"] for r in rows])
surface = np.array([r["surface"] for r in rows])
decided = quantities & ~surface & (X[:, 0] >= THRESHOLD)

mu = X[decided].mean(0)
sd = X[decided].std(0)
sd[sd == 0] = 1.0
Z = (X[decided] - mu) / sd
w = np.zeros(Z.shape[1])
b = 0.0
for _ in range(STEPS):
    p = 1 / (1 + np.exp(-(Z @ w + b)))
    w -= RATE * (Z.T @ (p - y[decided]) / len(Z) + L2 * w)
    b -= RATE * (p - y[decided]).mean()
# Fold the standardisation into the coefficients: score = sigmoid(BIAS + WEIGHTS . x).
weights = w / sd
bias = b - (w * mu / sd).sum()
score = 1 / (1 + np.exp(-(X @ weights + bias)))

surface_hit = quantities & surface & (X[:, 0] >= 0.5)
best = None
for t in np.round(np.arange(0.30, 0.951, 0.005), 3):
    served = surface_hit | (decided & (score >= t))
    wrong = served[y == 0].mean()
    hits = served[y == 1].mean()
    if wrong <= TARGET_WRONG and (best is None or hits > best[1]):
        best = (t, hits, wrong)
if best is None:
    sys.exit("no score threshold reaches the wrong-hit target on the development part")

print(f"development pairs: {len(rows)}, decided by the score: {int(decided.sum())}")
for n, v in zip(NAMES, w):
    print(f"  {n:18} standardised coefficient {v:+.3f}")
print(f"MIN_SCORE {best[0]}: development wrong hits {100 * best[2]:.1f} %, same-answer hits {100 * best[1]:.1f} %\n")
print("const WEIGHTS: [f32; FEATURES] = [" + ", ".join(f"{v:.5}" for v in weights) + "];")
print(f"const BIAS: f32 = {bias:.5};")
print(f"pub const MIN_SCORE: f32 = {best[0]};")
