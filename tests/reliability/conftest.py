"""The reliability suite. Tests marked `soak` are the long variants: `make soak` runs them
(`pytest -m soak`); a plain `pytest` / `make test` leaves them out."""

from __future__ import annotations

from tests.reliability._markers import configure_soak, deselect_soak

pytest_configure = configure_soak
pytest_collection_modifyitems = deselect_soak
