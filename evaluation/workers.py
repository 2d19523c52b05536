"""Worker processes started from Python: the demo, the evaluation, benchmarks and tests.

Each worker gets its own data directory and web port so that several can share a machine.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import IO

from recstream.config.settings import Settings


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def settings_env(settings: Settings) -> dict[str, str]:
    """RECSTREAM_* variables that reproduce `settings` in a child process."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump(mode="json").items():
        if value is None:
            continue
        # pydantic-settings reads complex fields (tuples, lists) from the environment as JSON.
        text = json.dumps(value) if isinstance(value, list | dict) else str(value)
        env[f"RECSTREAM_{name.upper()}"] = text
    return env


class WorkerProcess:
    """`python -m recstream worker` as a child process, stopped cleanly (SIGTERM) or killed."""

    command = "worker"

    def __init__(
        self,
        settings: Settings,
        *,
        data_dir: Path,
        log_file: Path,
        web_port: int | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.data_dir = data_dir
        self.log_file = log_file
        self.web_port = web_port or free_port()
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def start(self) -> WorkerProcess:
        env = dict(os.environ)
        env.update(settings_env(self.settings))
        env.update(
            {
                "RECSTREAM_DATA_DIR": str(self.data_dir),
                "RECSTREAM_WEB_PORT": str(self.web_port),
                "RECSTREAM_WEB_HOST": "127.0.0.1",
                "HF_HUB_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false",
            }
        )
        env.update(self.extra_env)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_file, "ab")  # noqa: SIM115 - lives as long as the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "recstream", self.command],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = 45.0) -> int | None:
        """SIGTERM and wait (Faust commits offsets and flushes tables), then SIGKILL."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._close_log()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL: a crash, with no chance to commit or flush."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


class TrainerProcess(WorkerProcess):
    """`python -m recstream trainer` (the sequence-model trainer) as a child process."""

    command = "trainer"
