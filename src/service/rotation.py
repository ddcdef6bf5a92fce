"""`python -m service rotate-encryption-key`: re-seal every stored provider credential.

Two ways, by where the key comes from (service/encryption.py):
- ENCRYPTION_KEY set (production): give it the new key first and the old one after,
  `ENCRYPTION_KEY=<new>,<old>`, on every replica and on this command. The command re-seals
  every stored secret with <new> in one transaction; then drop <old> everywhere.
  `--generate` prints a new key.
- data/encryption_key (what `make run` generated): the command generates the new key, writes
  "<new>,<old>" to the file (so that nothing is lost if it stops half way), re-seals, then
  leaves "<new>" alone in the file. Restart `make run` afterwards.
Secrets stored in clear before sealing existed (an api_base with credentials, extra_headers
values) are sealed by the same pass. No key is ever printed, except by --generate.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from service.encryption import (
    EncryptionKeyError,
    SecretBox,
    generate_key,
    load_key_text,
    write_key_file,
)
from service.providers.credentials import CredentialPolicy
from service.settings import get_settings
from service.storage.catalog import CatalogRepository
from service.storage.database import Database


async def reseal_all(database_url: str, keys: str) -> int:
    """Re-seal every stored secret with the first of `keys`; how many model configs changed."""
    policy = CredentialPolicy(SecretBox(keys))
    db = Database.open(database_url)
    try:
        return await CatalogRepository(db).rewrite_model_configs(policy.reseal)
    finally:
        await db.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m service rotate-encryption-key",
        description="Re-seal every provider credential stored in model configs with a new key.",
    )
    parser.add_argument(
        "--generate", action="store_true", help="print a new key and exit (touches nothing)"
    )
    parser.add_argument(
        "--data-dir", default="data", help="where `make run` keeps encryption_key (data)"
    )
    args = parser.parse_args(argv)
    if args.generate:
        print(generate_key())
        return 0
    settings = get_settings()
    env_keys = settings.encryption_key.get_secret_value() if settings.encryption_key else None
    keys, key_file = load_key_text(env_keys, Path(args.data_dir))
    if keys is None:
        print(
            "no key to rotate: set ENCRYPTION_KEY=<new>,<old> (or run where `make run` keeps "
            "data/encryption_key)",
            file=sys.stderr,
        )
        return 2
    try:
        if key_file is None:
            box = SecretBox(keys)
            changed = asyncio.run(reseal_all(settings.database_url, keys))
            print(
                f"re-sealed {changed} model config(s) with key {box.current_key_id} (the first "
                "of ENCRYPTION_KEY); set ENCRYPTION_KEY to that key alone on every replica"
            )
            return 0
        SecretBox(keys)  # the current file must be valid before it is extended
        new = generate_key()
        both = ",".join([new, *[k for k in keys.split(",") if k.strip()]])
        write_key_file(key_file, both)
        changed = asyncio.run(reseal_all(settings.database_url, both))
        write_key_file(key_file, new)
    except EncryptionKeyError as exc:
        print(f"rotation failed: {exc}", file=sys.stderr)
        return 2
    print(
        f"re-sealed {changed} model config(s) with key {SecretBox(new).current_key_id}; "
        f"{os.fspath(key_file)} now holds only that key: restart the service (make run)"
    )
    return 0
