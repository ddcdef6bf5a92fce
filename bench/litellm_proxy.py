"""The LiteLLM proxy baseline: a pinned `litellm[proxy]` in its own venv (bench/.litellm-venv, not
a project dependency), its whole dependency set pinned by bench/litellm-constraints.txt,
configured with the bench's fake upstream, one worker, no database.

Every failure here (no network to install, a proxy that does not start) is returned as a reason
string: the bench then reports the baseline as unavailable and still runs everything else.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bench.procs import Child, spawn

LITELLM_VERSION = "1.80.0"
REQUIREMENT = f"litellm[proxy]=={LITELLM_VERSION}"
HERE = Path(__file__).resolve().parent
VENV = HERE / ".litellm-venv"
CONSTRAINTS = HERE / "litellm-constraints.txt"
INSTALL_TIMEOUT_S = 420.0
MASTER_KEY = "sk-bench-litellm-master"
MODEL = "bench-model"


def _stamp() -> Path:
    return VENV / ".bench-installed"


def _wanted() -> str:
    """What the venv must hold: the requirement and the constraints it was installed with."""
    digest = hashlib.sha256(CONSTRAINTS.read_bytes()).hexdigest()[:16]
    return f"{REQUIREMENT} -c {CONSTRAINTS.name}@{digest}"


def ensure_venv(say: object = print) -> tuple[Path | None, str | None, float]:
    """(litellm executable, reason it is unavailable, seconds spent installing)."""
    exe = VENV / "bin" / "litellm"
    stamp = _stamp()
    wanted = _wanted()
    if exe.exists() and stamp.exists() and stamp.read_text().strip() == wanted:
        return exe, None, 0.0
    started = time.perf_counter()
    log = HERE / "results" / "litellm-install.log.tmp"
    log.parent.mkdir(parents=True, exist_ok=True)
    try:
        if not (VENV / "bin" / "python").exists():
            subprocess.run(
                [sys.executable, "-m", "venv", str(VENV)], check=True, capture_output=True
            )
        assert callable(say)
        say(f"installing {REQUIREMENT} into {VENV.relative_to(HERE.parent)} (first run only)")
        with log.open("wb") as out:
            subprocess.run(
                [
                    str(VENV / "bin" / "python"),
                    "-m",
                    "pip",
                    "install",
                    "-q",
                    "-c",
                    str(CONSTRAINTS),
                    REQUIREMENT,
                ],
                check=True,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=INSTALL_TIMEOUT_S,
            )
    except subprocess.TimeoutExpired:
        return None, f"pip install {REQUIREMENT} took over {INSTALL_TIMEOUT_S:.0f}s", 0.0
    except (subprocess.CalledProcessError, OSError) as exc:
        tail = log.read_text(errors="replace")[-600:] if log.exists() else ""
        return None, f"cannot install {REQUIREMENT}: {exc} {tail}".strip(), 0.0
    if not exe.exists():
        return None, f"{REQUIREMENT} installed no `litellm` executable", 0.0
    stamp.write_text(wanted + "\n")
    log.unlink(missing_ok=True)
    return exe, None, time.perf_counter() - started


def write_config(workdir: Path, api_base: str) -> Path:
    """The proxy config (JSON is valid YAML) and a logging config without access lines (our
    service logs at WARNING in the bench too)."""
    config = {
        "model_list": [
            {
                "model_name": MODEL,
                "litellm_params": {
                    "model": f"openai/{MODEL}",
                    "api_base": api_base,
                    "api_key": "sk-bench-upstream",
                },
            }
        ],
        "litellm_settings": {"drop_params": True, "telemetry": False},
        "general_settings": {"master_key": MASTER_KEY},
    }
    path = workdir / "litellm-config.yaml"
    path.write_text(json.dumps(config, indent=2))
    logging_config = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(levelname)s %(name)s %(message)s"}},
        "handlers": {"err": {"class": "logging.StreamHandler", "formatter": "plain"}},
        "root": {"level": "WARNING", "handlers": ["err"]},
        "loggers": {
            "uvicorn.access": {"level": "WARNING"},
            "uvicorn.error": {"level": "WARNING"},
        },
    }
    (workdir / "litellm-logging.json").write_text(json.dumps(logging_config))
    return path


def start(exe: Path, workdir: Path, api_base: str, port: int, prefix: Sequence[str] = ()) -> Child:
    config = write_config(workdir, api_base)
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.pop("DATABASE_URL", None)
    env.update(
        {
            "LITELLM_LOG": "ERROR",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_TELEMETRY": "False",
            "DISABLE_SCHEMA_UPDATE": "True",
            "PYTHONUNBUFFERED": "1",
        }
    )
    argv = [
        str(exe),
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
        "--telemetry",
        "False",
        "--log_config",
        str(workdir / "litellm-logging.json"),
    ]
    return spawn("litellm-proxy", argv, env=env, cwd=workdir, log_dir=workdir, prefix=prefix)
