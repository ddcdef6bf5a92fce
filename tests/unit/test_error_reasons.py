"""Every ErrorInfo reason the service can send is documented in
proto/saas_llm/v1/errors.proto."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from saas_llm.v1 import errors_pb2
from service.domain import errors

SRC = Path(__file__).resolve().parents[2] / "src" / "service"


def test_every_reason_is_in_the_proto_enum() -> None:
    documented = {n.removeprefix("ERROR_REASON_") for n in errors_pb2.ErrorReason.keys()}  # noqa: SIM118
    used = set()
    for path in SRC.rglob("*.py"):
        used |= set(re.findall(r'reason="([A-Z_]+)"', path.read_text()))
    for _, cls in inspect.getmembers(errors, inspect.isclass):
        if issubclass(cls, errors.DomainError):
            used.add(cls.reason)
    generic = {"NOT_FOUND", "PERMISSION_DENIED", "FAILED_PRECONDITION", "ALREADY_EXISTS"}
    missing = used - documented - generic
    assert not missing, f"undocumented reasons: {sorted(missing)}"
    assert len(used) > 15
