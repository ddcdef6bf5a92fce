"""One Provider that dispatches each model to the backend that serves it.

Routing, by model name and config:
- `simulator/...`                       -> SimulatorProvider
- no prefix (`gpt-4o`) or `openai/...`  -> OpenAICompatProvider (fast path)
- a LiteLLM provider prefix (`anthropic/`, `gemini/`, `bedrock/`, `azure/`,
  `ollama/`, ...)                       -> LiteLLMProvider, even with an
  `api_base`: those APIs (or their URL schemes) are not OpenAI's, and LiteLLM
  knows how to speak them to a custom endpoint (an Azure resource, an Ollama
  host, an Anthropic proxy).
- any other prefixed name with `api_base` (`meta-llama/Llama-3.1-8B` on a
  vLLM server, whose model ids contain a slash) -> fast path, name as is.
- any other prefixed name without `api_base` -> LiteLLM (which knows more
  providers than the list below, or reports the name as unknown).

This refines "api_base set -> fast path": taken literally it would send an
Azure or Anthropic model with an `api_base` to an endpoint speaking another
protocol.

Demo mode (`simulate_without_keys`, on in `make run`): a model with neither an
`api_base` nor an `api_key` in its config, whose provider's usual key variable
(OPENAI_API_KEY, ANTHROPIC_API_KEY, ...) is unset, is answered by the
simulator instead of failing, so that the seeds' examples (`gpt-3.5-turbo`)
run on a machine without any provider account. Off by default: in production
a missing key is an error the operator must see.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator

from service.providers.base import ChatRequest, ChatResult, ModelSpec, Provider, StreamChunk
from service.providers.credentials import CredentialPolicy
from service.providers.litellm_provider import LiteLLMProvider
from service.providers.openai_compat import OpenAICompatProvider
from service.providers.simulator import SIMULATOR_PREFIX, SimulatorProvider

# LiteLLM 1.80's provider prefixes (litellm.provider_list plus
# openai_compatible_providers), minus `openai`, which the fast path serves.
# Written out so that routing never imports LiteLLM.
LITELLM_PREFIXES = frozenset(
    {
        "ai21",
        "ai21_chat",
        "aiml",
        "aiohttp_openai",
        "anthropic",
        "anthropic_text",
        "anyscale",
        "assemblyai",
        "auto_router",
        "azure",
        "azure_ai",
        "azure_text",
        "baseten",
        "bedrock",
        "bytez",
        "cerebras",
        "clarifai",
        "cloudflare",
        "codestral",
        "cohere",
        "cohere_chat",
        "cometapi",
        "compactifai",
        "custom",
        "custom_openai",
        "dashscope",
        "databricks",
        "datarobot",
        "deepgram",
        "deepinfra",
        "deepseek",
        "dotprompt",
        "elevenlabs",
        "empower",
        "fal_ai",
        "featherless_ai",
        "fireworks_ai",
        "friendliai",
        "galadriel",
        "gemini",
        "github",
        "github_copilot",
        "gradient_ai",
        "groq",
        "heroku",
        "hosted_vllm",
        "huggingface",
        "humanloop",
        "hyperbolic",
        "infinity",
        "jina_ai",
        "lambda_ai",
        "langfuse",
        "lemonade",
        "litellm_proxy",
        "llamafile",
        "lm_studio",
        "maritalk",
        "meta_llama",
        "milvus",
        "mistral",
        "moonshot",
        "morph",
        "nebius",
        "nlp_cloud",
        "novita",
        "nscale",
        "nvidia_nim",
        "oci",
        "ollama",
        "ollama_chat",
        "oobabooga",
        "openai_like",
        "openrouter",
        "ovhcloud",
        "perplexity",
        "petals",
        "pg_vector",
        "predibase",
        "recraft",
        "replicate",
        "runwayml",
        "sagemaker",
        "sagemaker_chat",
        "sambanova",
        "snowflake",
        "text-completion-codestral",
        "text-completion-openai",
        "together_ai",
        "topaz",
        "triton",
        "v0",
        "vercel_ai_gateway",
        "vertex_ai",
        "vertex_ai_beta",
        "vllm",
        "volcengine",
        "voyage",
        "wandb",
        "watsonx",
        "watsonx_text",
        "xai",
        "xinference",
    }
)


log = logging.getLogger(__name__)

# Providers whose credentials are not `<PREFIX>_API_KEY`.
_KEY_ENV = {
    "": "OPENAI_API_KEY",
    "openai": "OPENAI_API_KEY",
    "azure": "AZURE_API_KEY",
    "bedrock": "AWS_ACCESS_KEY_ID",
    "sagemaker": "AWS_ACCESS_KEY_ID",
    "vertex_ai": "GOOGLE_APPLICATION_CREDENTIALS",
    "ollama": "",  # local server, no key
}


def has_credentials(model: ModelSpec) -> bool:
    """Whether a real call could be authenticated (config or environment)."""
    if model.config.get("api_base") or model.config.get("api_key"):
        return True
    name = model.model_name
    prefix = name[: name.find("/")] if "/" in name else ""
    env = _KEY_ENV.get(prefix, f"{prefix.upper()}_API_KEY")
    return env == "" or bool(os.environ.get(env))


class ProviderRouter:
    """Implements the Provider protocol over the three backends. Each is
    created on demand unless given (LiteLLMProvider never imports LiteLLM
    before its first call)."""

    def __init__(
        self,
        *,
        openai: OpenAICompatProvider | None = None,
        litellm: LiteLLMProvider | None = None,
        simulator: SimulatorProvider | None = None,
        simulate_without_keys: bool = False,
        credentials: CredentialPolicy | None = None,
    ) -> None:
        self.openai = openai or OpenAICompatProvider()
        self.litellm = litellm or LiteLLMProvider()
        self.simulator = simulator or SimulatorProvider()
        self.simulate_without_keys = simulate_without_keys
        # Opens pasted keys and reads env references for each attempt (providers/credentials.py).
        self.credentials = credentials or CredentialPolicy()
        self._simulated: set[str] = set()

    def route(self, model: ModelSpec) -> Provider:
        """The backend for `model` (see the module docstring)."""
        name = model.model_name
        if (
            self.simulate_without_keys
            and not name.startswith(SIMULATOR_PREFIX)
            and not has_credentials(model)
        ):
            if name not in self._simulated:
                self._simulated.add(name)
                log.warning(
                    "no credentials for this model: the simulator answers (demo mode)",
                    extra={"model": name},
                )
            return self.simulator
        slash = name.find("/")
        if slash < 0:
            return self.openai
        prefix = name[:slash]
        if prefix == "openai":
            return self.openai
        if name.startswith(SIMULATOR_PREFIX):
            return self.simulator
        if prefix in LITELLM_PREFIXES:
            return self.litellm
        if model.config.get("api_base"):
            return self.openai
        return self.litellm

    async def complete(
        self,
        model: ModelSpec,
        request: ChatRequest,
        timeout: float,
    ) -> ChatResult:
        # Routing looks at the config as stored; only the chosen backend sees the secrets.
        return await self.route(model).complete(self.credentials.for_call(model), request, timeout)

    def stream(
        self, model: ModelSpec, request: ChatRequest, timeout: float
    ) -> AsyncIterator[StreamChunk]:
        # Returns the backend's own async generator (not a wrapping one), so
        # aclose/cancellation reach it directly and no per-chunk hop is added.
        # A secret that cannot be had raises here, inside the caller's attempt.
        return self.route(model).stream(self.credentials.for_call(model), request, timeout)

    async def aclose(self) -> None:
        await self.openai.aclose()
        await self.litellm.aclose()
        await self.simulator.aclose()
