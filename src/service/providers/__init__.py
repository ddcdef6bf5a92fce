"""LLM backends behind one protocol (`base.Provider`): the OpenAI-compatible
fast path, LiteLLM for the other providers, and the built-in simulator,
dispatched by `router.ProviderRouter`. Costs in `costs`.

Nothing is imported here on purpose: importing `service.providers.base`
must stay cheap, and LiteLLM is only imported on first use.
"""
