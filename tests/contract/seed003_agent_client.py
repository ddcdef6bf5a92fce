"""Seed 003, "Model Resolution API / Python Implementation": the `AgentModelClient` class,
verbatim between the `seed-begin` / `seed-end` marks, and the resolve part of its usage ("Usage"
and "Example: Multi-Agent Session").

Only `get_model_for_agent` runs against the gateway. `chat()` sends the resolved model to a
LiteLLM proxy (`llm_proxy_url`, Pattern B), which is not part of this gateway, so the tests do not
call it (constructing the OpenAI client opens no connection).

The only changes:
- the usage is the body of `multi_agent_session(saas_api_url, virtual_key)`: the seed's URL and
  `"sk-xxx..."` are the parameters;
- the seed's resolve request carries no key: the tests replace this module's `requests` by a
  `requests.Session` whose default headers carry `Authorization: Bearer <virtual_key>`.
"""

# ruff: noqa: I001
# fmt: off

# seed-begin
from openai import OpenAI
import requests

class AgentModelClient:
    def __init__(self, saas_api_url, llm_proxy_url, team_id, virtual_key):
        self.saas_api_url = saas_api_url
        self.team_id = team_id
        self.virtual_key = virtual_key

        # Initialize OpenAI client with LiteLLM proxy
        self.openai = OpenAI(
            api_key=virtual_key,
            base_url=llm_proxy_url
        )

        # Cache for resolved models (per session)
        self.model_cache = {}

    def get_model_for_agent(self, agent_type: str) -> str:
        """
        Resolve agent type to actual model name.
        Caches result for session duration.
        """
        if agent_type not in self.model_cache:
            response = requests.get(
                f"{self.saas_api_url}/api/model-groups/{agent_type}/resolve",
                params={"team_id": self.team_id}
            )
            response.raise_for_status()
            data = response.json()

            if not data.get("team_has_access"):
                raise PermissionError(f"Team doesn't have access to {agent_type}")

            self.model_cache[agent_type] = data["primary_model"]

        return self.model_cache[agent_type]

    def chat(self, agent_type: str, messages: list):
        """
        Make a chat completion using the agent's resolved model.
        """
        model = self.get_model_for_agent(agent_type)

        return self.openai.chat.completions.create(
            model=model,  # Actual model name from API
            messages=messages
        )
# seed-end


def multi_agent_session(saas_api_url, virtual_key):
    # seed-begin
    # Usage
    client = AgentModelClient(
        saas_api_url=saas_api_url,
        llm_proxy_url="https://llm.usegittie.com",
        team_id="team_engineering",
        virtual_key=virtual_key
    )
    # seed-end

    # seed-begin
    # Fetch and cache models for all agents
    resume_model = client.get_model_for_agent("ResumeAgent")      # gpt-4o
    chat_model = client.get_model_for_agent("ChatAgent")          # gpt-3.5-turbo
    analysis_model = client.get_model_for_agent("AnalysisAgent")  # gpt-4-turbo
    # seed-end
    return client, (resume_model, chat_model, analysis_model)
