"""Typed errors. Each carries enough to print one actionable line at the task edge."""

from __future__ import annotations

from collections.abc import Sequence


class PipelineError(Exception):
    """Base of every error the pipeline raises on purpose.

    ``exit_code`` is what the task edge exits with; ``hint`` is the fix, appended to the line.
    """

    exit_code = 1

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        """The message and its fix on one line, for the terminal."""
        text = f"{self.message}: {self.hint}" if self.hint else self.message
        return " ".join(text.split())


class UsageError(PipelineError):
    """Bad input from the user (a flag, a ref, a config value): exit code 2."""

    exit_code = 2


class ConfigError(UsageError):
    """``[tool.pipeline]`` or a related settings file is invalid."""


class InvalidRefError(UsageError):
    """A git tag ref that is not a release version."""


class ContextError(UsageError):
    """The build context (git checkout or GitHub environment) cannot be determined."""


class CommandError(PipelineError):
    """An external command failed. Carries its argv (never secrets) and its stderr."""

    def __init__(
        self,
        message: str,
        *,
        argv: Sequence[str] = (),
        returncode: int | None = None,
        stderr: str = "",
        hint: str = "",
    ) -> None:
        super().__init__(message, hint=hint)
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr

    def one_line(self) -> str:
        last = last_line(self.stderr)
        base = f"{self.message} ({last})" if last and last not in self.message else self.message
        text = f"{base}: {self.hint}" if self.hint else base
        return " ".join(text.split())


class EngineError(CommandError):
    """The container engine (dockerd, buildx) failed or is unreachable."""


class RegistryError(CommandError):
    """The registry refused, failed or could not be reached."""


class GateError(PipelineError):
    """A quality gate (container test, scan) failed: nothing may be pushed."""


def last_line(text: str) -> str:
    """The last non-empty line of a command's output, stripped: usually the real error."""
    for line in reversed(text.strip().splitlines()):
        if line.strip():
            return line.strip()
    return ""


class ScannerError(CommandError):
    """A security scanner (Trivy, hadolint) failed for a real reason, not a missing database."""


class LintError(GateError):
    """A linter (actionlint, zizmor, check-jsonschema, hadolint) found problems."""
