"""Seed 004 ("Integration Overview") typed-client examples, verbatim between the `seed-begin` /
`seed-end` marks (tests/contract/test_seed_004_typed_client.py checks that against the seed).
They run against a real gateway with the saas_litellm_client package of clients/python.

The only changes inside the marks: the base URL "http://localhost:8003" is the parameter
`base_url`, and the placeholder key "sk-your-key" is the parameter `virtual_key`. The lines outside
the marks supply what an example takes from its context (`client`, `job_id`).
"""

# fmt: off


async def type_safe_python_client(base_url, virtual_key):
    """Seed 004, "Client Libraries / Type-Safe Python Client"."""
    # seed-begin
    from saas_litellm_client import SaasLiteLLMClient

    async with SaasLiteLLMClient(
        base_url=base_url,
        team_id="acme-corp",
        virtual_key=virtual_key
    ) as client:
        # Create job
        job = await client.create_job("document_analysis")

        # Make LLM call
        response = await client.llm_call(
            job_id=job.job_id,
            messages=[{"role": "user", "content": "Analyze..."}]
        )

        # Complete job
        result = await client.complete_job(job.job_id, "completed")
        print(f"Credits remaining: {result.credits_remaining}")
    # seed-end
    return job, response, result


async def structured_outputs(client, job_id):
    """Seed 004, "Structured Outputs"."""
    # seed-begin
    from pydantic import BaseModel

    class Person(BaseModel):
        name: str
        age: int
        email: str

    # Get structured response
    person = await client.structured_call(
        job_id=job_id,
        messages=[{"role": "user", "content": "Extract person info..."}],
        response_model=Person
    )

    print(f"Name: {person.name}, Age: {person.age}")
    # seed-end
    return person
