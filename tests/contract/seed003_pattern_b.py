"""Seed 003, "Direct OpenAI-Compatible Integration (Pattern B)": its Python example and its
streaming example with the official OpenAI SDK, copied verbatim between the `seed-begin` /
`seed-end` marks (tests/contract/test_seed_003_pattern_b.py checks that against the seed).

The only changes: the virtual key and the base URL come from the environment (SAAS_API_KEY,
SAAS_LLM_BASE), where the seed writes "sk-xxx..." and "https://llm.usegittie.com", and a line
between the two examples. Run as a script: `python seed003_pattern_b.py`.
"""

# ruff: noqa: E402
# fmt: off
import os

API_KEY = os.environ["SAAS_API_KEY"]
BASE_URL = os.environ["SAAS_LLM_BASE"]

# seed-begin
from openai import OpenAI

# Initialize with virtual key
client = OpenAI(
    api_key=API_KEY,  # Your team's virtual key
    base_url=BASE_URL  # LiteLLM proxy URL
)

# Make calls with ACTUAL model names (not model groups!)
response = client.chat.completions.create(
    model="gpt-3.5-turbo",  # Use model name from allowed_models
    messages=[
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Hello!"}
    ]
)

print(response.choices[0].message.content)
# seed-end

print("--- stream")

# seed-begin
from openai import OpenAI

client = OpenAI(
    api_key=API_KEY,
    base_url=BASE_URL
)

stream = client.chat.completions.create(
    model="gpt-3.5-turbo",
    messages=[{"role": "user", "content": "Tell me a story"}],
    stream=True
)

for chunk in stream:
    if chunk.choices[0].delta.content:
        print(chunk.choices[0].delta.content, end='')
# seed-end
print()
