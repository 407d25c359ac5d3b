"""The official `openai` SDK's Responses client through the gateway (fake upstream).

Args: base_url reasoning answer [passthrough]. With `passthrough` the upstream serves Responses
itself and stores responses, so `previous_response_id` is accepted. Prints "responses ok".
"""
import json
import sys

import openai

base, reasoning, answer = sys.argv[1:4]
passthrough = sys.argv[4:5] == ["passthrough"]
client = openai.OpenAI(base_url=base, api_key="sk-test", max_retries=0)

r = client.responses.create(model="think", input="What is 2+2?", reasoning={"effort": "low", "summary": "auto"})
assert r.status == "completed", r
assert r.output_text == answer, r.output_text
kinds = [o.type for o in r.output]
assert kinds == ["reasoning", "message"], kinds
assert r.output[0].content[0].type == "reasoning_text", r.output[0]
assert r.output[0].content[0].text == reasoning, r.output[0]
# A summary was asked for: the gateway does not summarise, the summary is the whole reasoning.
assert [(p.type, p.text) for p in r.output[0].summary] == [("summary_text", reasoning)], r.output[0]
assert r.usage.output_tokens_details.reasoning_tokens > 0, r.usage
assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens, r.usage

seen, thought = [], ""
with client.responses.stream(model="think", input=[{"role": "user", "content": [{"type": "input_text", "text": "What is 2+2?"}]}]) as s:
    for ev in s:
        seen.append(ev.type)
        if ev.type == "response.reasoning_text.delta":
            thought += ev.delta
    final = s.get_final_response()
assert thought == reasoning, thought
assert final.output_text == answer, final
assert seen[:2] == ["response.created", "response.in_progress"], seen
assert seen[-1] == "response.completed", seen
assert "response.output_text.done" in seen, seen
assert not any("summary" in t for t in seen), seen
assert final.output[0].summary == [], final.output[0]

seen, summary = [], ""
with client.responses.stream(model="think", input="What is 2+2?", reasoning={"summary": "detailed"}) as s:
    for ev in s:
        seen.append(ev.type)
        if ev.type == "response.reasoning_summary_text.delta":
            assert ev.summary_index == 0 and ev.output_index == 0, ev
            summary += ev.delta
        if ev.type == "response.reasoning_summary_part.done":
            assert ev.part.text == reasoning, ev
    final = s.get_final_response()
assert summary == reasoning, summary
order = [t for t in seen if t.startswith("response.reasoning_summary") or t == "response.output_item.done"]
assert order[0] == "response.reasoning_summary_part.added", order
assert order[-4:-1] == ["response.reasoning_summary_text.done", "response.reasoning_summary_part.done",
                        "response.output_item.done"], order
assert set(order[1:-4]) == {"response.reasoning_summary_text.delta"}, order
assert final.output[0].summary[0].text == reasoning, final.output[0]
assert final.output_text == answer, final

tools = [{"type": "function", "name": "get_weather", "description": "Weather in a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
for stream in (False, True):
    if stream:
        with client.responses.stream(model="tool", input="Weather in Paris?", tools=tools) as s:
            for _ in s:
                pass
            r = s.get_final_response()
    else:
        r = client.responses.create(model="tool", input="Weather in Paris?", tools=tools)
    calls = [o for o in r.output if o.type == "function_call"]
    assert len(calls) == 1, r.output
    assert calls[0].name == "get_weather" and json.loads(calls[0].arguments) == {"city": "Paris"}, calls
    follow = [{"role": "user", "content": "Weather in Paris?"}]
    follow += [o.model_dump(exclude_none=True) for o in r.output]
    follow.append({"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny"})
    r2 = client.responses.create(model="tool", input=follow, tools=tools)
    assert r2.output_text == answer, r2

if passthrough:
    # The upstream stores responses: a follow-up names the previous one.
    r = client.responses.create(model="think", input="And 3+3?", previous_response_id=final.id)
    assert r.output_text == answer, r
else:
    try:
        client.responses.create(model="think", input="x", previous_response_id="resp_123")
        raise AssertionError("previous_response_id was accepted")
    except openai.BadRequestError as e:
        assert "previous_response_id" in str(e), e

print("responses ok")
