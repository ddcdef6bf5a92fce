"""Seed 003, "Code Examples / Python Integration": the `SaasLLMClient` class and its usage
("Document analysis workflow"), copied verbatim between the `seed-begin` / `seed-end` marks
(tests/contract/test_seed_003.py checks that against the seed when the seed file is present).

The only changes:
- the usage is the body of `document_analysis_workflow(base_url, document_content)`: the seed's
  `base_url="https://llm-saas.usegittie.com"` becomes the parameter, and `document_content`
  (undefined in the seed) is the other one;
- the seed sends no Authorization header: the tests replace this module's `requests` by a
  `requests.Session` whose default headers carry `Authorization: Bearer <key>` (a Session has the
  same `get`/`post`), so that no line of the class changes.
"""

# ruff: noqa: I001, UP006, UP035, RUF013, F841
# fmt: off

# seed-begin
import requests
from typing import Dict, List, Any

class SaasLLMClient:
    def __init__(self, base_url: str, team_id: str):
        self.base_url = base_url
        self.team_id = team_id

    def create_job(self, job_type: str, user_id: str = None, metadata: Dict = None) -> str:
        """Create a new job and return job_id"""
        response = requests.post(
            f"{self.base_url}/api/jobs/create",
            json={
                "team_id": self.team_id,
                "user_id": user_id,
                "job_type": job_type,
                "metadata": metadata or {}
            }
        )
        response.raise_for_status()
        return response.json()["job_id"]

    def llm_call(
        self,
        job_id: str,
        model_group: str,
        messages: List[Dict],
        purpose: str = None,
        temperature: float = 0.7
    ) -> Dict[str, Any]:
        """Make an LLM call within a job context"""
        response = requests.post(
            f"{self.base_url}/api/jobs/{job_id}/llm-call",
            json={
                "model_group": model_group,
                "messages": messages,
                "purpose": purpose,
                "temperature": temperature
            }
        )
        response.raise_for_status()
        return response.json()

    def complete_job(
        self,
        job_id: str,
        status: str = "completed",
        metadata: Dict = None,
        error_message: str = None
    ) -> Dict[str, Any]:
        """Complete a job and get cost summary"""
        response = requests.post(
            f"{self.base_url}/api/jobs/{job_id}/complete",
            json={
                "status": status,
                "metadata": metadata or {},
                "error_message": error_message
            }
        )
        response.raise_for_status()
        return response.json()

    def get_credits(self) -> Dict[str, Any]:
        """Get team credit balance"""
        response = requests.get(
            f"{self.base_url}/api/credits/teams/{self.team_id}/balance"
        )
        response.raise_for_status()
        return response.json()
# seed-end


def document_analysis_workflow(base_url, document_content):
    # seed-begin
    # Usage
    client = SaasLLMClient(
        base_url=base_url,
        team_id="team_engineering"
    )

    # Document analysis workflow
    job_id = client.create_job(
        job_type="document_analysis",
        user_id="user_123",
        metadata={"document_id": "doc_456"}
    )

    try:
        # Parse document
        parse_result = client.llm_call(
            job_id=job_id,
            model_group="ResumeAgent",
            messages=[
                {"role": "system", "content": "You are a resume parser."},
                {"role": "user", "content": document_content}
            ],
            purpose="parsing"
        )

        # Analyze parsed content
        analysis_result = client.llm_call(
            job_id=job_id,
            model_group="ResumeAgent",
            messages=[
                {"role": "user", "content": f"Analyze: {parse_result['response']['content']}"}
            ],
            purpose="analysis"
        )

        # Complete successfully
        completion = client.complete_job(
            job_id=job_id,
            status="completed",
            metadata={"result": "success"}
        )

        print(f"Job completed. Credits remaining: {completion['costs']['credits_remaining']}")

    except Exception as e:
        # Complete as failed (no credit charge)
        client.complete_job(
            job_id=job_id,
            status="failed",
            error_message=str(e)
        )
    # seed-end
