"""proc: argv lists in, typed errors out; secrets on stdin; the one tool lookup."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pipeline.errors import CommandError, EngineError
from pipeline.proc import find_tool, run, stream

PY = sys.executable


def test_a_command_that_succeeds_gives_its_output() -> None:
    done = run([PY, "-c", "import sys; print('out'); print('err', file=sys.stderr)"])
    assert (done.returncode, done.stdout, done.stderr) == (0, "out\n", "err\n")


def test_a_failure_carries_the_command_its_exit_code_and_stderr() -> None:
    argv = [PY, "-c", "import sys; sys.stderr.write('boom'); sys.exit(3)"]
    with pytest.raises(EngineError) as caught:
        run(argv, error=EngineError, what="the thing", hint="try again")
    error = caught.value
    assert (error.argv, error.returncode, error.stderr) == (argv, 3, "boom")
    assert error.one_line().startswith("the thing failed with exit code 3")
    assert error.hint == "try again"


def test_a_missing_program_is_said_as_not_installed() -> None:
    with pytest.raises(CommandError, match="no-such-tool-x is not installed"):
        run(["no-such-tool-x", "--version"])


def test_a_command_past_its_timeout_is_stopped_and_said() -> None:
    with pytest.raises(CommandError, match=r"sleeping timed out after 0\.2s"):
        run([PY, "-c", "import time; time.sleep(5)"], timeout=0.2, what="sleeping")


def test_a_secret_goes_on_stdin_never_into_argv() -> None:
    argv = [PY, "-c", "import sys; print(len(sys.stdin.read()))"]
    done = run(argv, input="s3cret")
    assert done.stdout == "6\n"
    assert all("s3cret" not in part for part in argv)


def test_the_environment_and_directory_are_the_callers(tmp_path: Path) -> None:
    argv = [PY, "-c", "import os; print(os.environ['ONLY'], os.getcwd())"]
    done = run(argv, env={"ONLY": "this"}, cwd=tmp_path)
    assert done.stdout.split() == ["this", str(tmp_path)]


def test_streamed_output_gives_the_exit_code() -> None:
    assert stream([PY, "-c", "raise SystemExit(4)"]) == 4
    with pytest.raises(CommandError, match="is not installed"):
        stream(["no-such-tool-x"])


def test_tools_come_from_the_environment_when_there_else_from_path(tmp_path: Path) -> None:
    (tmp_path / "trivy").write_text("")
    assert find_tool("trivy", tmp_path) == str(tmp_path / "trivy")
    assert find_tool("hadolint", tmp_path) == "hadolint"
    assert find_tool("python", None) == str(Path(PY).parent / "python")
    assert find_tool("no-such-tool-x") == "no-such-tool-x"
