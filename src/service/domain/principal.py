"""Who is calling, and what they may touch.

Authentication (which key) happens once, in the API's auth interceptor; the
checks below are the tenancy rules of DESIGN.md "Auth and tenancy", applied by
the domain services to the resource at hand.
"""

from __future__ import annotations

from dataclasses import dataclass

from saas_llm.v1.reasons import Reason
from service.domain.errors import PermissionDenied


@dataclass(frozen=True, slots=True)
class Principal:
    is_admin: bool
    team_id: str | None = None

    @property
    def label(self) -> str:
        """For logs: never the key."""
        if self.is_admin:
            return "admin"
        return f"team:{self.team_id}" if self.team_id else "anonymous"

    def require_admin(self) -> None:
        if not self.is_admin:
            raise PermissionDenied(
                "This operation requires the admin master key", reason=Reason.ADMIN_REQUIRED
            )

    def require_team(self, team_id: str) -> None:
        """A team key acts only on its own team."""
        if not self.is_admin and self.team_id != team_id:
            raise PermissionDenied(
                f"This key may not access team '{team_id}'", reason=Reason.TEAM_MISMATCH
            )

    def owns(self, team_id: str) -> bool:
        return self.is_admin or self.team_id == team_id


ADMIN = Principal(is_admin=True)
