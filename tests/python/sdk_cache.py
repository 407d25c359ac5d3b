"""The official openai SDK reading reasoning-cache replays, streamed and not.

Usage: sdk_cache.py BASE_URL REASONING ANSWER METRICS_URL
"""
import sys
import time
import urllib.request

import openai

base_url, want_reasoning, want_answer, metrics_url = sys.argv[1:5]
client = openai.OpenAI(base_url=base_url, api_key="sk-test", max_retries=0, timeout=30)
messages = [{"role": "user", "content": "A farmer has 17 sheep. How many legs do they have?"}]


def collect(stream):
    reasoning, answer, usage = "", "", None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            reasoning += getattr(choice.delta, "reasoning_content", None) or ""
            answer += choice.delta.content or ""
    return reasoning, answer, usage


# The miss, streamed from the upstream.
raw = client.chat.completions.with_raw_response.create(model="think", messages=messages, stream=True)
assert raw.headers["x-reasoning-cache"] == "miss", raw.headers
assert collect(raw.parse())[:2] == (want_reasoning, want_answer)

# Stored once the response has been logged (bounded wait on the gateway's own metric).
deadline = time.monotonic() + 20
while True:
    text = urllib.request.urlopen(metrics_url).read().decode()
    if 'reasoning_gateway_cache_inserts_total{route="think"} 1' in text:
        break
    assert time.monotonic() < deadline, "the response was never stored"
    time.sleep(0.02)

# Replayed as a stream: the same deltas, usage when asked.
raw = client.chat.completions.with_raw_response.create(
    model="think", messages=messages, stream=True, stream_options={"include_usage": True}
)
assert raw.headers["x-reasoning-cache"] == "hit", raw.headers
reasoning, answer, usage = collect(raw.parse())
assert (reasoning, answer) == (want_reasoning, want_answer), (reasoning, answer)
assert usage is not None and usage.completion_tokens_details.reasoning_tokens > 0, usage

# Replayed as JSON.
raw = client.chat.completions.with_raw_response.create(model="think", messages=messages)
assert raw.headers["x-reasoning-cache"] == "hit", raw.headers
assert float(raw.headers["x-reasoning-cache-similarity"]) == 1.0
r = raw.parse()
assert r.choices[0].message.content == want_answer, r
assert getattr(r.choices[0].message, "reasoning_content", None) == want_reasoning, r
assert r.choices[0].finish_reason == "stop"
print("sdk cache ok")
