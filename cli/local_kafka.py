"""A real, local, single-node Apache Kafka broker (KRaft: broker + controller in one JVM).

The jars come from Maven Central through the pom in config/kafka: `mvn dependency:build-classpath`
resolves them into the local Maven repository (outside the work tree) and writes the classpath to
a file under `Settings.kafka_dir`. A second start reuses that file and needs no network. Nothing
here runs at import time.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from recstream.config.settings import KAFKA_VERSION, Settings
from recstream.models.errors import KafkaToolError

_MISSING_TOOL = (
    "{tool} was not found on PATH. The local broker needs Java 17+ and Maven to fetch and run "
    "Apache Kafka {version}. Install them (e.g. `apt-get install openjdk-17-jre-headless maven`), "
    "or run Kafka with `docker compose up kafka` (docker-compose.yml), or point recstream at an "
    "existing cluster with RECSTREAM_BOOTSTRAP=host:port."
)


@dataclass(frozen=True)
class BrokerStatus:
    running: bool
    pid: int | None
    bootstrap: str
    answering: bool
    log_file: Path

    def describe(self) -> str:
        if not self.running:
            return f"stopped (would listen on {self.bootstrap}; log {self.log_file})"
        state = "answering" if self.answering else "starting, not answering yet"
        return f"running, pid {self.pid}, {self.bootstrap}, {state}; log {self.log_file}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child has exited
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (OSError, IndexError):
        return True


class LocalKafka:
    """Start, stop and query the local broker described by `settings`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.dir = settings.kafka_dir
        self.data_dir = self.dir / "data"
        self.pid_file = self.dir / "broker.pid"
        self.log_file = self.dir / "server.log"
        self.stdout_file = self.dir / "stdout.log"
        self.classpath_file = self.dir.parent / f"classpath-{KAFKA_VERSION}.txt"

    # --- classpath ---------------------------------------------------------------------------
    @staticmethod
    def _require(tool: str) -> str:
        path = shutil.which(tool)
        if path is None:
            raise KafkaToolError(_MISSING_TOOL.format(tool=tool, version=KAFKA_VERSION))
        return path

    def classpath(self) -> str:
        """The broker's classpath, resolving jars with Maven on first use."""
        if self.classpath_file.exists():
            cp = self.classpath_file.read_text().strip()
            if cp and all(Path(p).exists() for p in cp.split(os.pathsep)):
                return cp
        mvn = self._require("mvn")
        self.classpath_file.parent.mkdir(parents=True, exist_ok=True)
        with resources.as_file(resources.files("recstream.config.kafka") / "pom.xml") as pom:
            cmd = [
                mvn,
                "-q",
                "-B",
                "-f",
                str(pom),
                "dependency:build-classpath",
                f"-Dmdep.outputFile={self.classpath_file}",
            ]
            if self.settings.maven_repo is not None:
                cmd.append(f"-Dmaven.repo.local={self.settings.maven_repo}")
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0 or not self.classpath_file.exists():
            tail = (proc.stdout + proc.stderr)[-2000:]
            raise KafkaToolError(
                f"Maven could not resolve Apache Kafka {KAFKA_VERSION} from Maven Central "
                f"(exit {proc.returncode}):\n{tail}"
            )
        return self.classpath_file.read_text().strip()

    # --- configuration -----------------------------------------------------------------------
    def _render(self, name: str, **values: str) -> str:
        template = (resources.files("recstream.config.kafka") / name).read_text()
        return template.format(**values)

    def _write_config(self) -> tuple[Path, Path]:
        self.dir.mkdir(parents=True, exist_ok=True)
        server = self.dir / "server.properties"
        server.write_text(
            self._render(
                "server.properties",
                port=str(self.settings.kafka_port),
                controller_port=str(self.settings.kafka_controller_port),
                data_dir=str(self.data_dir),
            )
        )
        log4j = self.dir / "log4j.properties"
        log4j.write_text(self._render("log4j.properties", log_file=str(self.log_file)))
        return server, log4j

    # --- process control ---------------------------------------------------------------------
    def _pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        # A recycled pid would not be our JVM: check its command line names kafka.Kafka.
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return pid
        return pid if b"kafka.Kafka" in cmdline else None

    def _port_open(self) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            return sock.connect_ex(("127.0.0.1", self.settings.kafka_port)) == 0

    def answering(self) -> bool:
        """True when the broker answers a metadata request (not merely an open port)."""
        if not self._port_open():
            return False
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        try:
            admin = KafkaAdminClient(
                bootstrap_servers=self.settings.bootstrap_servers,
                request_timeout_ms=3000,
            )
        except (KafkaError, OSError, ValueError):
            return False
        try:
            admin.list_topics()
            return True
        except (KafkaError, OSError):
            return False
        finally:
            admin.close()

    def status(self) -> BrokerStatus:
        pid = self._pid()
        return BrokerStatus(
            running=pid is not None,
            pid=pid,
            bootstrap=self.settings.bootstrap_servers,
            answering=pid is not None and self.answering(),
            log_file=self.log_file,
        )

    def start(self) -> BrokerStatus:
        """Start the broker unless it runs already; return once it answers.

        Idempotent: a running broker is left as it is.
        """
        current = self.status()
        if current.running:
            if not current.answering:
                self._wait_answering(current.pid)
            return self.status()
        if self._port_open():
            raise KafkaToolError(
                f"port {self.settings.kafka_port} is taken by another process; stop it or set "
                "RECSTREAM_KAFKA_PORT (or RECSTREAM_BOOTSTRAP to use that broker)"
            )
        java = self._require("java")
        cp = self.classpath()
        server, log4j = self._write_config()
        jvm_log = [f"-Dlog4j.configuration=file:{log4j}", f"-Dkafka.logs.dir={self.dir}"]
        if not (self.data_dir / "meta.properties").exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            fmt = subprocess.run(
                [java, *jvm_log, "-cp", cp, "kafka.tools.StorageTool", "format",
                 "-t", str(uuid.uuid4()).replace("-", "")[:22], "-c", str(server)],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if fmt.returncode != 0:
                raise KafkaToolError(f"formatting the KRaft storage failed:\n{fmt.stderr[-2000:]}")
        with open(self.stdout_file, "ab") as out:
            proc = subprocess.Popen(
                [java, f"-Xmx{self.settings.kafka_heap}", f"-Xms{self.settings.kafka_heap}",
                 "-XX:+UseG1GC", "-Djava.awt.headless=true", *jvm_log,
                 "-cp", cp, "kafka.Kafka", str(server)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # survives the CLI; stopped by `recstream kafka stop`
            )  # fmt: skip
        self.pid_file.write_text(str(proc.pid))
        self._wait_answering(proc.pid)
        return self.status()

    def _wait_answering(self, pid: int | None) -> None:
        deadline = time.monotonic() + self.settings.broker_start_timeout_s
        while time.monotonic() < deadline:
            # Liveness by pid alone: the java launcher may re-exec itself, so during start-up
            # its command line is not yet the broker's.
            if pid is not None and not _alive(pid):
                tail = self._tail()
                raise KafkaToolError(f"the broker exited during start-up; last log lines:\n{tail}")
            if self.answering():
                return
            time.sleep(0.5)
        raise KafkaToolError(
            f"the broker did not answer within {self.settings.broker_start_timeout_s:.0f} s; "
            f"see {self.log_file}\n{self._tail()}"
        )

    def _tail(self, lines: int = 15) -> str:
        # JVM start-up failures go to stdout, broker errors to the log4j file: show both.
        parts = []
        for path in (self.stdout_file, self.log_file):
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {path} ---\n" + "\n".join(tail))
        return "\n".join(parts) or "(no log yet)"

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop the broker (SIGTERM, then SIGKILL after timeout_s). False if none was running."""
        pid = self._pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self._pid() is not None:
            time.sleep(0.2)
        if self._pid() is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)
        self.pid_file.unlink(missing_ok=True)
        # The next start binds the same ports: wait until the old listener is gone.
        deadline = time.monotonic() + 10
        while self._port_open() and time.monotonic() < deadline:
            time.sleep(0.2)
        return True

    def reset(self) -> None:
        """Stop the broker and delete its data (topics and offsets); jars stay cached."""
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)
