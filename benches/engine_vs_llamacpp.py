"""Bundled engine (mistral.rs through the gateway) against llama.cpp (llama-cpp-python) on the
same GGUF, the same thread count and the same prompts: prefill and decode tokens per second.

Run with `make bench-engine` (builds the gateway, fetches the model, installs llama-cpp-python
built for this CPU in a separate virtualenv). Prints a Markdown table.

Prefill rate = prompt tokens / time to first token; decode rate = (completion tokens - 1) /
(time from first to last token). Every run starts with a different system line so neither
engine can reuse a cached prompt prefix.
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL_DIR = os.path.join(ROOT, "models", "smollm2")
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
THREADS = int(os.environ.get("BENCH_THREADS", "2"))
RUNS = int(os.environ.get("BENCH_RUNS", "5"))
DEQUANTIZE = os.environ.get("BENCH_DEQUANTIZE", "none")
REQUANTIZE = os.environ.get("BENCH_REQUANTIZE", "auto")
# llama.cpp reads the original file unless told otherwise (e.g. the engine's requantized copy).
LLAMA_GGUF = os.environ.get("BENCH_LLAMA_GGUF", os.path.join(MODEL_DIR, GGUF))
MAX_TOKENS = 128
PARAGRAPH = (
    "The committee reviewed the quarterly figures for each of the four regional offices, "
    "compared them with the targets agreed in the spring, and asked every office to explain "
    "any shortfall larger than five percent together with a plan to recover it. "
)


def messages(run):
    return [
        {"role": "system", "content": f"Run {run}. You are a concise assistant."},
        {"role": "user", "content": PARAGRAPH * 6 + "Summarise the text above in detail."},
    ]


def free_port():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_engine(binary, max_seqs=1):
    port, admin = free_port(), free_port()
    cfg = (
        f"listen: 127.0.0.1:{port}\nadmin_listen: 127.0.0.1:{admin}\n"
        f"engine: {{model_dir: {MODEL_DIR}, gguf: {GGUF}, served_model_name: smollm2, threads: {THREADS}, max_seqs: {max_seqs}, dequantize: {DEQUANTIZE}, requantize: {REQUANTIZE}}}\n"
        "routes: [{model: smollm2, upstream: engine, reasoning: {parser: passthrough}}]\n"
    )
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(cfg)
    env = dict(os.environ, RAYON_NUM_THREADS=str(THREADS))
    proc = subprocess.Popen([binary, "serve", "--config", f.name], env=env, stderr=subprocess.DEVNULL)
    for _ in range(600):
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=1).status == 200:
                break
        except Exception:
            time.sleep(0.1)
    return proc, port


def chat(port, msgs):
    body = json.dumps({"model": "smollm2", "messages": msgs, "max_tokens": MAX_TOKENS, "temperature": 0}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", body, {"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as resp:
        return json.load(resp)["usage"]["completion_tokens"]


def aggregate_engine(binary, n):
    """Output tokens per second for n concurrent requests (prefill included), max_seqs n."""
    from concurrent.futures import ThreadPoolExecutor

    proc, port = start_engine(binary, max_seqs=n)
    try:
        chat(port, messages(1000))  # warm-up
        rates = []
        for run in range(RUNS):
            start = time.perf_counter()
            with ThreadPoolExecutor(n) as pool:
                tokens = sum(pool.map(lambda i: chat(port, messages(2000 + run * n + i)), range(n)))
            rates.append(tokens / (time.perf_counter() - start))
        return statistics.median(rates)
    finally:
        proc.terminate()
        proc.wait()


def load_llama():
    """llama.cpp on the benchmark's file with the engine's thread count."""
    from llama_cpp import Llama

    return Llama(model_path=LLAMA_GGUF, n_threads=THREADS, n_threads_batch=THREADS, n_ctx=2048, verbose=False)


def aggregate_llamacpp(n):
    """llama-cpp-python serves one sequence at a time: the same n requests one after another."""
    llm = load_llama()
    llm.create_chat_completion(messages=messages(1000), max_tokens=MAX_TOKENS, temperature=0)
    rates = []
    for run in range(RUNS):
        start = time.perf_counter()
        tokens = sum(llm.create_chat_completion(messages=messages(2000 + run * n + i), max_tokens=MAX_TOKENS,
                                                temperature=0)["usage"]["completion_tokens"] for i in range(n))
        rates.append(tokens / (time.perf_counter() - start))
    return statistics.median(rates)


def measure_engine(binary):
    proc, port = start_engine(binary)
    try:
        results = []
        for run in range(RUNS + 1):
            body = json.dumps({"model": "smollm2", "messages": messages(run), "max_tokens": MAX_TOKENS,
                               "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}).encode()
            req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", body,
                                         {"content-type": "application/json"})
            start = time.perf_counter()
            first = last = None
            usage = None
            with urllib.request.urlopen(req, timeout=600) as resp:
                for line in resp:
                    line = line.strip()
                    if not line.startswith(b"data: ") or line == b"data: [DONE]":
                        continue
                    chunk = json.loads(line[6:])
                    if chunk.get("usage"):
                        usage = chunk["usage"]
                    if any((c.get("delta") or {}).get("content") for c in chunk.get("choices", [])):
                        now = time.perf_counter()
                        first = first or now
                        last = now
            if run == 0:
                continue  # warm-up
            results.append((usage["prompt_tokens"], usage["completion_tokens"], first - start, last - first))
        return results
    finally:
        proc.terminate()
        proc.wait()


def measure_llamacpp():
    llm = load_llama()
    results = []
    for run in range(RUNS + 1):
        start = time.perf_counter()
        first = last = None
        n = 0
        for chunk in llm.create_chat_completion(messages=messages(run), max_tokens=MAX_TOKENS, temperature=0,
                                                stream=True):
            if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                now = time.perf_counter()
                first = first or now
                last = now
                n += 1
        if run == 0:
            continue
        prompt_tokens = len(llm.tokenize(format_prompt(llm, messages(run)).encode(), special=True))
        results.append((prompt_tokens, n, first - start, last - first))
    return results


def format_prompt(llm, msgs):
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    template = llm.metadata["tokenizer.chat_template"]
    fmt = Jinja2ChatFormatter(template=template, eos_token="", bos_token="")
    return fmt(messages=msgs).prompt


def rates(results):
    prefill = [p / t for p, _, t, _ in results]
    decode = [(c - 1) / d for _, c, _, d in results if d > 0]
    return statistics.median(prefill), statistics.median(decode), results[0][0], statistics.median([c for _, c, _, _ in results])


def main():
    binary = sys.argv[1]
    e = rates(measure_engine(binary))
    l = rates(measure_llamacpp())
    print(f"| engine | prompt tokens | completion tokens (median) | prefill tok/s | decode tok/s |")
    print(f"|---|---|---|---|---|")
    print(f"| bundled engine (mistral.rs 0.8.1, via gateway, dequantize: {DEQUANTIZE}, requantize: {REQUANTIZE}) | {e[2]} | {e[3]:.0f} | {e[0]:.0f} | {e[1]:.1f} |")
    print(f"| llama.cpp (llama-cpp-python 0.3.36, GGML_NATIVE, {os.path.basename(LLAMA_GGUF)}) | {l[2]} | {l[3]:.0f} | {l[0]:.0f} | {l[1]:.1f} |")
    print(f"| **ratio engine / llama.cpp** | | | **{e[0] / l[0]:.2f}×** | **{e[1] / l[1]:.2f}×** |")
    print(f"\n{THREADS} threads, {RUNS} runs after one warm-up, medians; SmolLM2-135M-Instruct Q4_1; greedy; max_tokens {MAX_TOKENS}.")
    n = int(os.environ.get("BENCH_CONCURRENCY", "0"))
    if n > 1:
        e, l = aggregate_engine(binary, n), aggregate_llamacpp(n)
        print(f"\n{n} requests at once (engine max_seqs {n}; llama-cpp-python one after another), output tokens/s "
              f"including prefill: engine {e:.1f}, llama.cpp {l:.1f}, ratio **{e / l:.2f}×**")


if __name__ == "__main__":
    main()
