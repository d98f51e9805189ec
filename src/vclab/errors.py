"""One error type for bad input: it names the file, line, column and field, and what is allowed."""

from __future__ import annotations

from dataclasses import dataclass, field

# A message echoes what the user wrote; a 10 MB value must not come back whole.
SHOWN_CHARS = 80
MESSAGE_CHARS = 2000


def shown(value: object, limit: int = SHOWN_CHARS) -> str:
    """repr(value), cut to `limit` characters with the length said, for messages."""
    text = repr(value)
    if len(text) <= limit:
        return text
    size = f"{len(value)} characters" if isinstance(value, str) else f"{len(text)} characters shown"
    return f"{text[:limit]}... ({size})"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a user's file."""

    message: str
    file: str = "<input>"
    line: int | None = None  # 1-based
    column: int | None = None  # 1-based
    field: str = ""  # dotted path in the document, e.g. "hypervisors.esx1.nics.vmnic0"

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        fieldpart = f" {self.field}:" if self.field else ""
        message = self.message
        if len(message) > MESSAGE_CHARS:
            message = f"{message[:MESSAGE_CHARS]}... ({len(message) - MESSAGE_CHARS} more characters)"
        if len(fieldpart) > MESSAGE_CHARS // 4:
            fieldpart = f"{fieldpart[:MESSAGE_CHARS // 4]}...:"
        return f"{where}:{fieldpart} {message}"


@dataclass
class ConfigError(Exception):
    """Raised with every problem found in a file, so the user fixes them all in one pass."""

    problems: list[Problem] = field(default_factory=list)

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)


class VclabError(Exception):
    """A failure the user can act on (missing tool, unconverged fabric...): printed, exit 1."""
