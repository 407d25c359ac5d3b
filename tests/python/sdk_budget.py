"""The official openai SDK reading answers the gateway forced at the reasoning budget.

Usage: sdk_budget.py BASE_URL REASONING ANSWER
"""
import sys

import openai

base_url, want_reasoning, want_answer = sys.argv[1:4]
client = openai.OpenAI(base_url=base_url, api_key="sk-test", max_retries=0, timeout=30)
messages = [{"role": "user", "content": "What is 6 times 7?"}]

r = client.chat.completions.create(model="budget-long", messages=messages)
msg = r.choices[0].message
assert msg.content == want_answer, msg
assert getattr(msg, "reasoning_content", None) == want_reasoning, msg
assert r.choices[0].finish_reason == "stop", r
assert r.usage.completion_tokens_details.reasoning_tokens == len(want_reasoning.split()), r.usage

reasoning, answer, usage, finishes = "", "", None, []
stream = client.chat.completions.create(
    model="budget-long", messages=messages, stream=True, stream_options={"include_usage": True}
)
for chunk in stream:
    if chunk.usage:
        usage = chunk.usage
    for choice in chunk.choices:
        reasoning += getattr(choice.delta, "reasoning_content", None) or ""
        answer += choice.delta.content or ""
        if choice.finish_reason:
            finishes.append(choice.finish_reason)
assert reasoning == want_reasoning, reasoning
assert answer == want_answer, answer
assert finishes == ["stop"], finishes
assert usage is not None and usage.completion_tokens > usage.completion_tokens_details.reasoning_tokens, usage
print("sdk ok")
