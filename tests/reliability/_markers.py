"""The `soak` marker: registered here as well as in pyproject.toml, and left out of any run that
selects no marker expression (pyproject's addopts `-m "not soak"` does the same), so that
`make test` never runs the long variants even where addopts lacks it."""

from __future__ import annotations

import pytest

SOAK_HELP = "soak: long reliability/security variants, run by `make soak` (pytest -m soak)"


def configure_soak(config: pytest.Config) -> None:
    config.addinivalue_line("markers", SOAK_HELP)


def deselect_soak(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("markexpr", ""):
        return  # an explicit -m decides
    soak = [i for i in items if i.get_closest_marker("soak") is not None]
    if soak:
        items[:] = [i for i in items if i.get_closest_marker("soak") is None]
        config.hook.pytest_deselected(items=soak)
