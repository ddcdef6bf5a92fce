"""The security suite. Tests marked `soak` are the long variants (`make soak`)."""

from __future__ import annotations

from tests.reliability._markers import configure_soak, deselect_soak

pytest_configure = configure_soak
pytest_collection_modifyitems = deselect_soak
