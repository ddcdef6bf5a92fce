"""`buf breaking` of proto/ against the main branch, run by `make lint`.

The rules are buf.yaml's `breaking` section (WIRE_JSON: the wire format and the JSON that Envoy
prints are the contract). The base is taken from git, so it works in a clean clone with no
network: on a branch other than main, the merge base with main (what the branch changes); on
main itself (CI), the previous commit (what the last commit changed); `--against REF` or
BUF_BREAKING_AGAINST picks another. The base's buf.yaml and proto/ are extracted with
`git archive` into a temporary directory; the vendored googleapis protos are added where the
base did not have them yet (before they were committed, `make gen` copied them into build/).
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _git(root: Path, *args: str) -> str | None:
    done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 else None


def base_ref(root: Path) -> str | None:
    """The commit to compare with, or None when there is none (a repository's first commit)."""
    branch = _git(root, "rev-parse", "--abbrev-ref", "HEAD")
    if branch != "main" and _git(root, "rev-parse", "--verify", "--quiet", "main^{commit}"):
        return _git(root, "merge-base", "HEAD", "main")
    return _git(root, "rev-parse", "--verify", "--quiet", "HEAD~1^{commit}")


def extract(root: Path, ref: str, into: Path) -> None:
    """buf.yaml and proto/ as they are at `ref`, plus the googleapis protos they import."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", ref, "--", "buf.yaml", "proto"],
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    if not (into / "proto" / "third_party").exists():
        shutil.copytree(root / "proto" / "third_party", into / "build" / "third_party")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--root", type=Path, default=ROOT, help="the repository (default: this)")
    parser.add_argument("--against", default=os.environ.get("BUF_BREAKING_AGAINST"))
    parser.add_argument("--buf", default=str(Path(sys.executable).parent / "buf"))
    args = parser.parse_args(argv)
    root = args.root.resolve()
    ref = args.against or base_ref(root)
    if ref is None:
        print("buf breaking: no base commit to compare with; skipped")
        return 0
    with tempfile.TemporaryDirectory(prefix="buf-against-") as tmp:
        extract(root, ref, Path(tmp))
        done = subprocess.run(
            [args.buf, "breaking", "--against", tmp, "--error-format", "text"],
            cwd=root,
            check=False,
        )
    short = _git(root, "rev-parse", "--short", ref) or ref
    if done.returncode != 0:
        print(f"buf breaking: the contract changed incompatibly since {short}", file=sys.stderr)
        return done.returncode
    print(f"buf breaking: compatible with {short} (WIRE_JSON)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
