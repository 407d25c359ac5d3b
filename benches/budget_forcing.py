"""Budget forcing on the bundled engine: answer rate and latency at three reasoning budgets with
`on_exceed: answer`, against the same budgets with `on_exceed: error`, on the same prompts.

Usage: python3 benches/budget_forcing.py BINARY   (the gateway built with the engine feature;
`make bench-budget`). Prints a Markdown table.

The model is the default SmolLM2-135M with `start_in_reasoning: true`: it does not reason, so
everything it says counts as reasoning and no request ever closes its reasoning by itself. That
makes it a worst case for the budget: every request reaches it. An "answer" is a response with
non-empty `content` and `finish_reason: stop`. Greedy decoding (temperature 0), `max_tokens` 160.
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL_DIR = os.path.join(ROOT, "models", "smollm2")
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
THREADS = int(os.environ.get("BENCH_THREADS", "2"))
BUDGETS = [int(b) for b in os.environ.get("BENCH_BUDGETS", "16,32,64").split(",")]
PROMPTS = [
    "A train leaves at 9:40 and arrives at 11:05. How many minutes is the trip?",
    "What is 17 times 23? Explain your steps.",
    "Tom has 3 boxes of 12 pencils and gives away 9. How many pencils are left?",
    "Is 221 a prime number? Think it through.",
    "A rectangle is 7 cm wide and 12 cm long. What is its area and perimeter?",
    "If a shirt costs 40 dollars after a 20 percent discount, what was the original price?",
    "List the first five prime numbers greater than 50.",
    "How many seconds are there in three and a half hours?",
]


def free_port():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start(binary):
    port, admin = free_port(), free_port()
    routes = []
    for b in BUDGETS:
        for mode in ("answer", "error"):
            routes.append(
                f"  - {{model: {mode}-{b}, upstream: engine, upstream_model: smollm2, "
                f"reasoning: {{parser: deepseek_r1, start_in_reasoning: true, "
                f"budget: {{max_tokens: {b}, on_exceed: {mode}}}}}}}"
            )
    cfg = (
        f"listen: 127.0.0.1:{port}\nadmin_listen: 127.0.0.1:{admin}\n"
        f"engine: {{model_dir: {MODEL_DIR}, gguf: {GGUF}, served_model_name: smollm2, threads: {THREADS}, max_seqs: 1, max_context_tokens: 2048}}\n"
        "routes:\n" + "\n".join(routes) + "\n"
    )
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(cfg)
    env = dict(os.environ, RAYON_NUM_THREADS=str(THREADS))
    proc = subprocess.Popen([binary, "serve", "--config", f.name], env=env, stderr=subprocess.DEVNULL)
    for _ in range(1200):
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=1).status == 200:
                break
        except Exception:
            time.sleep(0.1)
    return proc, port


def ask(port, model, prompt):
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": prompt}],
                       "max_tokens": 160, "temperature": 0}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", body,
                                 {"content-type": "application/json"})
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=600) as resp:
            v = json.load(resp)
    except urllib.error.HTTPError as e:
        v = json.load(e)
    elapsed = time.perf_counter() - start
    choice = (v.get("choices") or [{}])[0]
    content = ((choice.get("message") or {}).get("content") or "").strip()
    finish = choice.get("finish_reason") or v.get("error", {}).get("code", "?")
    answered = bool(content) and finish == "stop"
    why = "" if answered else (finish if content or finish != "stop" else "empty")
    return answered, elapsed, (v.get("usage") or {}).get("completion_tokens"), why


def main():
    binary = sys.argv[1]
    proc, port = start(binary)
    try:
        ask(port, f"error-{BUDGETS[0]}", "warm-up")
        rows = []
        for b in BUDGETS:
            for mode in ("error", "answer"):
                results = [ask(port, f"{mode}-{b}", p) for p in PROMPTS]
                rate = sum(r[0] for r in results) / len(results)
                lat = sorted(r[1] for r in results)
                counted = [r[2] for r in results if r[2] is not None]
                tokens = f"{statistics.mean(counted):.0f}" if counted else "—"
                misses = {}
                for r in results:
                    if r[3]:
                        misses[r[3]] = misses.get(r[3], 0) + 1
                why = ", ".join(f"{k} {n}" for k, n in sorted(misses.items())) or "—"
                rows.append((b, mode, rate, statistics.median(lat), lat[-1], tokens, why))
        print(f"SmolLM2-135M Q4_1, start_in_reasoning, {len(PROMPTS)} prompts, {THREADS} threads, greedy\n")
        print("| budget | on_exceed | answer rate | latency p50 | latency max | completion tokens (mean) | no answer: finish_reason |")
        print("|---|---|---|---|---|---|---|")
        for b, mode, rate, p50, worst, tokens, why in rows:
            print(f"| {b} | {mode} | {rate:.0%} | {p50:.2f} s | {worst:.2f} s | {tokens} | {why} |")
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    main()
