"""What a call cost in USD: the model's own prices from its config first,
else LiteLLM's model cost map.

The map is the JSON file shipped inside the litellm package. It is read
straight from the package directory, without importing LiteLLM (2 s), and
reduced to the two prices we use so the ~1 MB of JSON does not stay in
memory as thousands of dicts. `warm()` loads it at startup so the first call
pays nothing.

None means unpriced, never $0: an unknown model must show up as such in the
job's costs, not as free.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from service.providers.base import ModelSpec, TokenUsage

COST_MAP_FILE = "model_prices_and_context_window_backup.json"
SIMULATOR_PREFIX = "simulator/"

# model name -> (input USD/token, output USD/token); None until loaded.
_prices: dict[str, tuple[float, float]] | None = None
_lock = threading.Lock()


def _map_path() -> Path | None:
    # find_spec on a top-level name locates the package without importing it.
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location) / COST_MAP_FILE
        if path.is_file():
            return path
    return None


def _price(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _load() -> dict[str, tuple[float, float]]:
    path = _map_path()
    if path is None:
        return {}
    try:
        raw = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    prices: dict[str, tuple[float, float]] = {}
    if not isinstance(raw, dict):
        return prices
    for name, entry in raw.items():
        if name == "sample_spec" or not isinstance(entry, dict):
            continue
        prompt = _price(entry.get("input_cost_per_token"))
        completion = _price(entry.get("output_cost_per_token"))
        if prompt is not None and completion is not None:
            prices[name] = (prompt, completion)
    return prices


def warm() -> None:
    """Load the cost map now (call at service startup)."""
    _cost_map()


def _cost_map() -> dict[str, tuple[float, float]]:
    global _prices
    prices = _prices
    if prices is None:
        with _lock:
            if _prices is None:
                _prices = _load()
            prices = _prices
    return prices


def map_prices(model_name: str) -> tuple[float, float] | None:
    """LiteLLM's prices for a model: by full name (`gemini/gemini-1.5-pro`),
    then without the provider prefix (`openai/gpt-4o` -> `gpt-4o`)."""
    prices = _cost_map()
    found = prices.get(model_name)
    if found is None and "/" in model_name:
        found = prices.get(model_name.split("/", 1)[1])
    return found


# What a simulator model costs on the OpenAI-compatible API when its config gives no price (a
# budget can only be enforced on priced calls). Job calls report them as unpriced instead.
SIMULATOR_DEFAULT_PRICES = (1e-6, 2e-6)


def prices_of(model: ModelSpec, *, simulator_default: bool = False) -> tuple[float, float] | None:
    """(input, output) USD per token of `model`, or None if it is unpriced.

    Each of `input_cost_per_token` / `output_cost_per_token` in the model config overrides the
    map's price; a price missing from both makes the model unpriced. `base_model` in the config
    (LiteLLM's convention, e.g. for Azure deployments) names the map entry to use. Simulator
    models are priced only by their config, or by SIMULATOR_DEFAULT_PRICES when asked.
    """
    config: Mapping[str, Any] = model.config
    prompt = _price(config.get("input_cost_per_token"))
    completion = _price(config.get("output_cost_per_token"))
    if prompt is not None and completion is not None:
        return prompt, completion
    name = model.model_name
    if name.startswith(SIMULATOR_PREFIX):
        if not simulator_default:
            return None
        found: tuple[float, float] | None = SIMULATOR_DEFAULT_PRICES
    else:
        base_model = config.get("base_model")
        found = map_prices(str(base_model)) if base_model else None
        if found is None:
            found = map_prices(name)
    if found is None:
        return None
    return (found[0] if prompt is None else prompt, found[1] if completion is None else completion)


def cost_of(model: ModelSpec, usage: TokenUsage) -> float | None:
    """USD cost of `usage` on `model`, or None if the model is unpriced (see prices_of)."""
    prices = prices_of(model)
    if prices is None:
        return None
    return usage.prompt_tokens * prices[0] + usage.completion_tokens * prices[1]
