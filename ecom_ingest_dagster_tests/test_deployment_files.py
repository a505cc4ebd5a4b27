"""The deployment files agree with each other and with the code.

docker-compose.yml is validated by the real ``docker-compose config`` (no Docker engine
needed); infra/Dockerfile, .env.example, .dockerignore, the compose workspace, the
PostgreSQL instance configuration, the init script and spark-defaults.conf are checked
statically. Fast: no container is built or started.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from ecom_ingest_dagster.settings import ENV_PREFIX, Settings, env_name

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "infra" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
ENV_EXAMPLE = ROOT / ".env.example"
WORKSPACE = ROOT / "infra" / "workspace.docker.yaml"
INSTANCE = ROOT / "infra" / "dagster.yaml"
INIT_DIR = ROOT / "infra" / "postgres" / "init"
SPARK_DEFAULTS = ROOT / "infra" / "spark" / "spark-defaults.conf"
OPERATIONS = ROOT / "docs" / "operations.md"

SERVICES = {"postgres", "dagster-code", "dagster-webserver", "dagster-daemon", "spark-master", "spark-worker"}
DAGSTER_SERVICES = ("dagster-code", "dagster-webserver", "dagster-daemon")
SPARK_SERVICES = ("spark-master", "spark-worker")
# Where the shared state volume must be mounted: the driver, the executors, the sensor.
STATE_MOUNTERS = ("dagster-code", "spark-worker", "dagster-daemon")
TEST_PASSWORD = "Placeholder-For-Tests-0"
# Values that stand for a secret without being one.
PLACEHOLDER = re.compile(r"^(|<[^>]*>|\*+|change[-_]?me|\$\{[A-Za-z0-9_]+(:[-?][^}]*)?\}|\$[A-Za-z_][A-Za-z0-9_]*)$", re.I)
SECRET_KEY = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY|PASSWD", re.I)
URL_CREDENTIALS = re.compile(r"[a-z][a-z0-9+.-]*://[^\s:/@'\"]+:([^\s@'\"]+)@", re.I)


# -- helpers ---------------------------------------------------------------------------


def _compose_command() -> list[str] | None:
    exe = shutil.which("docker-compose")
    if exe:
        return [exe]
    docker = shutil.which("docker")  # Compose v2 as a docker CLI plugin
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    return None


def _env_file_values(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path.name}: not KEY=value: {line!r}"
            values[key.strip()] = value.strip()
    return values


def _run_config(tmp_path: Path, env_values: dict[str, str], *, json_format: bool = False):
    """``docker-compose config`` with exactly ``env_values`` (not the developer's .env)."""
    command = _compose_command()
    if command is None:
        pytest.skip("no docker-compose binary (Debian: apt-get install docker-compose)")
    env_file = tmp_path / "compose.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env_values.items()))
    args = [*command, "--env-file", str(env_file), "--project-directory", str(ROOT), "-f", str(COMPOSE), "config"]
    if json_format:
        args += ["--format", "json"]
    # A clean environment: variables of the shell would win over the env file.
    environ = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path), "LC_ALL": "C.UTF-8"}
    return subprocess.run(args, cwd=ROOT, env=environ, capture_output=True, text=True, timeout=60)


def _supports_json(command: list[str]) -> bool:
    help_text = subprocess.run([*command, "config", "--help"], capture_output=True, text=True).stdout
    return "--format" in help_text


def _mounts(service: dict) -> dict[str, str]:
    """target -> source of a service's volumes, in either short or long syntax."""
    mounts = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume.get("source", ""), volume["target"]
        mounts[target] = source
    return mounts


def _environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def _published_targets(service: dict) -> set[int]:
    targets = set()
    for port in service.get("ports", []):
        if isinstance(port, dict):
            targets.add(int(port["target"]))
        else:
            targets.add(int(str(port).rsplit(":", 1)[-1].split("/")[0]))
    return targets


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    logical, current = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    return [(parts[0].upper(), parts[1] if len(parts) > 1 else "") for parts in (ln.split(None, 1) for ln in logical)]


def _dockerfile_env() -> dict[str, str]:
    env = {}
    for instruction, args in _dockerfile_instructions():
        if instruction == "ENV":
            for token in shlex.split(args):
                key, _, value = token.partition("=")
                env[key] = value
    return env


def _readme_variables() -> set[str]:
    return set(re.findall(r"^\|\s*`(ECOM_INGEST_[A-Z0-9_]+)`", (ROOT / "README.md").read_text(), re.M))


def _code_variables() -> tuple[set[str], set[str]]:
    """ECOM_INGEST_* names the package reads: (complete names, prefixes); all are Settings fields."""
    return {env_name(name) for name in Settings.model_fields}, set()


def _instance_pg_url_variable() -> str:
    return yaml.safe_load(INSTANCE.read_text())["storage"]["postgres"]["postgres_url"]["env"]


# -- docker-compose config -------------------------------------------------------------


@pytest.fixture(scope="module")
def compose(tmp_path_factory) -> dict:
    """The configuration as docker-compose resolves it from .env.example plus a password."""
    values = _env_file_values(ENV_EXAMPLE)
    values["POSTGRES_PASSWORD"] = TEST_PASSWORD
    tmp_path = tmp_path_factory.mktemp("compose")
    command = _compose_command()
    json_format = command is not None and _supports_json(command)
    result = _run_config(tmp_path, values, json_format=json_format)
    assert result.returncode == 0, f"docker-compose config failed:\n{result.stderr}"
    return json.loads(result.stdout) if json_format else yaml.safe_load(result.stdout)


def test_compose_config_has_the_services(compose):
    assert set(compose["services"]) == SERVICES


def test_every_service_has_a_healthcheck(compose):
    for name, service in compose["services"].items():
        check = service.get("healthcheck") or {}
        assert not check.get("disable"), name
        test = check.get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name} has no healthcheck"


def test_services_wait_for_their_dependencies_to_be_healthy(compose):
    services = compose["services"]
    expected = {
        "spark-worker": {"spark-master"},
        "dagster-code": {"postgres", "spark-master", "spark-worker"},
        "dagster-webserver": {"postgres", "dagster-code"},
        "dagster-daemon": {"postgres", "dagster-code"},
    }
    for name, needs in expected.items():
        depends = services[name].get("depends_on") or {}
        assert isinstance(depends, dict), f"{name}: depends_on without conditions"
        assert needs <= set(depends), (name, depends)
        for dependency, spec in depends.items():
            assert spec.get("condition") == "service_healthy", (name, dependency, spec)


def test_postgres_image_volume_and_init_script(compose):
    postgres = compose["services"]["postgres"]
    assert re.fullmatch(r"postgres:15\.\d+(-[a-z0-9.]+)?(@sha256:[0-9a-f]{64})?", postgres["image"]), postgres["image"]
    mounts = _mounts(postgres)
    assert mounts["/var/lib/postgresql/data"] == "pgdata"
    assert Path(mounts["/docker-entrypoint-initdb.d"]).resolve() == INIT_DIR.resolve()
    env = _environment(postgres)
    assert env["POSTGRES_PASSWORD"] == TEST_PASSWORD
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    # sized for the primary key's btree (docs/benchmarks.md, 10M rows)
    command = postgres["command"] if isinstance(postgres["command"], list) else postgres["command"].split()
    assert command[0] == "postgres" and "shared_buffers=1GB" in command


def test_the_state_volume_is_shared_at_one_path(compose):
    services = compose["services"]
    assert {"pgdata", "ecom_ingest_state", "dagster_storage"} <= set(compose.get("volumes") or {})
    home = _environment(services["dagster-code"])["ECOM_INGEST_HOME"]
    for name in STATE_MOUNTERS:
        assert _mounts(services[name]).get(home) == "ecom_ingest_state", f"{name} does not mount the state at {home}"
    for name in DAGSTER_SERVICES:
        env = _environment(services[name])
        assert env["ECOM_INGEST_HOME"] == home
        # The landing, checkpoint and rejected directories default to paths under the volume.
        assert env["ECOM_INGEST_LANDING_DIR"].startswith(home + "/")
        assert env.get("ECOM_INGEST_CHECKPOINT_DIR", "") == "" and env.get("ECOM_INGEST_REJECTED_DIR", "") == ""
    # Runs write compute logs where the webserver reads them.
    storage = "/opt/dagster/dagster_home/storage"
    for name in DAGSTER_SERVICES:
        assert _mounts(services[name]).get(storage) == "dagster_storage", name


def test_dagster_services_environment(compose):
    pg_var = _instance_pg_url_variable()
    for name in DAGSTER_SERVICES:
        env = _environment(compose["services"][name])
        assert env["ECOM_INGEST_SPARK_MASTER"] == "spark://spark-master:7077"
        assert env["DAGSTER_HOME"] == "/opt/dagster/dagster_home"
        warehouse, dagster = env["ECOM_INGEST_DATABASE_URL"], env[pg_var]
        assert warehouse == f"postgresql://ecom:{TEST_PASSWORD}@postgres:5432/ecom", name
        assert dagster == f"postgresql://ecom:{TEST_PASSWORD}@postgres:5432/dagster", name
        # Empty values mean "the code's default"; anything set must parse.
        Settings.from_env(env)


def test_spark_services_get_no_credentials(compose):
    for name in SPARK_SERVICES:
        for key, value in _environment(compose["services"][name]).items():
            assert TEST_PASSWORD not in value, f"{name}: {key} carries the password"


def test_commands_and_ports(compose):
    services = compose["services"]
    code = services["dagster-code"]["command"]
    # The plain server: run monitoring asks it for its runs, which the code-server proxy cannot list.
    assert code[:3] == ["dagster", "api", "grpc"]
    assert "ecom_ingest_dagster.definitions" in code and code[code.index("-p") + 1] == "4000"
    assert code[code.index("-h") + 1] == "0.0.0.0"
    web = services["dagster-webserver"]["command"]
    assert web[0] == "dagster-webserver" and web[web.index("-p") + 1] == "3000"
    assert web[web.index("-w") + 1] == "/opt/dagster/workspace.yaml"
    assert 3000 in _published_targets(services["dagster-webserver"])
    assert services["dagster-daemon"]["command"][:2] == ["dagster-daemon", "run"]
    master = services["spark-master"]["command"]
    assert master[:2] == ["spark-class", "org.apache.spark.deploy.master.Master"]
    assert master[master.index("--port") + 1] == "7077"
    worker = services["spark-worker"]["command"]
    assert worker[:2] == ["spark-class", "org.apache.spark.deploy.worker.Worker"]
    spark_master = _environment(services["dagster-code"])["ECOM_INGEST_SPARK_MASTER"]
    assert spark_master in worker
    # Every application service runs the one project image (same Spark for driver and executors).
    images = {services[name]["image"] for name in SERVICES - {"postgres"}}
    assert len(images) == 1, images


def test_compose_refuses_to_start_without_a_password(tmp_path):
    values = _env_file_values(ENV_EXAMPLE)
    values.pop("POSTGRES_PASSWORD", None)
    result = _run_config(tmp_path, values)
    assert result.returncode != 0
    assert "POSTGRES_PASSWORD" in result.stderr


# -- the image ---------------------------------------------------------------------------


def test_dockerfile_installs_the_project_at_the_locks_versions():
    """The image runs what the tests ran: the project (not editable) constrained by the lock,
    and no version written anywhere but the lock."""
    instructions = _dockerfile_instructions()
    runs = " ".join(args for instruction, args in instructions if instruction == "RUN")
    installs = [shlex.split(i) for i in re.findall(r"pip3? install ([^;&|]*)", runs)]
    assert installs, "the Dockerfile installs nothing with pip"
    project = [args for args in installs if "." in args]
    assert len(project) == 1, installs
    assert "-e" not in project[0] and "--editable" not in project[0], "the image installs as a user does, not editable"
    assert project[0][project[0].index("-c") + 1] == "requirements.lock", project[0]
    for args in installs:
        for target in (t for t in args if not t.startswith("-") and t not in (".", "requirements.lock")):
            assert re.fullmatch(r"\$\(grep '\^[A-Za-z0-9_.-]+==' requirements\.lock\)", target), (
                f"pip install {target!r}: a version from the lock, not a second list"
            )
    text = DOCKERFILE.read_text()
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for dependency in dependencies:
        name = re.match(r"[A-Za-z0-9_.-]+", dependency).group(0)
        assert not re.search(rf"\b{re.escape(name)}\s*[=<>~!]=", text), f"{name} is pinned in the Dockerfile too"
    copies = [args.split() for instruction, args in instructions if instruction == "COPY"]
    assert any({"pyproject.toml", "requirements.lock"} <= set(args) for args in copies)
    # BuildKit would pull the frontend that a syntax line names: the build needs an image
    # registry then, where the package registries alone serve everything else.
    assert not re.search(r"^#\s*syntax\s*=", text, re.M | re.I)


def test_dockerfile_base_java_user_and_files():
    instructions = _dockerfile_instructions()
    bases = [args for instruction, args in instructions if instruction == "FROM"]
    assert len(bases) == 1 and re.fullmatch(
        r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", bases[0]
    ), bases
    runs = " ".join(args for instruction, args in instructions if instruction == "RUN")
    assert "openjdk-17-jre-headless" in runs
    users = [args for instruction, args in instructions if instruction == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    env = _dockerfile_env()
    copies = {}
    for instruction, args in instructions:
        if instruction == "COPY" and not args.startswith("--"):
            *sources, destination = args.split()
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"
                copies[source] = destination
    assert copies["infra/dagster.yaml"] == env["DAGSTER_HOME"] + "/dagster.yaml"
    assert copies["infra/workspace.docker.yaml"] == "/opt/dagster/workspace.yaml"
    assert copies["infra/spark/spark-defaults.conf"] == env["SPARK_CONF_DIR"] + "/spark-defaults.conf"


def test_image_tags_are_pinned():
    images = re.findall(r"^\s*image:\s*(\S+)", COMPOSE.read_text(), re.M)
    images += [args.split()[0] for instruction, args in _dockerfile_instructions() if instruction == "FROM"]
    assert images
    for image in images:
        if image.startswith("${"):  # the project's own image, built here
            continue
        name, _, tag = image.partition("@")[0].rpartition(":")
        assert name and tag and tag != "latest" and re.search(r"\d+\.\d+", tag), f"{image} is not pinned"


def test_dockerignore_keeps_secrets_and_state_out_of_the_context():
    patterns = [
        line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "allow-list: exclude everything, then re-include what the image needs"
    included = {p[1:].strip("/") for p in patterns if p.startswith("!")}
    assert {"pyproject.toml", "requirements.lock", "README.md", "ecom_ingest_dagster", "infra"} <= included
    for private in (".env", ".venv", ".git", ".ecom_ingest", "test-artifacts"):
        assert not any(p == private or p.startswith(private + "/") for p in included), private


# -- no secrets in committed files -------------------------------------------------------


def test_no_secret_values_in_committed_files():
    for path in (COMPOSE, ENV_EXAMPLE, DOCKERFILE, OPERATIONS, WORKSPACE, INSTANCE, SPARK_DEFAULTS):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for password in URL_CREDENTIALS.findall(line):
                assert PLACEHOLDER.match(password), f"{path.name}:{number}: credentials in a URL: {line.strip()}"
    for key, value in _env_file_values(ENV_EXAMPLE).items():
        if SECRET_KEY.search(key):
            assert PLACEHOLDER.match(value), f".env.example: {key} has a value"
    compose_text = COMPOSE.read_text()
    for match in re.finditer(r"^\s*-?\s*([A-Za-z0-9_]+)\s*[:=]\s*(.+)$", compose_text, re.M):
        key, value = match.groups()
        if SECRET_KEY.search(key):
            assert value.strip().startswith("${"), f"docker-compose.yml: {key} is not taken from the environment"


# -- Dagster: workspace, instance, variable names -----------------------------------------


def test_compose_workspace_points_at_the_code_server(compose):
    workspace = yaml.safe_load(WORKSPACE.read_text())
    (entry,) = workspace["load_from"]
    server = entry["grpc_server"]
    assert server["host"] in compose["services"] and server["host"] == "dagster-code"
    code = compose["services"]["dagster-code"]["command"]
    assert str(server["port"]) == code[code.index("-p") + 1]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert server["location_name"] == pyproject["tool"]["dagster"]["code_location_name"]


def test_instance_configuration_reads_the_documented_variable(compose):
    instance = yaml.safe_load(INSTANCE.read_text())
    variable = _instance_pg_url_variable()
    assert variable == "ECOM_INGEST_DAGSTER_PG_URL" and variable.startswith(ENV_PREFIX)
    assert f"`{variable}`" in (ROOT / "README.md").read_text()
    assert instance["run_coordinator"]["class"] == "QueuedRunCoordinator"
    for name in DAGSTER_SERVICES:
        assert _environment(compose["services"][name])[variable].startswith("postgresql://")


def test_variable_names_agree_with_the_code(compose):
    complete, prefixes = _code_variables()
    readme = _readme_variables()
    known = complete | readme | {_instance_pg_url_variable()}

    def is_known(name: str) -> bool:
        return name in known or any(name.startswith(p) for p in prefixes)

    used = set(re.findall(r"\b(ECOM_INGEST_[A-Z0-9_]+)", COMPOSE.read_text()))
    used |= {k for k in _env_file_values(ENV_EXAMPLE) if k.startswith(ENV_PREFIX)}
    assert not {n for n in used if not is_known(n)}, "unknown ECOM_INGEST_* names (typos?)"
    # Every setting the code reads can be passed to the Dagster processes.
    env = _environment(compose["services"]["dagster-code"])
    missing = {n for n in complete | readme if n not in env and not n.startswith(ENV_PREFIX + "TEST_")}
    assert not missing, f"docker-compose.yml does not pass {sorted(missing)}"
    # And every one is documented.
    operations = OPERATIONS.read_text()
    undocumented = {n for n in complete | readme if n not in operations}
    assert not undocumented, f"docs/operations.md does not describe {sorted(undocumented)}"


def test_init_script_creates_the_dagster_database(compose):
    scripts = sorted(p for p in INIT_DIR.iterdir() if p.suffix in (".sql", ".sh"))
    assert scripts, "no init script"
    text = "\n".join(p.read_text() for p in scripts)
    url = _environment(compose["services"]["dagster-code"])[_instance_pg_url_variable()]
    database = url.rsplit("/", 1)[1]
    assert re.search(rf"CREATE DATABASE\s+\"?{database}\"?", text, re.I)


def test_spark_defaults_are_sensible_and_mounted(compose):
    conf = {}
    for line in SPARK_DEFAULTS.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, value = line.split(None, 1)
            conf[key] = value.strip()
    assert conf["spark.sql.session.timeZone"] == "UTC"
    assert conf["spark.ui.showConsoleProgress"] == "false"
    assert conf["spark.python.worker.reuse"] == "true"
    target = _dockerfile_env()["SPARK_CONF_DIR"] + "/spark-defaults.conf"
    for name in ("dagster-code", *SPARK_SERVICES):
        source = _mounts(compose["services"][name]).get(target)
        assert source and Path(source).resolve() == SPARK_DEFAULTS.resolve(), name


def test_the_lock_pins_every_dependency_the_project_declares():
    """scripts/setup installs requirements.lock: a dependency added to pyproject.toml alone
    would be missing from a fresh install (and from CI)."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + project["optional-dependencies"]["test"]
    pinned = dict(
        line.split("==", 1) for line in (ROOT / "requirements.lock").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    normalize = lambda name: re.sub(r"[-_.]+", "-", name).lower()  # noqa: E731
    pinned = {normalize(name): version for name, version in pinned.items()}
    missing = [req for req in declared if normalize(re.split(r"[\[<>=!~ ;]", req, maxsplit=1)[0]) not in pinned]
    assert not missing, f"regenerate requirements.lock (see its header): {missing}"
    assert "--no-deps" in (ROOT / "scripts" / "setup").read_text() and "requirements.lock" in (ROOT / "scripts" / "setup").read_text()
