"""Proxy overhead side by side, in one run, on loopback: the scripted upstream directly, nginx as a
plain reverse proxy, the gateway with observability only (parser `passthrough`), the gateway with
the reasoning parser and metrics (`deepseek_r1`), the same with the reasoning cache on (every
request asks another question, so every lookup is a miss: embedding, search, guard, insert), and
LiteLLM proxy when installed.

Usage: compare.py TARGET_DIR OUT.md [SECONDS] [RATES] [--ceiling]   (run by `make bench-proxy`)

With --ceiling, each target instead climbs a rate ladder (4 s per step) and the table reports the
highest rate at which every request succeeded with p99 under 10 ms. LiteLLM runs last in both
modes, at its own rates (RG_BENCH_LITELLM_RATES, default 25,50,100,200; ladder 10…400), and is
left to work off its backlog between runs, so it cannot skew the other targets' figures.

For every target and rate an open-loop fixed-rate run (benches/src/bin/loadgen.rs) measures
latency and time to first byte; the proxy's CPU seconds and peak RSS come from /proc. Results
are written as a Markdown section with ratios to the direct and nginx figures.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

TARGET = sys.argv[1]
OUT = sys.argv[2]
SECONDS = float(sys.argv[3]) if len(sys.argv) > 3 else 10
RATES = [int(r) for r in (sys.argv[4] if len(sys.argv) > 4 else "500,1000,2000").split(",")]
CEILING = "--ceiling" in sys.argv
LADDER = [250, 500, 1000, 1500, 2000, 3000, 4000, 6000]
LITELLM_RATES = [int(r) for r in os.environ.get("RG_BENCH_LITELLM_RATES", "25,50,100,200").split(",")]
LITELLM_LADDER = [10, 25, 50, 100, 200, 400]
BIN = lambda name: os.path.join(TARGET, "release", name)  # noqa: E731
TMP = tempfile.mkdtemp(prefix="rg-bench-")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, timeout=120):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"port {port} never opened")


def cpu_seconds(pids):
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except OSError:
            pass
    return total


def peak_rss_mb(pids):
    total = 0
    for pid in pids:
        try:
            for line in open(f"/proc/{pid}/status"):
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def children(pid):
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out]


def loadgen(url, rate, stream, model="bench"):
    out = subprocess.run([BIN("loadgen"), url, str(rate), str(SECONDS), "stream" if stream else "json", model],
                         capture_output=True, text=True, timeout=SECONDS + 60)
    return json.loads(out.stdout.strip().splitlines()[-1])


def start(cmd, port, env=None, cwd=None):
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=cwd)
    wait_port(port)
    return p


def main():
    procs = []
    try:
        run(procs)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def run(procs):
    up_port = free_port()
    procs.append(start([BIN("bench-upstream"), str(up_port), "64", "0"], up_port))
    targets = [("direct", f"http://127.0.0.1:{up_port}/v1/chat/completions", None)]

    if shutil.which("nginx"):
        port = free_port()
        conf = os.path.join(TMP, "nginx.conf")
        open(conf, "w").write(f"""worker_processes 2; pid {TMP}/nginx.pid; error_log {TMP}/nginx.err warn;
events {{ worker_connections 8192; }}
http {{ access_log off; upstream up {{ server 127.0.0.1:{up_port}; keepalive 512; }}
  server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://up; proxy_http_version 1.1;
    proxy_set_header Connection ""; proxy_buffering off; }} }} }}
""")
        procs.append(start(["nginx", "-c", conf, "-g", "daemon off;"], port))
        targets.append(("nginx", f"http://127.0.0.1:{port}/v1/chat/completions", procs[-1]))

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cache_cfg = (f"cache: {{model_dir: {repo}/models/minilm, onnxruntime: {repo}/models/onnxruntime/libonnxruntime.so}}\n")
    for name, parser, cache in [("gateway (observability only)", "passthrough", False),
                                ("gateway (parser + metrics)", "deepseek_r1", False),
                                ("gateway (parser + metrics + cache miss)", "deepseek_r1", True)]:
        port, admin = free_port(), free_port()
        cfg = os.path.join(TMP, f"gw-{parser}-{cache}.yaml")
        route_cache = ", cache: {}" if cache else ""
        open(cfg, "w").write(f"listen: 127.0.0.1:{port}\nadmin_listen: 127.0.0.1:{admin}\nthreads: 2\n"
                             + os.environ.get("RG_BENCH_GATEWAY_EXTRA", "")
                             + (cache_cfg if cache else "")
                             + f"upstreams: [{{name: up, endpoints: ['127.0.0.1:{up_port}']}}]\n"
                             f"routes: [{{model: bench, upstream: up, reasoning: {{parser: {parser}}}{route_cache}}}]\n")
        env = dict(os.environ, RUST_LOG="warn")
        procs.append(start([BIN("reasoning-gateway"), "serve", "--config", cfg], port, env=env))
        targets.append((name, f"http://127.0.0.1:{port}/v1/chat/completions", procs[-1]))

    litellm = os.path.join(os.path.dirname(sys.executable), "litellm")
    if os.path.exists(litellm):
        port = free_port()
        cfg = os.path.join(TMP, "litellm.yaml")
        open(cfg, "w").write(f"""model_list:
  - model_name: bench
    litellm_params: {{model: openai/bench, api_base: "http://127.0.0.1:{up_port}/v1", api_key: "none"}}
litellm_settings: {{telemetry: false, drop_params: true}}
# Loopback-only benchmark: no key, so the load generator measures the proxy, not auth.
general_settings: {{dangerously_permit_weak_or_unset_master_key: true}}
""")
        env = dict(os.environ, LITELLM_LOG="ERROR", LITELLM_TELEMETRY="False", NO_PROXY="127.0.0.1,localhost")
        procs.append(start([litellm, "--config", cfg, "--port", str(port), "--host", "127.0.0.1", "--num_workers", "1"], port, env=env))
        targets.append(("LiteLLM proxy", f"http://127.0.0.1:{port}/v1/chat/completions", procs[-1]))

    only = os.environ.get("RG_BENCH_ONLY")
    if only:
        targets = [t for t in targets if t[0] == "direct" or any(o in t[0] for o in only.split(","))]
    # LiteLLM tops out two orders of magnitude lower, and its backlog keeps burning CPU after a
    # run it cannot keep up with, which would skew every later run on the shared cores: it runs
    # last, at its own rates, with direct beside it for reference.
    slow = [t for t in targets if t[0] == "LiteLLM proxy"]
    targets = [t for t in targets if t[0] != "LiteLLM proxy"]
    if CEILING:
        return ceiling(targets, slow)
    rows = measure(targets, RATES)
    text = table(rows, RATES)
    if slow:
        slow_rows = measure(targets[:1] + slow, LITELLM_RATES, drain=True)
        text += ("\nLiteLLM, last and at its own rates (same upstream, same load generator):\n\n"
                 + table(slow_rows, LITELLM_RATES))
    open(OUT, "w").write(text)
    print(f"wrote {OUT}")


def measure(targets, rates, drain=False):
    rows = []
    for stream in (False, True):
        for rate in rates:
            for name, url, proc in targets:
                pids = [] if proc is None else [proc.pid] + children(proc.pid)
                before = cpu_seconds(pids)
                r = loadgen(url, rate, stream)
                r["cpu_s_per_1k"] = (cpu_seconds(pids) - before) / max(1, r["sent"]) * 1000 if pids else None
                r["rss_mb"] = peak_rss_mb(pids) if pids else None
                r.update(target=name, rate=rate, stream=stream)
                rows.append(r)
                print(json.dumps(r), flush=True)
                if drain:
                    settle(proc)
    return rows


def table(rows, rates):
    lines = ["| mode | rate (req/s) | target | ok / sent | p50 ms | p99 ms | TTFB p99 ms | added p50 ms | added p99 ms | p99 vs nginx | CPU s / 1k req | peak RSS MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for stream in (False, True):
        for rate in rates:
            group = [r for r in rows if r["stream"] == stream and r["rate"] == rate]
            direct = next(r for r in group if r["target"] == "direct")
            nginx = next((r for r in group if r["target"] == "nginx"), None)
            for r in group:
                added50 = (r["p50_us"] - direct["p50_us"]) / 1000
                added99 = (r["p99_us"] - direct["p99_us"]) / 1000
                vs_nginx = f"{r['p99_us'] / nginx['p99_us']:.2f}×" if nginx and nginx["p99_us"] else "-"
                cpu = f"{r['cpu_s_per_1k']:.3f}" if r["cpu_s_per_1k"] is not None else "-"
                rss = f"{r['rss_mb']:.0f}" if r["rss_mb"] is not None else "-"
                lines.append(f"| {'stream' if stream else 'json'} | {rate} | {r['target']} | {r['ok']} / {r['sent']} | "
                             f"{r['p50_us'] / 1000:.2f} | {r['p99_us'] / 1000:.2f} | {r['ttfb_p99_us'] / 1000:.2f} | "
                             f"{added50:.2f} | {added99:.2f} | {vs_nginx} | {cpu} | {rss} |")
    return "\n".join(lines) + "\n"


def settle(proc, limit=60.0):
    """Waits (bounded) until a target has worked off its backlog: its CPU use per half second
    falls under 5 %."""
    if proc is None:
        return
    pids = [proc.pid] + children(proc.pid)
    deadline = time.monotonic() + limit
    last = cpu_seconds(pids)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = cpu_seconds(pids)
        if now - last < 0.025:
            return
        last = now


def ceiling(targets, slow):
    global SECONDS
    SECONDS = 4
    best = {}
    for group, ladder in ((targets, LADDER), (slow, LITELLM_LADDER)):
        for stream in (False, True):
            for name, url, proc in group:
                best[(stream, name)] = (0, None)
                for rate in ladder:
                    r = loadgen(url, rate, stream)
                    print(json.dumps(dict(r, target=name, rate=rate, stream=stream)), flush=True)
                    if r["errors"] or r["p99_us"] >= 10_000:
                        break
                    best[(stream, name)] = (rate, r["p99_us"] / 1000)
                settle(proc)
    lines = ["| mode | target | max req/s with p99 < 10 ms and no errors | p99 ms there | vs nginx |", "|---|---|---|---|---|"]
    for stream in (False, True):
        nginx = best.get((stream, "nginx"), (0, None))[0]
        for (s, name), (rate, p99) in best.items():
            if s != stream:
                continue
            ratio = f"{rate / nginx:.2f}×" if nginx else "-"
            p99s = f"{p99:.2f}" if p99 is not None else "-"
            lines.append(f"| {'stream' if stream else 'json'} | {name} | {rate} | {p99s} | {ratio} |")
    open(OUT, "w").write("\n".join(lines) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
