"""The openai SDK streaming a response with reasoning checkpoints (x-reasoning-checkpoints: 5).

Usage: sdk_checkpoints.py BASE_URL
"""
import sys

import openai

client = openai.OpenAI(base_url=sys.argv[1], api_key="sk-test", max_retries=0, timeout=30)
stream = client.chat.completions.create(
    model="gated",
    messages=[{"role": "user", "content": "Work it out in steps."}],
    stream=True,
    extra_headers={"x-reasoning-checkpoints": "5"},
)
reasoning, answer, checkpoints = "", "", []
for chunk in stream:
    cp = (chunk.model_extra or {}).get("reasoning_checkpoint")
    if cp:
        checkpoints.append(cp)
        assert chunk.choices == [], chunk
    for choice in chunk.choices:
        reasoning += getattr(choice.delta, "reasoning_content", None) or ""
        answer += choice.delta.content or ""
assert answer == "The answer is 42.", answer
assert reasoning.startswith("Step 1: work on part 1."), reasoning
assert [c["step"] for c in checkpoints] == [5, 10], checkpoints
assert checkpoints[1]["summary"] == "Step 10: work on part 10.", checkpoints
print("sdk checkpoints ok")
