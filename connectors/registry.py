"""Which store adapter ``store.backend`` names: built-ins plus the ``cjkrag.stores`` entry-point group.

A factory is ``factory(config: cjkrag.config.Config) -> VectorStore`` (not yet warmed up). A package adds a
backend without touching cjkrag by declaring, in its ``pyproject.toml``::

    [project.entry-points."cjkrag.stores"]
    mystore = "mypackage.cjkrag_store:from_config"

and users select it with ``store.backend: mystore`` (its settings go under ``store.options``). Built-ins are
imported only when chosen (``import cjkrag`` loads no client library). A built-in name cannot be shadowed by
an entry point: what ``milvus`` means never depends on which packages happen to be installed.

``store.keyword_backend: elasticsearch`` wraps the chosen store in
:class:`cjkrag.connectors.paired.PairedStore` (dense side in the backend, keyword side in Elasticsearch).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from cjkrag.errors import ConfigError

if TYPE_CHECKING:
    from cjkrag.config import Config
    from cjkrag.connectors.protocol import VectorStore

log = logging.getLogger("cjkrag.registry")

GROUP = "cjkrag.stores"

StoreFactory = Callable[["Config"], "VectorStore"]

#: built-in backend -> "module:function" (imported lazily)
BUILTINS: dict[str, str] = {
    "milvus": "cjkrag.connectors.milvus.factory:from_config",
    "qdrant": "cjkrag.connectors.qdrant.store:from_config",
    "weaviate": "cjkrag.connectors.weaviate.store:from_config",
    "elasticsearch": "cjkrag.connectors.elasticsearch.store:from_config",
}


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    try:
        found = importlib.metadata.entry_points(group=GROUP)
    except Exception as exc:  # a broken distribution's metadata must not take the built-ins down
        log.warning("cannot read the %s entry points: %s", GROUP, exc)
        return {}
    return {ep.name: ep for ep in found if ep.name not in BUILTINS}


def known_backends() -> list[str]:
    """Every backend name ``store.backend`` accepts here: the built-ins, then installed plugins."""
    return [*BUILTINS, *sorted(_entry_points())]


def _load(target: str) -> Any:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def factory(backend: str) -> StoreFactory:
    """The factory of ``backend``; ConfigError listing the known backends for an unknown name."""
    if backend in BUILTINS:
        return cast(StoreFactory, _load(BUILTINS[backend]))
    plugins = _entry_points()
    if backend in plugins:
        try:
            return cast(StoreFactory, plugins[backend].load())
        except Exception as exc:
            raise ConfigError(
                f"store.backend {backend!r}: the plugin {plugins[backend].value!r} cannot be loaded ({exc}); "
                "reinstall the package that provides it"
            ) from exc
    raise ConfigError(
        f"store.backend {backend!r} is not a known backend: choose one of {', '.join(known_backends())}, "
        f"or install a package registering it under the {GROUP!r} entry-point group"
    )


def create_store(config: Config) -> VectorStore:
    """The configured store (paired with Elasticsearch for keywords when ``store.keyword_backend`` says so)."""
    store = factory(config.store.backend)(config)
    keyword_backend = config.store.keyword_backend
    if keyword_backend is not None:
        if keyword_backend == config.store.backend:
            raise ConfigError(
                f"store.keyword_backend {keyword_backend!r} is the same as store.backend: remove keyword_backend"
            )
        from cjkrag.connectors.paired import PairedStore

        store = PairedStore(store, factory(keyword_backend)(config))
    return store


def open_store(config: Config) -> VectorStore:
    """:func:`create_store` then ``warm_up()`` (connect now: StoreUnavailable names the URI)."""
    store = create_store(config)
    store.warm_up()
    return store


def secret_from_env(var: str | None, what: str) -> str | None:
    """A credential from the environment variable ``var`` (credentials are never read from config files).

    The value is returned to the caller only; it is never logged or put into an error message.
    """
    if not var:
        return None
    value = os.environ.get(var)
    if value is not None and not value.strip():
        raise ConfigError(f"{what}: environment variable {var} is set but empty: unset it or give the secret")
    return value
