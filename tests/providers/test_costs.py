"""Prices: config overrides, LiteLLM's cost map, unpriced models."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from service.providers import costs
from service.providers.base import ModelSpec, TokenUsage

USAGE = TokenUsage(prompt_tokens=1000, completion_tokens=500)


def test_config_override() -> None:
    model = ModelSpec(
        "openai/gpt-4o-mini", 0, {"input_cost_per_token": 1e-6, "output_cost_per_token": "2e-6"}
    )
    assert costs.cost_of(model, USAGE) == pytest.approx(1000 * 1e-6 + 500 * 2e-6)


def test_known_model_from_cost_map() -> None:
    input_price, output_price = costs.map_prices("gpt-4o-mini") or (0.0, 0.0)
    assert input_price > 0
    assert output_price > 0
    cost = costs.cost_of(ModelSpec("gpt-4o-mini", 0), USAGE)
    assert cost == pytest.approx(1000 * input_price + 500 * output_price)
    # The provider prefix is dropped when the full name is not in the map.
    assert costs.cost_of(ModelSpec("openai/gpt-4o-mini", 0), USAGE) == pytest.approx(cost)
    assert (costs.cost_of(ModelSpec("gpt-3.5-turbo", 0), USAGE) or 0) > 0


def test_partial_override_uses_map_for_the_rest() -> None:
    input_price, _ = costs.map_prices("gpt-4o-mini") or (0.0, 0.0)
    model = ModelSpec("gpt-4o-mini", 0, {"output_cost_per_token": 0.0})
    assert costs.cost_of(model, USAGE) == pytest.approx(1000 * input_price)


def test_base_model() -> None:
    model = ModelSpec("azure/my-deployment", 0, {"base_model": "gpt-4o-mini"})
    assert costs.cost_of(model, USAGE) == costs.cost_of(ModelSpec("gpt-4o-mini", 0), USAGE)


def test_unknown_model_is_unpriced() -> None:
    assert costs.cost_of(ModelSpec("openai/no-such-model-xyz", 0), USAGE) is None
    assert (
        costs.cost_of(ModelSpec("no-such-model-xyz", 0, {"input_cost_per_token": 1}), USAGE) is None
    )


def test_simulator_priced_only_by_config() -> None:
    assert costs.cost_of(ModelSpec("simulator/gpt-4o-mini", 0), USAGE) is None
    model = ModelSpec(
        "simulator/x", 0, {"input_cost_per_token": 0.001, "output_cost_per_token": 0.002}
    )
    assert costs.cost_of(model, USAGE) == pytest.approx(2.0)


def test_warm_and_fast_path_do_not_import_litellm() -> None:
    code = (
        "import sys\n"
        "from service.providers import costs, router\n"
        "costs.warm()\n"
        "assert costs._prices, 'cost map empty'\n"
        "assert 'litellm' not in sys.modules, 'litellm imported'\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=30)
