"""Renders the key dashboard panels from a Prometheus to one PNG (docs/dashboard.png).

Usage: render_panels.py PROMETHEUS_URL OUT.png   (needs matplotlib)
The dashboards' figures, evaluated once over everything the gateway counted so far (cumulative
counters and histograms, so a short test workload still gives a picture).
"""
import json
import sys
import urllib.parse
import urllib.request

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

base, out = sys.argv[1], sys.argv[2]


def query(expr):
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    data = json.load(urllib.request.urlopen(url, timeout=10))["data"]["result"]
    return [(r["metric"], float(r["value"][1])) for r in data]


def q(metric, quant, by):
    return f"histogram_quantile({quant}, sum by (le, {by}) ({metric}_bucket))"


panels = [
    ("Request latency p50 / p95 by route (s)", [
        ("p50", q("reasoning_gateway_request_duration_seconds", 0.5, "route"), "route"),
        ("p95", q("reasoning_gateway_request_duration_seconds", 0.95, "route"), "route"),
    ]),
    ("Reasoning vs answer tokens, mean per response", [
        ("reasoning", f"sum by (route) (reasoning_gateway_reasoning_tokens_sum) / sum by (route) (reasoning_gateway_reasoning_tokens_count)", "route"),
        ("answer", f"sum by (route) (reasoning_gateway_answer_tokens_sum) / sum by (route) (reasoning_gateway_answer_tokens_count)", "route"),
    ]),
    ("Verification failures by check", [
        ("failures", f"sum by (check) (reasoning_gateway_verification_failures_total)", "check"),
        ("checks run", f"sum by (check) (reasoning_gateway_verifications_total)", "check"),
    ]),
    ("Steps and self-corrections per response", [
        ("steps", f"sum by (route) (reasoning_gateway_reasoning_steps_sum) / sum by (route) (reasoning_gateway_reasoning_steps_count)", "route"),
        ("self-corrections", f"sum by (route) (reasoning_gateway_self_corrections_total) / sum by (route) (reasoning_gateway_reasoning_steps_count)", "route"),
    ]),
    ("Upstream errors by kind", [
        ("errors", f"sum by (kind) (reasoning_gateway_upstream_errors_total)", "kind"),
    ]),
    ("Streams ended by the gateway / step timeouts", [
        ("aborts", f"sum by (reason) (reasoning_gateway_reasoning_aborts_total)", "reason"),
    ]),
    ("Reasoning cache lookups by result", [
        ("lookups", f"sum by (result) (reasoning_gateway_cache_requests_total)", "result"),
    ]),
    ("Cache: best-candidate similarity p50 by outcome / guard rejections", [
        ("similarity", q("reasoning_gateway_cache_similarity", 0.5, "outcome"), "outcome"),
        ("rejections", f"sum by (check) (reasoning_gateway_cache_guard_rejections_total)", "check"),
    ]),
]

fig, axes = plt.subplots(4, 2, figsize=(13, 14.5))
for ax, (title, series) in zip(axes.flat, panels):
    keys = []
    values = {}
    for name, expr, label in series:
        for metric, v in query(expr):
            k = metric.get(label, "-")
            if k not in keys:
                keys.append(k)
            values[(name, k)] = 0.0 if v != v else v
    width = 0.8 / max(1, len(series))
    for i, (name, _, _) in enumerate(series):
        xs = [j + i * width for j in range(len(keys))]
        ax.bar(xs, [values.get((name, k), 0.0) for k in keys], width=width, label=name)
    ax.set_xticks([j + width * (len(series) - 1) / 2 for j in range(len(keys))])
    ax.set_xticklabels(keys, rotation=20, fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
fig.suptitle("reasoning-gateway key panels — queried from a real Prometheus scraping the gateway (test workload)", fontsize=11)
fig.tight_layout()
fig.savefig(out, dpi=90)
print(f"wrote {out}")
