"""Direct calls (the OpenAI-compatible API) in storage: what both money writers share."""

from __future__ import annotations

from service.domain.ports import DirectSettlement


def expiry_settlement(call_id: str, model: str) -> DirectSettlement:
    """A direct call left in flight by a stopped replica: its reservation is released at no
    cost (what the provider did with it is unknown)."""
    return DirectSettlement(
        call_id=call_id,
        status="expired",
        model=model,
        prompt_tokens=0,
        completion_tokens=0,
        usage_estimated=True,
        cost_nanos=0,
        latency_ms=0,
        ttft_ms=None,
        error="in flight past the timeout (its replica stopped); released at no cost",
        attempts=[],
    )
