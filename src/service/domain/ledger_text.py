"""The reasons written on ledger rows: one place for the words of every credit movement."""

from __future__ import annotations

ALLOCATION = "Initial allocation"
ADDITION = "Credits added"


def reserve_reason(job_type: str) -> str:
    """A job's reservation."""
    return f"Job {job_type} created"


def settle_reason(job_type: str, status: str, *, charged: bool) -> str:
    """A completed job's settlement: its charge, or its release."""
    if charged:
        return f"Job {job_type} completed successfully"
    return f"Job {job_type} " + ("failed" if status == "failed" else "had failed calls")


def expiry_reason(job_type: str) -> str:
    return f"Job {job_type} expired"


def suspension_reason(job_type: str) -> str:
    return f"Job {job_type} ended: team suspended"
