"""The package layers import only downwards (checked statically and in a fresh process).

- models/ is pure: importing it must not import Kafka, Faust, settings, streams, agents or the
  evaluation package.
- The live path (streams/, agents/, models/) never imports recstream.evaluation.
- evaluation/ never imports recstream.agents nor the command-line modules at the root of the
  package (cli/); it may use streams/, config/ and models/, and reaches the workers only
  through Kafka and subprocesses.

The static checks read every import statement of every file, also those inside functions, so a
lazy import cannot slip past them; the fresh-process checks catch what is imported indirectly.
"""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

import recstream.agents
import recstream.evaluation
import recstream.models
import recstream.streams

FORBIDDEN = (
    "faust",
    "mode",
    "aiokafka",
    "kafka",
    "rocksdict",
    "recstream.config",
    "recstream.streams",
    "recstream.agents",
    "recstream.evaluation",
)
#: Subpackages of recstream that evaluation/ may import; anything else under recstream is the
#: live path's agents or a command-line module.
EVALUATION_MAY_IMPORT = ("recstream.evaluation", "recstream.streams", "recstream.config",
                         "recstream.models")  # fmt: skip


def _folder(package: object) -> Path:
    return Path(next(iter(package.__path__)))  # type: ignore[attr-defined]


def imported_names(source: str) -> Iterator[tuple[int, str, tuple[str, ...]]]:
    """(line, statement, candidate module names) for every name imported in `source`, at any
    depth (also inside functions).

    `from a import b` may import the module `a.b` or the attribute `b` of `a`: both are
    candidates. A relative import keeps its dots, so it never looks like an allowed absolute name.
    """
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, f"import {alias.name}", (alias.name,)
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            for alias in node.names:
                sub = f"{base}.{alias.name}" if node.module else base + alias.name
                yield node.lineno, f"from {base} import {alias.name}", (base, sub)


def _matches(name: str, prefixes: Iterable[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def violations(
    folder: Path,
    forbidden: Iterable[str] = (),
    *,
    recstream_allowed: Iterable[str] | None = None,
) -> list[str]:
    """`file:line statement` for every forbidden import in folder/**/*.py.

    forbidden: module prefixes that must not be imported.
    recstream_allowed: if given, every import of `recstream` or `recstream.X` must match one of
        these prefixes (relative imports are then forbidden too: they cannot be checked).
    """
    forbidden = tuple(forbidden)
    allowed = None if recstream_allowed is None else tuple(recstream_allowed)
    bad = []
    for path in sorted(folder.rglob("*.py")):
        for line, statement, names in imported_names(path.read_text(encoding="utf-8")):
            wrong = any(_matches(n, forbidden) for n in names)
            if allowed is not None:
                ours = any(n.startswith(".") or _matches(n, ("recstream",)) for n in names)
                wrong = wrong or (ours and not any(_matches(n, allowed) for n in names))
            if wrong:
                bad.append(f"{path.relative_to(folder.parent)}:{line} {statement}")
    return bad


def _loaded_in_fresh_process(package: str, folder: Path) -> list[str]:
    """Every module name in sys.modules after importing each module of `package`."""
    modules = sorted(m.name for m in pkgutil.iter_modules([str(folder)]))
    assert modules, f"{package} has no modules"
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}:\n"
        f"    importlib.import_module({package + '.'!r} + m)\n"
        "print('\\n'.join(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_models_import_no_kafka_faust_settings_or_evaluation() -> None:
    loaded = _loaded_in_fresh_process("recstream.models", _folder(recstream.models))
    bad = sorted(n for n in loaded if n.split(".")[0] in FORBIDDEN or _matches(n, FORBIDDEN))
    assert bad == [], f"models/ pulled in: {bad}"
    assert violations(_folder(recstream.models), FORBIDDEN) == []


@pytest.mark.parametrize("package", [recstream.streams, recstream.agents, recstream.models])
def test_live_path_never_imports_evaluation(package: object) -> None:
    assert violations(_folder(package), ("recstream.evaluation",)) == []


def test_evaluation_imports_neither_agents_nor_the_command_line() -> None:
    folder = _folder(recstream.evaluation)
    assert violations(folder, recstream_allowed=EVALUATION_MAY_IMPORT) == []
    loaded = _loaded_in_fresh_process("recstream.evaluation", folder)
    # `recstream` itself (cli/__init__.py) is loaded as the parent package of every layer.
    bad = [
        n for n in loaded if n.startswith("recstream.") and not _matches(n, EVALUATION_MAY_IMPORT)
    ]
    assert bad == [], f"evaluation/ pulled in: {bad}"


def test_the_static_check_catches_violations(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "ok.py").write_text(
        "import numpy\nfrom recstream.models.decay import x\nfrom recstream.streams import codecs\n"
    )
    (pkg / "lazy.py").write_text(
        "def f():\n    from recstream.agents.embedding import encoder_from_settings\n"
    )
    (pkg / "star.py").write_text("from recstream import agents, produce\nimport recstream.tail\n")
    (pkg / "rel.py").write_text("from . import sibling\n")
    assert violations(pkg, ("recstream.agents",)) == [
        "pkg/lazy.py:2 from recstream.agents.embedding import encoder_from_settings",
        "pkg/star.py:1 from recstream import agents",
    ]
    assert violations(pkg, recstream_allowed=EVALUATION_MAY_IMPORT) == [
        "pkg/lazy.py:2 from recstream.agents.embedding import encoder_from_settings",
        "pkg/rel.py:1 from . import sibling",
        "pkg/star.py:1 from recstream import agents",
        "pkg/star.py:1 from recstream import produce",
        "pkg/star.py:2 import recstream.tail",
    ]
    assert violations(pkg, ("recstream.evaluation",)) == []
    assert violations(pkg, ("kafka",)) == []
    (pkg / "kafka_user.py").write_text(
        "import kafka.admin\nfrom aiokafka import AIOKafkaProducer\n"
    )
    assert violations(pkg, ("kafka", "aiokafka")) == [
        "pkg/kafka_user.py:1 import kafka.admin",
        "pkg/kafka_user.py:2 from aiokafka import AIOKafkaProducer",
    ]
