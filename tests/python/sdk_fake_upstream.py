"""The official openai SDK against the gateway in front of the scripted fake upstream.

Usage: sdk_fake_upstream.py BASE_URL REASONING ANSWER
Exits non-zero (with the failed assertion) when the SDK sees anything but the expected shapes.
"""
import sys

import openai

base_url, want_reasoning, want_answer = sys.argv[1:4]
client = openai.OpenAI(base_url=base_url, api_key="sk-test", max_retries=0, timeout=30)
messages = [{"role": "user", "content": "What is 2+2?"}]

# Non-streamed: reasoning in message.reasoning_content, answer in message.content.
r = client.chat.completions.create(model="think", messages=messages)
msg = r.choices[0].message
assert msg.content == want_answer, msg
assert getattr(msg, "reasoning_content", None) == want_reasoning, msg
assert r.usage.completion_tokens_details.reasoning_tokens > 0, r.usage

# Streamed, with tags split across events and bytes split across TCP writes.
for model in ("think", "think-bytes", "slow"):
    reasoning, answer, usage = "", "", None
    stream = client.chat.completions.create(
        model=model, messages=messages, stream=True, stream_options={"include_usage": True}
    )
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            reasoning += getattr(choice.delta, "reasoning_content", None) or ""
            answer += choice.delta.content or ""
    assert reasoning == want_reasoning, (model, reasoning)
    assert answer == want_answer, (model, answer)
    assert usage is not None and usage.completion_tokens_details.reasoning_tokens > 0, usage

# Upstream already split reasoning (vLLM `reasoning`): mapped to reasoning_content, once.
r = client.chat.completions.create(model="split-fields", messages=messages)
assert getattr(r.choices[0].message, "reasoning_content", None) == "Thinking hard.", r
assert r.choices[0].message.content == "Done."

# Completions API.
c = client.completions.create(model="think", prompt="2+2=")
assert c.choices[0].text == want_answer, c
assert getattr(c.choices[0], "reasoning_content", None) == want_reasoning, c

# Errors arrive as the SDK's typed exceptions.
try:
    client.chat.completions.create(model="no-such-model", messages=messages)
    raise AssertionError("expected NotFoundError")
except openai.NotFoundError as e:
    assert e.code == "model_not_found", e
try:
    client.chat.completions.create(model="think", messages=[{"role": "user"}], temperature="hot")
    raise AssertionError("expected BadRequestError")
except openai.BadRequestError as e:
    assert e.status_code == 400

# A stream whose upstream dies: the SDK raises on the final error event instead of hanging.
try:
    for _ in client.chat.completions.create(model="disconnect", messages=messages, stream=True):
        pass
    raise AssertionError("expected an APIError from the stream")
except openai.APIError as e:
    assert "closed the connection" in str(e), e

# Models list: the configured exact model names; one model, also by a glob route; 404 otherwise.
assert "echo-rewritten" in [m.id for m in client.models.list()]
assert client.models.retrieve("echo-rewritten").id == "echo-rewritten"
assert client.models.retrieve("think-harder").id == "think-harder"
try:
    client.models.retrieve("gpt-nope")
    raise AssertionError("expected NotFoundError")
except openai.NotFoundError as e:
    assert e.code == "model_not_found", e

# Embeddings are routed by model and forwarded as they are.
e = client.embeddings.create(model="echo-rewritten", input=["hi", "hello"])
assert [d.embedding[0] for d in e.data] == [2.0, 5.0], e
# A pool at its max_inflight with no line: the SDK gets its typed RateLimitError, with the
# gateway's code and the retry-after it honours when it retries (max_retries=0 here).
held = client.chat.completions.create(model="busy", messages=messages, stream=True)
next(iter(held))  # the only slot is taken while this stream is open
try:
    client.chat.completions.create(model="busy", messages=messages)
    raise AssertionError("expected RateLimitError")
except openai.RateLimitError as e:
    assert e.code == "upstream_queue_full", e
    assert e.response.headers.get("retry-after") == "1", e.response.headers
held.close()
print("sdk ok")
