"""docker-compose.yml and the Dockerfile agree with config/settings.py and with each other.

Nothing here runs Docker: the files are parsed and every value that the pipeline also knows
(Kafka version, listener ports, topic names, partition counts, web port, data dir, CLI commands)
is compared with its one source of truth, so that changing it in one place only fails here
instead of at `docker compose up`.
"""

from __future__ import annotations

import json
import os
import shlex
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import typer.main
import yaml
from packaging.specifiers import SpecifierSet

from recstream.config.settings import KAFKA_VERSION, Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
PYPROJECT = ROOT / "pyproject.toml"
PREFIX = "RECSTREAM_"

# Fields that name the cluster-side objects. Host tools (`recstream produce`, `tail`) reach the
# compose broker with only RECSTREAM_BOOTSTRAP set, so the containers must use the defaults.
WIRE_FIELDS = (
    "app_id",
    "topic_prefix",
    "events_topic",
    "items_topic",
    "recommendations_topic",
    "dead_letter_topic",
    "events_partitions",
    "items_partitions",
    "recommendations_partitions",
    "dead_letter_partitions",
    "replication_factor",
)

SettingsFrom = Callable[[dict[str, str]], Settings]


# --- parsing helpers ----------------------------------------------------------------------------
def _environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as compose passes it: mapping or KEY=VALUE list, values as str."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    env = {}
    for key, value in raw.items():
        # A bare `KEY:` passes the host's value through: the stack would depend on the shell.
        assert value is not None, f"{key} has no value in docker-compose.yml"
        env[key] = str(value)
    return env


def _command(value: str | list[str]) -> list[str]:
    return shlex.split(value) if isinstance(value, str) else [str(part) for part in value]


def _listeners(value: str) -> dict[str, tuple[str, int]]:
    """`NAME://host:port,...` → {NAME: (host, port)}; an empty host means all interfaces."""
    out = {}
    for entry in value.split(","):
        name, sep, address = entry.strip().partition("://")
        assert sep, f"not a listener: {entry!r}"
        host, _, port = address.rpartition(":")
        out[name] = (host, int(port))
    return out


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def _published(service: dict[str, Any]) -> dict[int, int]:
    """Published ports of a service: {host port: container port}."""
    out = {}
    for spec in service.get("ports") or []:
        if isinstance(spec, dict):
            out[int(spec["published"])] = int(spec["target"])
            continue
        parts = str(spec).split("/")[0].split(":")
        # "container" alone publishes on a random host port: useless for an advertised address.
        assert len(parts) >= 2, f"port {spec!r} has no fixed host port"
        out[int(parts[-2])] = int(parts[-1])
    return out


def _dockerfile_stages(text: str) -> list[list[tuple[str, str]]]:
    """Instructions per build stage as (INSTRUCTION, arguments); comments dropped."""
    instructions = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        pending = ""
    stages: list[list[tuple[str, str]]] = []
    for keyword, args in instructions:
        if keyword == "FROM":
            stages.append([])
        elif stages:  # ARG before the first FROM belongs to no stage
            stages[-1].append((keyword, args))
    return stages


def _dockerfile_froms(text: str) -> list[str]:
    return [
        shlex.split(line.strip())[1]
        for line in text.splitlines()
        if line.strip().upper().startswith("FROM ")
    ]


def _exec_form(args: str) -> list[str]:
    """ENTRYPOINT/CMD in exec (JSON) form; the shell form would hide signals from Faust."""
    value = json.loads(args)
    assert isinstance(value, list), f"not exec form: {args}"
    return value


def _env_instructions(stage: list[tuple[str, str]]) -> dict[str, str]:
    env = {}
    for keyword, args in stage:
        if keyword == "ENV":
            for token in shlex.split(args):
                key, sep, value = token.partition("=")
                assert sep, f"use ENV KEY=VALUE, not the legacy form: ENV {args}"
                env[key] = value
    return env


# --- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    with COMPOSE_FILE.open() as f:
        data = yaml.safe_load(f)
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    svc = compose.get("services")
    assert isinstance(svc, dict)
    return svc


@pytest.fixture(scope="module")
def runtime_stage() -> list[tuple[str, str]]:
    """The last stage of the Dockerfile: what the image runs."""
    stages = _dockerfile_stages(DOCKERFILE.read_text())
    assert stages, "Dockerfile has no FROM"
    return stages[-1]


@pytest.fixture
def settings_from(monkeypatch: pytest.MonkeyPatch) -> Iterator[SettingsFrom]:
    """Settings() as a container with exactly this environment would build them."""

    def build(env: dict[str, str]) -> Settings:
        for key in list(os.environ):
            if key.startswith(PREFIX):
                monkeypatch.delenv(key)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        return Settings()

    yield build


@pytest.fixture
def worker_settings(
    services: dict[str, dict[str, Any]],
    runtime_stage: list[tuple[str, str]],
    settings_from: SettingsFrom,
) -> Settings:
    # The container's environment is the image's ENV overlaid by the compose environment.
    image_env = {k: v for k, v in _env_instructions(runtime_stage).items() if k.startswith(PREFIX)}
    return settings_from(image_env | _environment(services["worker"]))


@pytest.fixture
def defaults(settings_from: SettingsFrom) -> Settings:
    return settings_from({})


def _kafka_env(services: dict[str, dict[str, Any]]) -> dict[str, str]:
    return _environment(services["kafka"])


def _kafka_names(services: dict[str, dict[str, Any]]) -> set[str]:
    """Names that resolve to the broker on the compose network."""
    names = {"kafka"}
    if "hostname" in services["kafka"]:
        names.add(services["kafka"]["hostname"])
    return names


def _recstream_services(services: dict[str, dict[str, Any]]) -> list[str]:
    """Services that run the recstream image (built here or tagged like the worker's)."""
    image = services["worker"].get("image")
    return [
        name
        for name, svc in services.items()
        if "build" in svc or (image is not None and svc.get("image") == image)
    ]


# --- compose: structure -------------------------------------------------------------------------
def test_compose_parses_and_has_the_services(services: dict[str, dict[str, Any]]) -> None:
    assert {"kafka", "init-topics", "worker"} <= services.keys()


def test_kafka_image_is_the_pinned_version(services: dict[str, dict[str, Any]]) -> None:
    repository, _, tag = services["kafka"]["image"].partition(":")
    assert repository == "apache/kafka"
    assert tag == KAFKA_VERSION, "compose broker and local broker must run the same Kafka"


def test_recstream_variables_are_settings_fields(
    services: dict[str, dict[str, Any]], runtime_stage: list[tuple[str, str]]
) -> None:
    # pydantic-settings silently ignores an unknown RECSTREAM_* variable: a typo would leave
    # the default in force without any error at startup.
    fields = {PREFIX + name.upper() for name in Settings.model_fields}
    sources = {name: _environment(svc) for name, svc in services.items()}
    sources["Dockerfile"] = _env_instructions(runtime_stage)
    for source, env in sources.items():
        unknown = {key for key in env if key.startswith(PREFIX)} - fields
        assert not unknown, f"{source}: not Settings fields: {sorted(unknown)}"


def test_every_recstream_service_uses_the_same_cluster_and_topics(
    services: dict[str, dict[str, Any]], settings_from: SettingsFrom
) -> None:
    names = _recstream_services(services)
    assert {"worker", "init-topics"} <= set(names)
    wire = {
        name: {
            field: getattr(settings_from(_environment(services[name])), field)
            for field in ("bootstrap", *WIRE_FIELDS)
        }
        for name in names
    }
    # init-topics creates exactly the topics, with exactly the partitions, the workers consume.
    for name in names:
        assert wire[name] == wire["worker"], f"{name} and worker disagree"


# --- compose: the worker against Settings ------------------------------------------------------
def test_worker_settings_match_the_defaults_on_the_wire(
    worker_settings: Settings, defaults: Settings
) -> None:
    for field in WIRE_FIELDS:
        assert getattr(worker_settings, field) == getattr(defaults, field), (
            f"{field}: compose has {getattr(worker_settings, field)!r}, Settings default is "
            f"{getattr(defaults, field)!r}; host tools would use other topics"
        )


def test_worker_bootstrap_is_the_in_network_listener(
    services: dict[str, dict[str, Any]], worker_settings: Settings, defaults: Settings
) -> None:
    env = _kafka_env(services)
    advertised = _listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    bound = _listeners(env["KAFKA_LISTENERS"])
    protocols = dict(
        item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    assert not worker_settings.uses_local_broker, "the worker would look for a broker on 127.0.0.1"
    for address in worker_settings.bootstrap_servers.split(","):
        host, port = _host_port(address)
        assert host in _kafka_names(services), f"{address} is not the kafka service"
        matching = [name for name, hp in advertised.items() if hp == (host, port)]
        assert matching, f"{address} is not advertised by kafka: {advertised}"
        (listener,) = matching
        # Clients get the advertised address back after bootstrap; it must also be bound.
        assert bound[listener][1] == port, f"{listener} advertised on {port}, bound elsewhere"
        assert protocols[listener] == "PLAINTEXT", "recstream clients speak PLAINTEXT"
        assert port == defaults.kafka_port, "in-network port differs from Settings.kafka_port"


def test_kafka_host_listener_is_published(services: dict[str, dict[str, Any]]) -> None:
    env = _kafka_env(services)
    bound = _listeners(env["KAFKA_LISTENERS"])
    published = _published(services["kafka"])
    host_side = {
        name: port
        for name, (host, port) in _listeners(env["KAFKA_ADVERTISED_LISTENERS"]).items()
        if host in ("localhost", "127.0.0.1")
    }
    assert host_side, "no listener advertised for clients on the host"
    for name, port in host_side.items():
        # The advertised port is what host clients dial: it must be the published host port,
        # mapped to the port the listener binds inside the container.
        assert published.get(port) == bound[name][1], f"{name}: {port} not published to it"


def test_kafka_controller_quorum(services: dict[str, dict[str, Any]], defaults: Settings) -> None:
    env = _kafka_env(services)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    bound = _listeners(env["KAFKA_LISTENERS"])
    (voter,) = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
    node_id, _, address = voter.partition("@")
    host, port = _host_port(address)
    assert node_id == env["KAFKA_NODE_ID"]
    assert host in _kafka_names(services)
    assert port == bound[controller][1] == defaults.kafka_controller_port
    assert controller not in _listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in bound


def test_kafka_single_node_settings(
    services: dict[str, dict[str, Any]], worker_settings: Settings, defaults: Settings
) -> None:
    env = _kafka_env(services)
    # One broker: internal topics and created topics can have one replica only.
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"
    assert worker_settings.replication_factor == 1
    assert env["KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS"] == "0"
    # Auto-created topics (and Faust's internal ones) get the events topic's partition count.
    assert int(env["KAFKA_NUM_PARTITIONS"]) == worker_settings.events_partitions
    assert f"-Xmx{defaults.kafka_heap}" in env["KAFKA_HEAP_OPTS"].split()


def test_kafka_healthcheck_asks_a_bound_listener(services: dict[str, dict[str, Any]]) -> None:
    kafka = services["kafka"]
    check = kafka["healthcheck"]["test"]
    argv = shlex.split(" ".join(check[1:]) if isinstance(check, list) else check)
    tools = [arg for arg in argv if arg.endswith("kafka-broker-api-versions.sh")]
    assert tools == ["/opt/kafka/bin/kafka-broker-api-versions.sh"]
    _, port = _host_port(argv[argv.index("--bootstrap-server") + 1])
    assert port in {p for _, p in _listeners(_kafka_env(services)["KAFKA_LISTENERS"]).values()}
    assert any(":/var/lib/kafka/data" in str(v) for v in kafka.get("volumes", []))


def test_startup_order(services: dict[str, dict[str, Any]]) -> None:
    assert services["init-topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    worker_deps = services["worker"]["depends_on"]
    assert worker_deps["kafka"]["condition"] == "service_healthy"
    assert worker_deps["init-topics"]["condition"] == "service_completed_successfully"
    assert _command(services["init-topics"]["command"]) == ["topics", "create"]


def test_worker_scales(services: dict[str, dict[str, Any]], worker_settings: Settings) -> None:
    worker = services["worker"]
    # Both are unique per host: `docker compose up --scale worker=3` would fail on them.
    assert "container_name" not in worker
    assert not worker.get("ports"), "a published port binds once per host"
    assert str(worker_settings.web_port) in [str(p) for p in worker.get("expose", [])]
    # Faust binds the web server to web_host: loopback would be unreachable from outside.
    assert worker_settings.web_host == "0.0.0.0"
    # The data dir must be per replica (anonymous volume or tmpfs): RocksDB locks its stores.
    data_dir = str(PurePosixPath(worker_settings.data_dir))
    assert PurePosixPath(worker_settings.data_dir).is_absolute()
    anonymous = [v for v in worker.get("volumes", []) if isinstance(v, str) and ":" not in v]
    tmpfs = worker.get("tmpfs", [])
    tmpfs = [tmpfs] if isinstance(tmpfs, str) else tmpfs
    assert data_dir in anonymous + [t.split(":")[0] for t in tmpfs], (
        f"{data_dir} is not an anonymous volume or tmpfs of the worker"
    )


# --- Dockerfile ---------------------------------------------------------------------------------
def test_dockerfile_expose_and_entrypoint(
    runtime_stage: list[tuple[str, str]], defaults: Settings, worker_settings: Settings
) -> None:
    exposed = {
        int(port.split("/")[0])
        for keyword, args in runtime_stage
        if keyword == "EXPOSE"
        for port in args.split()
    }
    assert exposed == {defaults.web_port} == {worker_settings.web_port}
    entrypoints = [_exec_form(args) for keyword, args in runtime_stage if keyword == "ENTRYPOINT"]
    assert entrypoints[-1] == ["recstream"]
    scripts = tomllib.loads(PYPROJECT.read_text())["project"]["scripts"]
    assert "recstream" in scripts, "ENTRYPOINT names a console script pyproject does not install"


def test_worker_command_is_the_worker(
    services: dict[str, dict[str, Any]], runtime_stage: list[tuple[str, str]]
) -> None:
    cmds = [_exec_form(args) for keyword, args in runtime_stage if keyword == "CMD"]
    assert cmds[-1] == ["worker"]
    # Compose's command replaces CMD; without one the image default applies.
    effective = _command(services["worker"].get("command", cmds[-1]))
    assert effective == ["worker"]


def _subcommands(command: Any) -> dict[str, Any]:
    # Typer vendors its own click in recent versions: look at `.commands`, not at the class.
    commands = getattr(command, "commands", None)
    assert isinstance(commands, dict), f"{command!r} is not a command group"
    return commands


def test_container_commands_exist_in_the_cli(services: dict[str, dict[str, Any]]) -> None:
    from recstream.main import app

    cli = _subcommands(typer.main.get_command(app))
    assert _command(services["worker"]["command"])[0] in cli
    group, subcommand = _command(services["init-topics"]["command"])
    if group not in cli:
        pytest.skip(f"`recstream {group} {subcommand}` is not in the CLI yet")
    assert subcommand in _subcommands(cli[group])


def test_dockerfile_runtime(runtime_stage: list[tuple[str, str]], defaults: Settings) -> None:
    env = _env_instructions(runtime_stage)
    assert env.get("HF_HUB_OFFLINE") == "1"
    volumes = [
        v
        for keyword, args in runtime_stage
        if keyword == "VOLUME"
        for v in (json.loads(args) if args.startswith("[") else args.split())
    ]
    assert env[PREFIX + "DATA_DIR"] in volumes
    users = [args for keyword, args in runtime_stage if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the image must not run as root"
    assert [args for keyword, args in runtime_stage if keyword == "WORKDIR"][-1] == "/app"


def test_dockerfile_base_and_sources() -> None:
    text = DOCKERFILE.read_text()
    # The venv built in the first stage is copied into the last: same interpreter in both.
    bases = {image for image in _dockerfile_froms(text) if image.startswith("python:")}
    assert bases == {"python:3.11-slim"}
    project = tomllib.loads(PYPROJECT.read_text())
    version = next(iter(bases)).split(":")[1].split("-")[0]
    assert version in SpecifierSet(project["project"]["requires-python"])
    # `pip install .` builds from the COPYed folders only; a package folder pyproject maps but
    # the Dockerfile does not copy would be missing from the image.
    copied = {
        source.rstrip("/")
        for stage in _dockerfile_stages(text)
        for keyword, args in stage
        if keyword == "COPY" and not args.startswith("--from")
        for source in shlex.split(args)[:-1]
        if not source.startswith("--")
    }
    package_dirs = set(project["tool"]["setuptools"]["package-dir"].values())
    assert "." in copied or package_dirs <= copied, f"not copied: {package_dirs - copied}"
    assert {"pyproject.toml", "README.md"} <= copied or "." in copied


def test_one_trainer_shares_its_snapshot_directory_with_the_workers(
    services: dict[str, dict[str, Any]],
    runtime_stage: list[tuple[str, str]],
    settings_from: SettingsFrom,
    worker_settings: Settings,
) -> None:
    trainer = services["trainer"]
    assert _command(trainer["command"]) == ["trainer"]
    assert "container_name" not in trainer and not trainer.get("ports")
    assert int((trainer.get("deploy") or {}).get("replicas", 1)) == 1  # one per cluster
    image_env = {k: v for k, v in _env_instructions(runtime_stage).items() if k.startswith(PREFIX)}
    trainer_settings = settings_from(image_env | _environment(trainer))
    assert trainer_settings.snapshots == worker_settings.snapshots
    where = str(trainer_settings.snapshots)

    def mounts(svc: dict[str, Any]) -> dict[str, str]:
        out = {}
        for volume in svc.get("volumes") or []:
            parts = str(volume).split(":")
            if len(parts) >= 2:
                out[parts[1]] = parts[0] + (":ro" if parts[2:] == ["ro"] else "")
        return out

    assert mounts(trainer)[where] == "snapshots"
    assert mounts(services["worker"])[where] == "snapshots:ro"
    assert trainer["depends_on"]["init-topics"]["condition"] == "service_completed_successfully"
