"""`make lint` runs scripts/buf_breaking.py: `buf breaking` (WIRE_JSON) of the branch against its
merge base with main. Played on a throwaway copy of the repository's contract: a change that keeps
the wire and JSON passes, renaming a field (its JSON name) fails."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "buf_breaking.py"
JOB_PROTO = Path("proto/saas_llm/v1/job_service.proto")


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
        cwd=repo,
        check=True,
        capture_output=True,
    )


def _repo_on_branch(tmp_path: Path) -> Path:
    """A git repository holding buf.yaml and proto/ on main, with branch `change` checked out."""
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(ROOT / "buf.yaml", repo / "buf.yaml")
    shutil.copytree(ROOT / "proto", repo / "proto")
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "contract")
    _git(repo, "checkout", "-q", "-b", "change")
    return repo


def _commit_edit(repo: Path, old: str, new: str) -> None:
    path = repo / JOB_PROTO
    text = path.read_text()
    assert text.count(old) == 1, old
    path.write_text(text.replace(old, new))
    _git(repo, "commit", "-q", "-am", "edit")


def _breaking(repo: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--root", str(repo)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_compatible_change_passes(tmp_path: Path) -> None:
    repo = _repo_on_branch(tmp_path)
    _commit_edit(repo, "  // UUID of the recorded call.\n", "  // UUID of the call.\n")
    done = _breaking(repo)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "compatible with" in done.stdout


def test_renamed_json_field_fails(tmp_path: Path) -> None:
    repo = _repo_on_branch(tmp_path)
    _commit_edit(
        repo,
        'What the job does ("document_analysis"), at most 128 characters.\n  string job_type = 3',
        'What the job does ("document_analysis"), at most 128 characters.\n  string kind = 3',
    )
    done = _breaking(repo)
    assert done.returncode != 0, done.stdout
    assert "job_type" in done.stdout + done.stderr, done.stdout + done.stderr
    assert "changed incompatibly" in done.stderr
