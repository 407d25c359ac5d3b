"""The OpenAI Agents SDK running an agent with one function tool through the gateway.

Args: base_url answer. Prints "agents ok".
"""
import asyncio
import sys

from agents import Agent, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled
from openai import AsyncOpenAI

base, answer = sys.argv[1:3]
set_tracing_disabled(True)
asked = []


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    asked.append(city)
    return "sunny"


async def main():
    client = AsyncOpenAI(base_url=base, api_key="sk-test", max_retries=0)
    agent = Agent(name="weather", instructions="Answer with the tool.", tools=[get_weather],
                  model=OpenAIResponsesModel(model="tool", openai_client=client))
    result = await Runner.run(agent, "What is the weather in Paris?")
    assert asked == ["Paris"], asked
    assert result.final_output == answer, result.final_output
    streamed = Runner.run_streamed(agent, "What is the weather in Paris?")
    async for _ in streamed.stream_events():
        pass
    assert asked == ["Paris", "Paris"], asked
    assert streamed.final_output == answer, streamed.final_output


asyncio.run(main())
print("agents ok")
