"""The reliability suite. Tests marked `soak` are the long variants: `make soak` runs them
(`pytest -m soak`); pyproject's addopts (`-m 'not soak'`) leaves them out of `make test`."""
