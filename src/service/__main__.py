"""Entry point: `python -m service COMMAND` (serve, migrate, run-all, run-cluster, audit,
rotate-encryption-key)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from service import logs
from service.settings import get_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service")
    parser.add_argument(
        "command",
        choices=("serve", "migrate", "run-all", "run-cluster", "audit", "rotate-encryption-key"),
        help="serve: the gRPC service; migrate: apply database migrations; "
        "run-all: migrate, then the service and Envoy (what `make run` does); "
        "run-cluster: PostgreSQL, 2 replicas behind one Envoy; audit: check the ledger; "
        "rotate-encryption-key: re-seal stored provider keys with a new ENCRYPTION_KEY",
    )
    args, rest = parser.parse_known_args(argv)
    if args.command == "audit":
        from service.audit import main as audit_main

        return audit_main(rest)
    if args.command == "rotate-encryption-key":
        from service.rotation import main as rotation_main

        return rotation_main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    settings = get_settings()
    logs.setup(settings.log_level)
    if args.command == "migrate":
        from service.storage.migrate import migrate

        migrate(settings.database_url)
        return 0
    if args.command == "run-all":
        from service.devrun import run_all

        return int(run_all())
    if args.command == "run-cluster":
        from service.cluster import run_cluster

        return int(run_cluster())
    from service.encryption import EncryptionKeyError
    from service.server import serve

    try:
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
            asyncio.run(serve(settings))
        else:
            uvloop.run(serve(settings))
    except EncryptionKeyError as exc:
        # A wrong, malformed or missing ENCRYPTION_KEY: say so and stop, without a traceback.
        logging.getLogger("service").error("cannot start: %s", exc)
        print(f"cannot start: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
