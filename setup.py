"""Install the top-level code folders as subpackages of the one import package ``cjkrag``.

``cjkrag/`` -> ``cjkrag``; ``pipeline/`` -> ``cjkrag.pipeline``; ``connectors/`` -> ``cjkrag.connectors``;
``ingest/`` -> ``cjkrag.ingest``; ``configs/`` -> ``cjkrag.configs`` (packaged YAML defaults).
Everything else (metadata, extras, tools) is in pyproject.toml.
"""

from setuptools import find_packages, setup

FOLDERS = ("pipeline", "connectors", "ingest", "configs")


def _mapped(folder: str) -> list[str]:
    return [f"cjkrag.{folder}"] + [f"cjkrag.{folder}.{sub}" for sub in find_packages(folder)]


setup(
    package_dir={"cjkrag": "cjkrag", **{f"cjkrag.{f}": f for f in FOLDERS}},
    packages=["cjkrag", *[p for f in FOLDERS for p in _mapped(f)]],
    package_data={"cjkrag.configs": ["*.yaml"], "cjkrag": ["py.typed"]},
)
