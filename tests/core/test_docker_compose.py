"""Checks of the Docker deployment: docker-compose.yaml, Dockerfile and .env.example.

No Docker engine is needed: the compose file is parsed with PyYAML (which resolves
the anchors and `<<` merge keys), `${VAR}` substitutions are resolved the way
Compose does, and the Dockerfile is read instruction by instruction. Only the
last test needs more: it runs airflow-init's warehouse set-up against a real
PostgreSQL server (WINBACK_TEST_PG_URL).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import uuid
from pathlib import Path, PurePosixPath
from urllib.parse import quote, unquote, urlsplit

import pytest
import yaml
from conftest import REPO
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

COMPOSE_FILE = REPO / "docker-compose.yaml"
ENV_EXAMPLE = REPO / ".env.example"

AIRFLOW_SERVICES = (
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-worker",
    "airflow-triggerer",
    "airflow-init",
)
REQUIRED_SERVICES = (*AIRFLOW_SERVICES, "postgres", "redis")

# Repository directories every Airflow container needs, and where.
REPO_MOUNTS = {
    "dags": "/opt/airflow/dags",
    "plugins": "/opt/airflow/plugins",
    "include": "/opt/airflow/include",
    "data": "/opt/airflow/data",
}
# Created on the first start (by Docker or airflow-init), not kept in git.
CREATED_AT_RUN_TIME = {"data"}

# Environment keys whose values are secrets.
SECRET_KEY = re.compile(r"PASSWORD|SECRET|FERNET_KEY|TOKEN|^AIRFLOW_CONN_", re.IGNORECASE)
# Environment keys whose values are URLs that may carry a password.
URL_KEYS = (
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "AIRFLOW__CELERY__RESULT_BACKEND",
    "AIRFLOW__CELERY__BROKER_URL",
    "WINBACK_WAREHOUSE_URL",
)

# ---------------------------------------------------------------------------
# Compose-style variable substitution
# ---------------------------------------------------------------------------

_SUBSTITUTION = re.compile(
    r"\$(?:"
    r"(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*)"
    r")"
)


class MissingRequiredVariable(Exception):
    pass


def _substitutions(text: str):
    """(name, operator) of every substitution in text; `$$` is an escaped dollar."""
    for match in _SUBSTITUTION.finditer(text):
        if match["escaped"]:
            continue
        yield (match["braced"] or match["named"]), match["op"]


def interpolate(text: str, env: dict[str, str]) -> str:
    """Resolve ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err}, ${VAR?err},
    ${VAR:+alt}, ${VAR+alt}, $VAR and $$ as Docker Compose does."""

    def replace(match: re.Match) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["named"]
        op, arg = match["op"], match["arg"]
        value = env.get(name)
        if op is None:
            return value or ""
        if op == ":-":
            return value if value else arg
        if op == "-":
            return value if value is not None else arg
        if op in (":?", "?"):
            if value is None or (op == ":?" and value == ""):
                raise MissingRequiredVariable(f"{name}: {arg}")
            return value
        if op == ":+":
            return arg if value else ""
        return arg if value is not None else ""  # "+"

    return _SUBSTITUTION.sub(replace, text)


def _strings(node):
    """Every string (keys included) in a parsed YAML tree."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(key)
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)


def _map_strings(node, func):
    if isinstance(node, str):
        return func(node)
    if isinstance(node, dict):
        return {_map_strings(k, func): _map_strings(v, func) for k, v in node.items()}
    if isinstance(node, list):
        return [_map_strings(item, func) for item in node]
    return node


def parse_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a Compose .env file; comments and blank lines skipped."""
    values = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, sep, value = line.partition("=")
        assert sep and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key), (
            f"{path.name}:{number}: not a KEY=VALUE line: {line!r}"
        )
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        else:
            value = re.sub(r"\s+#.*$", "", value)
        values[key] = value
    return values


# ---------------------------------------------------------------------------
# Fixtures and helpers
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def raw_compose() -> dict:
    """docker-compose.yaml as written: anchors and merge keys resolved, ${VAR} not."""
    assert COMPOSE_FILE.is_file(), "docker-compose.yaml is missing"
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    assert ENV_EXAMPLE.is_file(), ".env.example is missing"
    return parse_env_file(ENV_EXAMPLE)


@pytest.fixture(scope="module")
def filled_env(env_example) -> dict[str, str]:
    """.env.example as a user would fill it in: blank secrets get (URL-safe) values."""
    return {k: v or f"filled-in-{k.lower().replace('_', '-')}" for k, v in env_example.items()}


@pytest.fixture(scope="module")
def compose(raw_compose, filled_env) -> dict:
    """The compose file as Compose would run it with a filled-in .env."""
    return _map_strings(raw_compose, lambda s: interpolate(s, filled_env))


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def airflow_services(services: dict) -> list[str]:
    return sorted(set(AIRFLOW_SERVICES) | {n for n in services if n.startswith("airflow-")})


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return {k: (None if v is None else str(v)) for k, v in env.items()}


def bind_mounts(service: dict) -> list[tuple[str, str]]:
    """(host path, container path) of the service's bind mounts."""
    mounts = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            if volume.get("type") == "bind":
                mounts.append((volume["source"], volume["target"]))
            continue
        parts = volume.split(":")
        if len(parts) >= 2 and (parts[0].startswith((".", "/", "~"))):
            mounts.append((parts[0], parts[1]))
    return mounts


def host_path(source: str) -> Path:
    """A bind mount's host path; relative ones resolve against the compose file's directory."""
    path = Path(os.path.expanduser(source))
    return (path if path.is_absolute() else COMPOSE_FILE.parent / path).resolve()


def container_to_host(service: dict, container_path: str) -> Path | None:
    """Map a path inside the container back to the repository through the bind mounts."""
    target = PurePosixPath(container_path)
    best = None
    for source, mount_target in bind_mounts(service):
        mount = PurePosixPath(mount_target)
        if (target == mount or mount in target.parents) and (best is None or len(mount.parts) > len(best[1].parts)):
            best = (source, mount)
    if best is None:
        return None
    return host_path(best[0]) / target.relative_to(best[1])


def depends_on(service: dict) -> dict[str, dict]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: {"condition": "service_started"} for name in deps}
    return {name: (cond or {"condition": "service_started"}) for name, cond in deps.items()}


def requirement_pin(path: Path, name: str) -> str:
    """The ==version pinned for `name` in a requirements/constraints file."""
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        req = Requirement(line)
        if req.name.lower().replace("_", "-") == name:
            pins = [s.version for s in req.specifier if s.operator == "=="]
            assert pins, f"{path.name} does not pin {name} with =="
            return pins[0]
    raise AssertionError(f"{path.name} has no {name} requirement")


def dockerfile_path(service: dict) -> Path:
    build = service["build"]
    if isinstance(build, str):
        build = {"context": build}
    context = host_path(build.get("context", "."))
    return context / build.get("dockerfile", "Dockerfile")


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with line continuations joined."""
    instructions, current = [], ""
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        if current:
            keyword, _, args = current.partition(" ")
            instructions.append((keyword.upper(), args.strip()))
        current = ""
    return instructions


def base_image(path: Path) -> tuple[str, str]:
    """(image, tag) of the final FROM, with ARG defaults declared before it substituted."""
    args, image = {}, None
    for keyword, rest in dockerfile_instructions(path):
        if keyword == "ARG":
            name, _, default = rest.partition("=")
            args[name.strip()] = default.strip().strip("\"'")
        elif keyword == "FROM":
            words = [w for w in rest.split() if not w.startswith("--")]
            image = interpolate(words[0], args)
    assert image, f"{path.name} has no FROM"
    name, _, tag = image.partition(":")
    return name, tag


@pytest.fixture(scope="module")
def dockerfile(services) -> Path:
    service = services.get("airflow-apiserver") or {}
    if "build" not in service:
        pytest.fail("airflow-apiserver does not build an image, so there is no Dockerfile to check")
    path = dockerfile_path(service)
    assert path.is_file(), f"{path} is missing"
    return path


# ---------------------------------------------------------------------------
# Services and image
# ---------------------------------------------------------------------------


def test_compose_defines_every_service_of_the_celery_airflow_stack(services):
    missing = [name for name in REQUIRED_SERVICES if name not in services]
    assert not missing, f"docker-compose.yaml lacks services: {missing}"
    commands = {
        "airflow-apiserver": "api-server",
        "airflow-scheduler": "scheduler",
        "airflow-dag-processor": "dag-processor",
        "airflow-worker": "celery worker",
        "airflow-triggerer": "triggerer",
    }
    for name, command in commands.items():
        actual = services[name].get("command")
        actual = " ".join(actual) if isinstance(actual, list) else actual
        assert actual == command, f"{name} runs {actual!r}, expected {command!r}"


def test_every_airflow_service_runs_the_image_built_from_the_repo_dockerfile(services):
    images = set()
    for name in airflow_services(services):
        service = services[name]
        assert "build" in service, f"{name} does not build the repository's image"
        path = dockerfile_path(service)
        assert path.parent == REPO, f"{name} builds from {path.parent}, not the repository root"
        assert path.is_file(), f"{name} builds from {path}, which does not exist"
        images.add(service.get("image"))
        pip_extra = environment(service).get("_PIP_ADDITIONAL_REQUIREMENTS")
        assert not pip_extra, f"{name} installs packages at start-up: {pip_extra!r}"
    # One image name for all of them, so `docker compose build` builds it once
    # and no service falls back to a stock image.
    assert len(images) == 1, f"Airflow services use different images: {images}"


def test_dockerfile_extends_the_official_image_of_the_airflow_version_pinned_in_requirements(
    dockerfile,
):
    image, tag = base_image(dockerfile)
    assert image == "apache/airflow", f"Dockerfile starts FROM {image}, not apache/airflow"
    pinned = requirement_pin(REPO / "requirements.txt", "apache-airflow")
    assert tag.split("-")[0] == pinned, (
        f"base image apache/airflow:{tag} but requirements.txt pins apache-airflow=={pinned}"
    )
    locked = requirement_pin(REPO / "constraints.txt", "apache-airflow")
    assert locked == pinned, f"constraints.txt locks apache-airflow=={locked}, not {pinned}"


def test_dockerfile_installs_requirements_with_the_constraints_lock_as_the_airflow_user(
    dockerfile,
):
    copied: dict[str, str] = {}  # basename -> path in the image
    user = None
    installs = []
    for keyword, rest in dockerfile_instructions(dockerfile):
        if keyword == "USER":
            user = rest.split(":")[0]
        elif keyword in ("COPY", "ADD"):
            words = [w for w in shlex.split(rest) if not w.startswith("--")]
            *sources, destination = words
            for source in sources:
                name = PurePosixPath(source).name
                dest = PurePosixPath(destination)
                copied[name] = str(dest / name if destination.endswith("/") else dest)
        elif keyword == "RUN" and re.search(r"\bpip\b.*\binstall\b", rest):
            installs.append((rest, user, dict(copied)))
    assert installs, "the Dockerfile never runs pip install"
    for command, user, copied_then in installs:
        words = shlex.split(command)
        files = {}
        for i, word in enumerate(words[:-1]):
            if word in ("-r", "--requirement"):
                files.setdefault("requirements", words[i + 1])
            elif word in ("-c", "--constraint"):
                files.setdefault("constraints", words[i + 1])
        if "requirements" not in files:
            continue
        assert PurePosixPath(files["requirements"]).name == "requirements.txt"
        assert "constraints" in files, f"pip install without -c constraints.txt: {command}"
        assert PurePosixPath(files["constraints"]).name == "constraints.txt"
        for path in files.values():
            name = PurePosixPath(path).name
            assert name in copied_then, f"{name} is installed before it is copied into the image"
            workdir_relative = not path.startswith("/")
            assert workdir_relative or copied_then[name] == path, (
                f"pip reads {path} but {name} was copied to {copied_then[name]}"
            )
        assert user == "airflow", f"pip install runs as {user or 'the default user'}, not airflow"
        assert "--no-cache-dir" in words, "pip install should not keep its cache in the image"
        return
    raise AssertionError("no pip install -r requirements.txt in the Dockerfile")


def test_docker_image_python_version_satisfies_requires_python(dockerfile):
    _, tag = base_image(dockerfile)
    match = re.search(r"-python(\d+\.\d+)$", tag)
    assert match, f"base image tag {tag!r} does not name its Python (…-pythonX.Y)"
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    requires = pyproject["project"]["requires-python"]
    assert SpecifierSet(requires).contains(match[1]), (
        f"image has Python {match[1]} but pyproject.toml requires-python is {requires!r}"
    )


# ---------------------------------------------------------------------------
# Mounts and Winback settings
# ---------------------------------------------------------------------------


def test_every_airflow_service_mounts_dags_plugins_include_and_data_from_the_repo(services):
    for name in airflow_services(services):
        mounts = {target: source for source, target in bind_mounts(services[name])}
        for directory, target in REPO_MOUNTS.items():
            assert target in mounts, f"{name} does not mount ./{directory} at {target}"
            source = host_path(mounts[target])
            assert source == REPO / directory, f"{name} mounts {source} at {target}"
            if directory not in CREATED_AT_RUN_TIME:
                assert source.is_dir(), f"{name} mounts {source}, which is not in the repository"
        for target in ("/opt/airflow/logs", "/opt/airflow/config"):
            assert target in mounts, f"{name} does not mount a host directory at {target}"


def test_winback_config_points_to_the_repo_config_file_through_a_mount(services):
    for name in airflow_services(services):
        service = services[name]
        config = environment(service).get("WINBACK_CONFIG")
        assert config, f"{name} does not set WINBACK_CONFIG"
        assert config.startswith("/"), f"{name}: WINBACK_CONFIG={config} is not absolute"
        on_host = container_to_host(service, config)
        assert on_host is not None, f"{name}: WINBACK_CONFIG={config} is not in a mounted directory"
        assert on_host.is_file(), f"{name}: WINBACK_CONFIG={config} is {on_host}, which does not exist"
        assert REPO in on_host.parents, f"{name}: WINBACK_CONFIG={config} is outside the repository"


def test_winback_home_puts_relative_data_paths_into_the_mounted_data_dir(services):
    for name in airflow_services(services):
        service = services[name]
        home = environment(service).get("WINBACK_HOME")
        assert home, f"{name} does not set WINBACK_HOME"
        assert home.startswith("/"), f"{name}: WINBACK_HOME={home} is not absolute"
        # Config paths such as data/shop/*.csv must land in ./data on the host.
        resolved = container_to_host(service, str(PurePosixPath(home) / "data/shop"))
        assert resolved == REPO / "data" / "shop", (
            f"{name}: with WINBACK_HOME={home}, data/shop is {resolved}, not ./data/shop"
        )


def test_warehouse_url_points_at_the_postgres_service_but_not_the_airflow_database(services):
    for name in airflow_services(services):
        env = environment(services[name])
        url = env.get("WINBACK_WAREHOUSE_URL")
        assert url, f"{name} does not set WINBACK_WAREHOUSE_URL"
        warehouse = urlsplit(url)
        assert warehouse.scheme.startswith("postgresql"), f"{name}: warehouse is {url}"
        assert warehouse.hostname == "postgres" and "postgres" in services, (
            f"{name}: warehouse host is {warehouse.hostname}, not the postgres service"
        )
        metadata = urlsplit(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
        assert metadata.hostname == "postgres"
        warehouse_db = warehouse.path.lstrip("/")
        assert warehouse_db, f"{name}: warehouse URL names no database"
        assert warehouse_db != metadata.path.lstrip("/"), (
            f"{name}: the warehouse shares Airflow's metadata database {warehouse_db!r}"
        )


def test_airflow_init_migrates_the_metadata_db_and_creates_the_warehouse_database(services):
    init = services["airflow-init"]
    env = environment(init)
    command = init.get("command")
    command = "\n".join(command) if isinstance(command, list) else str(command)
    migrates = env.get("_AIRFLOW_DB_MIGRATE") == "true" or "airflow db migrate" in command
    assert migrates, "airflow-init does not migrate the metadata database"
    assert env.get("_AIRFLOW_WWW_USER_CREATE") == "true", "airflow-init creates no admin user"
    assert "CREATE DATABASE" in command, "airflow-init does not create the warehouse database"
    assert re.search(r"python -m winback pools > (\S+)\n\s*/entrypoint airflow pools import \1", command), (
        "airflow-init does not create the sync's pools")
    _warehouse_setup_script(command)  # the set-up script is where the next test expects it


# ---------------------------------------------------------------------------
# Executor, broker and shared configuration
# ---------------------------------------------------------------------------


def test_executor_is_celery_with_redis_broker_and_postgres_result_backend(services):
    for name in airflow_services(services):
        env = environment(services[name])
        assert env.get("AIRFLOW__CORE__EXECUTOR") == "CeleryExecutor", name
        broker = urlsplit(env.get("AIRFLOW__CELERY__BROKER_URL", ""))
        assert broker.scheme == "redis" and broker.hostname == "redis", (
            f"{name}: broker is {env.get('AIRFLOW__CELERY__BROKER_URL')}, not the redis service"
        )
        backend = urlsplit(env.get("AIRFLOW__CELERY__RESULT_BACKEND", ""))
        assert backend.scheme.startswith("db+postgresql") and backend.hostname == "postgres", (
            f"{name}: result backend is {env.get('AIRFLOW__CELERY__RESULT_BACKEND')}"
        )
        assert "redis" in services and "postgres" in services


def test_all_airflow_services_share_the_same_airflow_and_winback_settings(services):
    shared = (
        "AIRFLOW__CORE__EXECUTOR",
        "AIRFLOW__CORE__AUTH_MANAGER",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "AIRFLOW__CELERY__RESULT_BACKEND",
        "AIRFLOW__CELERY__BROKER_URL",
        "AIRFLOW__CORE__FERNET_KEY",
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
        "AIRFLOW__CORE__LOAD_EXAMPLES",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION",
        "WINBACK_CONFIG",
        "WINBACK_HOME",
        "WINBACK_WAREHOUSE_URL",
    )
    names = airflow_services(services)
    reference = environment(services[names[0]])
    for key in shared:
        assert reference.get(key), f"{names[0]} does not set {key}"
        for name in names[1:]:
            assert environment(services[name]).get(key) == reference[key], (
                f"{name} and {names[0]} disagree on {key}"
            )
    assert reference["AIRFLOW__CORE__LOAD_EXAMPLES"].lower() == "false"
    execution_api = urlsplit(reference["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    assert execution_api.hostname == "airflow-apiserver" and execution_api.port == 8080
    assert execution_api.path == "/execution/"


# ---------------------------------------------------------------------------
# Variables and secrets
# ---------------------------------------------------------------------------


def test_compose_file_uses_only_valid_substitutions(raw_compose):
    # A lone $ (e.g. an unescaped shell $(...) in a command) makes Compose fail
    # with "invalid interpolation format"; shell dollars must be written $$.
    for text in _strings(raw_compose):
        leftover = _SUBSTITUTION.sub("", text)
        assert "$" not in leftover, f"invalid or unescaped $ in: {text[:200]!r}"


def test_every_variable_the_compose_file_reads_is_defined_in_env_example(
    raw_compose, env_example
):
    used = {name for text in _strings(raw_compose) for name, _ in _substitutions(text)}
    assert used, "the compose file reads no variables from .env"
    missing = sorted(used - set(env_example))
    assert not missing, f".env.example does not define {missing}"


def test_env_example_defines_no_variable_the_compose_file_does_not_read(
    raw_compose, env_example
):
    used = {name for text in _strings(raw_compose) for name, _ in _substitutions(text)}
    unused = sorted(k for k in env_example if k not in used and not k.startswith("COMPOSE_"))
    assert not unused, f".env.example defines variables docker-compose.yaml never reads: {unused}"


def _secret_positions(raw_compose) -> list[tuple[str, str, str]]:
    """(service, key, raw value) of every secret-bearing environment entry."""
    found = []
    for name, service in raw_compose["services"].items():
        for key, value in environment(service).items():
            if value is None:
                continue
            if SECRET_KEY.search(key) or key in URL_KEYS or key in ("POSTGRES_PASSWORD",):
                found.append((name, key, value))
    return found


def test_no_secret_is_written_literally_in_the_compose_file(raw_compose):
    positions = _secret_positions(raw_compose)
    assert positions
    # Give each variable a recognisable value; a secret position must resolve
    # to exactly such a value (or, for a URL, have exactly such a password).
    names = {n for text in _strings(raw_compose) for n, _ in _substitutions(text)}
    marker_env = {n: f"from-env-{n.lower()}" for n in names}
    secret_vars = set()
    for service, key, raw in positions:
        value = interpolate(raw, marker_env)
        if key in URL_KEYS:
            password = urlsplit(value).password
            if password:  # redis://:@redis has none, which is not a secret
                assert unquote(password) in marker_env.values(), (
                    f"{service}: {key} has a literal password"
                )
                secret_vars |= {n for n in names if marker_env[n] == unquote(password)}
        else:
            assert value in marker_env.values(), f"{service}: {key} is a literal, not ${{VAR}}"
            secret_vars |= {n for n in names if marker_env[n] == value}
    assert {"AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET"} <= {
        key for _, key, _ in positions
    }
    # A secret must not fall back to a default written in the file: require it.
    for text in _strings(raw_compose):
        for name, op in _substitutions(text):
            if name in secret_vars:
                assert op in (":?", "?"), (
                    f"secret ${{{name}}} is not required (use ${{{name}:?message}}): {text[:120]!r}"
                )


def test_unedited_env_example_refuses_to_start_until_secrets_are_filled_in(
    raw_compose, env_example
):
    blank = {k for k, v in env_example.items() if not v}
    for required in ("POSTGRES_PASSWORD", "AIRFLOW_FERNET_KEY", "AIRFLOW_JWT_SECRET"):
        assert required in blank, f".env.example ships a value for the secret {required}"
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    assert "AIRFLOW_CONN_SHOP_API" in text, "the compose file lacks the connection example"
    with pytest.raises(MissingRequiredVariable):
        _map_strings(raw_compose, lambda s: interpolate(s, env_example))
    comments = ENV_EXAMPLE.read_text(encoding="utf-8")
    assert "Fernet.generate_key()" in comments, ".env.example does not say how to make the Fernet key"
    assert "openssl rand -hex 32" in comments, ".env.example does not say how to make the JWT secret"


# ---------------------------------------------------------------------------
# Start-up order and health
# ---------------------------------------------------------------------------


def test_depends_on_names_only_existing_services_with_usable_conditions(services):
    for name, service in services.items():
        for dependency, spec in depends_on(service).items():
            assert dependency in services, f"{name} depends on unknown service {dependency}"
            assert dependency != name
            condition = spec.get("condition", "service_started")
            if condition == "service_healthy":
                assert services[dependency].get("healthcheck"), (
                    f"{name} waits for {dependency} to be healthy, but it has no healthcheck"
                )
            elif condition == "service_completed_successfully":
                assert services[dependency].get("restart") in (None, "no"), (
                    f"{name} waits for {dependency} to finish, but it restarts forever"
                )
            else:
                assert condition == "service_started", f"{name}: unknown condition {condition}"
    for name in airflow_services(services):
        if name in ("airflow-init", "airflow-cli"):
            continue
        deps = depends_on(services[name])
        assert deps.get("airflow-init", {}).get("condition") == "service_completed_successfully", (
            f"{name} may start before airflow-init has migrated the database"
        )
        for backing in ("postgres", "redis"):
            assert deps.get(backing, {}).get("condition") == "service_healthy", (
                f"{name} does not wait for {backing} to be healthy"
            )


def test_postgres_redis_and_api_server_have_healthchecks(services):
    for name in ("postgres", "redis", "airflow-apiserver"):
        check = services[name].get("healthcheck") or {}
        test = check.get("test")
        assert test and not check.get("disable"), f"{name} has no healthcheck"
    api_check = services["airflow-apiserver"]["healthcheck"]["test"]
    api_check = " ".join(api_check) if isinstance(api_check, list) else api_check
    assert "localhost:8080/api/v2/version" in api_check
    ports = [str(p) for p in services["airflow-apiserver"].get("ports", [])]
    assert any(p.endswith(":8080") for p in ports), f"the API server publishes no port: {ports}"


def test_compose_cli_accepts_the_file_when_available(tmp_path, filled_env):
    """`docker compose config` (no engine needed) where a Compose CLI is installed."""
    if shutil.which("docker") and subprocess.run(
        ["docker", "compose", "version"], capture_output=True, check=False
    ).returncode == 0:
        cli = ["docker", "compose"]
    elif shutil.which("docker-compose"):
        cli = ["docker-compose"]
    else:
        pytest.skip("no Docker Compose CLI installed")
    env_file = tmp_path / ".env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in filled_env.items()))
    env = {k: v for k, v in os.environ.items() if k not in filled_env}
    result = subprocess.run(
        [*cli, "--project-directory", str(REPO), "--env-file", str(env_file),
         "-f", str(COMPOSE_FILE), "config", "-q"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------------------
# airflow-init's warehouse set-up against a real PostgreSQL server
# ---------------------------------------------------------------------------


def _warehouse_setup_script(command: str) -> str:
    """The Python heredoc (python - <<'PY' ... PY) in airflow-init's command."""
    match = re.search(r"python3? - <<'PY'\n(.*?)\nPY(?:\n|$)", command, re.DOTALL)
    assert match, "airflow-init has no `python - <<'PY' ... PY` warehouse set-up"
    return match[1]


@pytest.mark.postgres
def test_airflow_init_creates_the_warehouse_role_and_database_idempotently(services):
    from conftest import postgres_or_fail

    url = postgres_or_fail()  # fails under CI=true when the server is unreachable
    import psycopg
    from sqlalchemy.engine import make_url

    init = services["airflow-init"]
    command = init["command"]
    script = _warehouse_setup_script("\n".join(command) if isinstance(command, list) else command)

    admin = make_url(url)
    suffix = uuid.uuid4().hex[:8]
    role, database = f"winback_test_{suffix}", f"warehouse_test_{suffix}"
    password = "it's-a-test"  # a quote, to prove the password is quoted safely
    netloc = admin.host or ""
    if admin.port:
        netloc += f":{admin.port}"
    warehouse_url = (
        f"postgresql+psycopg://{role}:{quote(password, safe='')}@{netloc}/{database}"
    )
    env = {
        **os.environ,
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": url,
        "WINBACK_WAREHOUSE_URL": warehouse_url,
    }
    connect = {
        "host": admin.host, "port": admin.port or 5432, "user": admin.username,
        "password": admin.password, "dbname": admin.database, "autocommit": True,
    }
    try:
        first = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120, check=False
        )
        assert first.returncode == 0, first.stderr
        assert f"created database {database}" in first.stdout
        second = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120, check=False
        )
        assert second.returncode == 0, second.stderr
        assert "already exists" in second.stdout
        with psycopg.connect(**connect) as conn:
            owner, can_login = conn.execute(
                "SELECT r.rolname, r.rolcanlogin FROM pg_database d "
                "JOIN pg_roles r ON r.oid = d.datdba WHERE d.datname = %s",
                (database,),
            ).fetchone()
        assert (owner, can_login) == (role, True)
        # The warehouse role can create tables in its database.
        with psycopg.connect(**{**connect, "user": role, "password": password,
                                "dbname": database}) as conn:
            conn.execute("CREATE TABLE winback_probe (id int)")
    finally:
        with psycopg.connect(**connect) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}"')
            conn.execute(f'DROP ROLE IF EXISTS "{role}"')
