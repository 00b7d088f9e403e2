"""What every `cjkrag` command shares: the consoles, the --config option, opening the engine, failing cleanly."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

err = Console(stderr=True)
out = Console()

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML config overlaying configs/default.yaml (see the README).", exists=False),
]


def _engine(config: Path | None, collection: str | None = None) -> Any:
    import cjkrag

    overlay: dict[str, Any] = {}
    if config is not None:
        from cjkrag.config import load_config

        cfg = load_config(config)
        if collection:
            cfg.collection = collection
        return cjkrag.open(cfg)
    if collection:
        overlay["collection"] = collection
    return cjkrag.open(overlay or None)


def _fail(exc: Exception, code: int = 2) -> typer.Exit:
    from rich.markup import escape

    err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, markup=True, soft_wrap=True)
    return typer.Exit(code)


