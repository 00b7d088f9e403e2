"""`cjkrag ingest` exit codes, --json-report / --retry-failed, `cjkrag delete` and `cjkrag drop` (real Milvus Lite)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from cjkrag.cli import app
from cjkrag.ingest.report import EXIT_ERROR, EXIT_FAILED_DOCUMENTS, EXIT_NOTHING_WRITTEN, EXIT_OK


def _config(tmp: Path) -> Path:
    cfg = tmp / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"data_dir": str(tmp / "data"), "embedding": {"model": "fake:64"}}))
    return cfg


def test_exit_codes_report_retry_delete_and_drop(tmp_path: Path) -> None:
    run = CliRunner().invoke
    cfg = _config(tmp_path)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "good.txt").write_text("退货请在三十天内申请。", encoding="utf-8")
    (docs / "bad.txt").write_bytes(b"\x00\x01\x02\xff" * 100)
    report = tmp_path / "r.json"

    r = run(app, ["ingest", str(docs), "-c", str(cfg), "--public", "--json-report", str(report), "--no-progress"])
    assert r.exit_code == EXIT_FAILED_DOCUMENTS, r.output
    data = json.loads(report.read_text())
    assert data["exit_code"] == EXIT_FAILED_DOCUMENTS and data["documents"] == 1
    [failure] = [f for f in data["failures"] if f["kind"] == "failed"]
    assert failure["path"].endswith("bad.txt") and failure["error"] and failure["fix"]

    (docs / "bad.txt").write_text("坏文件已修好。", encoding="utf-8")
    r = run(app, ["ingest", "-c", str(cfg), "--retry-failed", str(report), "--json-report", str(report), "--no-progress"])
    assert r.exit_code == EXIT_OK, r.output
    data = json.loads(report.read_text())
    assert data["documents"] == 1 and data["unchanged"] == 0  # only the failed file was redone

    only_bad = tmp_path / "only_bad"
    only_bad.mkdir()
    (only_bad / "x.txt").write_bytes(b"\x00\x01\x02\xff" * 100)
    r = run(app, ["ingest", str(only_bad), "-c", str(cfg), "--public", "--no-progress"])
    assert r.exit_code == EXIT_NOTHING_WRITTEN, r.output
    r = run(app, ["ingest", str(docs), "-c", str(cfg), "--no-progress"])  # no access rule at all
    assert r.exit_code == EXIT_ERROR

    r = run(app, ["delete", "--source", str(docs), "-c", str(cfg)])  # not a terminal: needs --yes
    assert r.exit_code == EXIT_ERROR and "--yes" in r.output
    r = run(app, ["delete", "--source", str(docs), "-c", str(cfg), "--yes"])
    assert r.exit_code == 0 and "deleted 2 document(s)" in r.output, r.output
    r = run(app, ["query", "退货", "-c", str(cfg), "--json"])
    assert json.loads(r.output) == []

    r = run(app, ["ingest", str(docs), "-c", str(cfg), "--public", "--no-progress"])
    assert r.exit_code == EXIT_OK
    r = run(app, ["drop", "-c", str(cfg), "--yes"])
    assert r.exit_code == 0, r.output
    r = run(app, ["ingest", str(docs), "-c", str(cfg), "--public", "--json-report", str(report), "--no-progress"])
    assert r.exit_code == EXIT_OK and json.loads(report.read_text())["documents"] == 2  # manifest dropped too
