"""`recstream bench ...` on bad input: one line on stderr and a non-zero exit, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from recstream.main import app


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["bench", *args])
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("encode", "--backend", "nope", "--n", "2"), "backend must be one of"),
        (("embed", "--no-stage", "--backend", "nope", "--n", "2"), "backend must be one of"),
    ],
)
def test_an_unknown_backend_is_one_error_line(args: tuple[str, ...], says: str) -> None:
    code, output = _run(*args)
    assert code == 1, output
    assert "error:" in output and says in output
    assert "Traceback" not in output


def test_a_folder_without_movies_csv_is_one_error_line(tmp_path: Path) -> None:
    code, output = _run("embed-quality", "--dataset", str(tmp_path), "--backends", "onnx")
    assert code == 1, output
    assert "cannot read" in output and "movies.csv" in output
    (tmp_path / "movies.csv").write_text("movieId,name\n1,x\n", encoding="utf-8")
    code, output = _run("embed-quality", "--dataset", str(tmp_path), "--backends", "onnx")
    assert code == 1 and "no title and genres" in output, output


def test_invalid_settings_exit_2_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSTREAM_EMBED_BATCH_SIZE", "many")
    code, output = _run("encode", "--n", "2")
    assert code == 2, output
    assert "invalid settings" in output and "embed_batch_size" in output.lower()
