"""models/ is pure: importing it must not import Kafka or Faust (checked in a fresh process)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import recstream.models

FORBIDDEN = (
    "faust",
    "mode",
    "aiokafka",
    "kafka",
    "rocksdict",
    "recstream.config",
    "recstream.streams",
    "recstream.agents",
)


def test_models_import_no_kafka_faust_or_settings() -> None:
    modules = [m.name for m in pkgutil.iter_modules(recstream.models.__path__)]
    assert modules, "models/ has no modules"
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}:\n"
        "    importlib.import_module('recstream.models.' + m)\n"
        f"bad = sorted(n for n in sys.modules if n.split('.')[0] in {FORBIDDEN!r}"
        f" or n.startswith({FORBIDDEN!r}))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"models/ pulled in: {out.stdout.strip()}"
