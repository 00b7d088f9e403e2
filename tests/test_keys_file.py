"""`cjkrag keys create --keys-file`: the compose stack's API-keys file (README, Run the full stack)."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cjkrag.cli import app
from cjkrag.service.auth import load_api_keys


def create(path: Path, key_id: str, *principals: str) -> tuple[int, str]:
    args = ["keys", "create", "--id", key_id, "--keys-file", str(path)]
    for p in principals:
        args += ["-p", p]
    result = CliRunner().invoke(app, args)
    return result.exit_code, result.stdout


def test_creates_then_appends_and_stores_only_hashes(tmp_path: Path) -> None:
    path = tmp_path / "api-keys.yaml"
    code, out = create(path, "app-1", "group:staff")
    assert code == 0
    key1 = out.strip().splitlines()[-1]
    code, out = create(path, "app-2", "group:support", "user:bot")
    assert code == 0
    key2 = out.strip().splitlines()[-1]
    entries = {e.id: e for e in load_api_keys(path)}  # what `cjkrag serve` reads
    assert set(entries) == {"app-1", "app-2"} and entries["app-2"].principals == ("group:support", "user:bot")
    text = path.read_text(encoding="utf-8")
    assert key1.startswith("cjk_") and key1 not in text and key2 not in text
    assert entries["app-1"].matches(key1, hashlib.sha256(key1.encode()).digest())
    assert not entries["app-1"].matches(key2, hashlib.sha256(key2.encode()).digest())
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # hashes only; the container's user must read it


def test_keeps_extra_fields_and_refuses_a_duplicate_id(tmp_path: Path) -> None:
    path = tmp_path / "api-keys.yaml"
    assert create(path, "app-1", "group:staff")[0] == 0
    edited = path.read_text(encoding="utf-8").replace("- id: app-1\n", "- id: app-1\n  description: the first app\n")
    assert "description" in edited
    path.write_text(edited, encoding="utf-8")
    before = path.read_text(encoding="utf-8")
    code, _ = create(path, "app-1", "group:other")
    assert code != 0 and path.read_text(encoding="utf-8") == before
    assert create(path, "app-2", "group:staff")[0] == 0
    assert "description: the first app" in path.read_text(encoding="utf-8")


@pytest.mark.parametrize("content", ["keys: [oops", "keys:\n- id: x\n"])
def test_a_broken_keys_file_is_reported_and_left_alone(tmp_path: Path, content: str) -> None:
    path = tmp_path / "api-keys.yaml"
    path.write_text(content, encoding="utf-8")
    code, _ = create(path, "app-1", "group:staff")
    assert code != 0 and path.read_text(encoding="utf-8") == content


def test_an_empty_file_from_touch_is_filled(tmp_path: Path) -> None:
    path = tmp_path / "api-keys.yaml"
    path.touch()  # README, Run the full stack: compose needs the secret's file before the keys step
    assert create(path, "app-1", "group:staff")[0] == 0
    assert [e.id for e in load_api_keys(path)] == ["app-1"]
