"""The official openai SDK against the gateway serving the bundled engine (SmolLM2-135M).

Usage: sdk_engine.py BASE_URL
"""
import sys

import openai

client = openai.OpenAI(base_url=sys.argv[1], api_key="unused", max_retries=0, timeout=120)
messages = [{"role": "user", "content": "What is the capital of France?"}]

r = client.chat.completions.create(model="smollm2", messages=messages, max_tokens=16, temperature=0)
assert r.model == "smollm2", r
assert r.choices[0].message.content.strip(), r
assert r.usage.completion_tokens <= 16, r.usage

text, finish = "", None
for chunk in client.chat.completions.create(
    model="smollm2", messages=messages, max_tokens=16, temperature=0, stream=True
):
    for choice in chunk.choices:
        text += choice.delta.content or ""
        finish = choice.finish_reason or finish
assert text == r.choices[0].message.content, (text, r.choices[0].message.content)
assert finish in ("stop", "length"), finish

c = client.completions.create(model="smollm2", prompt="The sky is", max_tokens=8, temperature=0)
assert c.choices[0].text, c

assert [m.id for m in client.models.list()] == ["smollm2"]
try:
    client.chat.completions.create(model="smollm2", messages=messages, seed=1)
    raise AssertionError("seed must be refused")
except openai.BadRequestError as e:
    assert "seed" in str(e), e
print("sdk engine ok")
