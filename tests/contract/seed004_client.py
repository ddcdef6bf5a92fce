"""Seed 004 ("Integration Overview") Python examples, verbatim between the `seed-begin` /
`seed-end` marks (tests/contract/test_seed_004.py checks that against the seed when the seed file
is present). Each example is the body of a function so that the tests can run it against a real
gateway; the lines outside the marks only supply what the example takes from its context
(`job_id`, `messages`, ...) and return its results.

The only changes inside the marks: the base URL "http://localhost:8003" is the parameter
`base_url`, and the placeholder keys ("sk-your-virtual-key", "sk-your-virtual-key-here") are the
parameter `virtual_key`. The examples already send `Authorization: Bearer <key>`.
"""

# fmt: off

import json  # Pattern B uses json without importing it


def pattern_a(base_url, virtual_key):
    """Seed 004, "Pattern A: Job-Based API" (no model_group: the team's first group is used)."""
    # seed-begin
    import requests

    API = f"{base_url}/api"
    headers = {"Authorization": f"Bearer {virtual_key}"}

    # 1. Create job
    job = requests.post(f"{API}/jobs/create", headers=headers, json={
        "team_id": "acme-corp",
        "job_type": "document_analysis"
    }).json()

    # 2. Make LLM calls
    response = requests.post(f"{API}/jobs/{job['job_id']}/llm-call",
        headers=headers,
        json={
            "messages": [{"role": "user", "content": "Analyze this..."}]
        }
    ).json()

    # 3. Complete job
    result = requests.post(f"{API}/jobs/{job['job_id']}/complete",
        headers=headers,
        json={"status": "completed"}
    ).json()

    print(f"Credits remaining: {result['costs']['credits_remaining']}")
    # seed-end
    return job, response, result


def pattern_b(base_url, virtual_key, job_id):
    """Seed 004, "Pattern B: Streaming with SSE" (prints the tokens as they arrive)."""
    # seed-begin
    import requests

    API = f"{base_url}/api"
    headers = {"Authorization": f"Bearer {virtual_key}"}

    # Create job and make streaming call
    response = requests.post(
        f"{API}/jobs/{job_id}/llm-call-stream",
        headers=headers,
        json={
            "messages": [{"role": "user", "content": "Tell me a story"}]
        },
        stream=True
    )

    # Process Server-Sent Events
    for line in response.iter_lines():
        if line.startswith(b'data: '):
            chunk = json.loads(line[6:])
            if chunk.get("content"):
                print(chunk["content"], end="", flush=True)
    # seed-end
    return response


def first_api_call(base_url, virtual_key):
    """Seed 004, "Quick Start / Step 2: Make Your First API Call"."""
    # seed-begin
    import requests

    API = f"{base_url}/api"
    VIRTUAL_KEY = virtual_key

    headers = {
        "Authorization": f"Bearer {VIRTUAL_KEY}",
        "Content-Type": "application/json"
    }

    # Create job
    job = requests.post(f"{API}/jobs/create", headers=headers, json={
        "team_id": "acme-corp",
        "job_type": "test",
        "metadata": {"test": True}
    }).json()

    print(f"Created job: {job['job_id']}")

    # Make LLM call
    response = requests.post(
        f"{API}/jobs/{job['job_id']}/llm-call",
        headers=headers,
        json={
            "messages": [
                {"role": "user", "content": "Say hello!"}
            ]
        }
    ).json()

    print(f"Response: {response['response']['content']}")

    # Complete job
    result = requests.post(
        f"{API}/jobs/{job['job_id']}/complete",
        headers=headers,
        json={"status": "completed"}
    ).json()

    print(f"Credits remaining: {result['costs']['credits_remaining']}")
    # seed-end
    return job, response, result


def using_the_virtual_key(base_url, virtual_key):
    """Seed 004, "Authentication / Using the Virtual Key" (Python tab)."""
    import requests

    # seed-begin
    headers = {
        "Authorization": f"Bearer {virtual_key}",
        "Content-Type": "application/json"
    }

    response = requests.post(
        f"{base_url}/api/jobs/create",
        headers=headers,
        json={"team_id": "acme-corp", "job_type": "analysis"}
    )
    # seed-end
    return response


def streaming_vs_non_streaming(base_url, virtual_key, job_id, messages):
    """Seed 004, "Streaming vs Non-Streaming": the buffered call, then the streamed one."""
    import requests

    API = f"{base_url}/api"
    headers = {"Authorization": f"Bearer {virtual_key}"}
    # seed-begin
    # Get complete response at once
    response = requests.post(
        f"{API}/jobs/{job_id}/llm-call",
        headers=headers,
        json={"messages": messages}
    ).json()

    content = response["response"]["content"]
    # seed-end

    # seed-begin
    # Get response progressively
    response = requests.post(
        f"{API}/jobs/{job_id}/llm-call-stream",
        headers=headers,
        json={"messages": messages},
        stream=True
    )

    for line in response.iter_lines():
        if line.startswith(b'data: '):
            chunk = json.loads(line[6:])
            print(chunk.get("content", ""), end="")
    # seed-end
    return content
