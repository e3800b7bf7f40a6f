"""Docker's shell lexer: one Dockerfile word with its variables expanded, as the engine does it.

A port of `shell.Lex.ProcessWord` of Docker 20.10 (pure): `$VAR`, `${VAR}`,
`${VAR:-word}`, `${VAR:+word}`, `${VAR:?word}`, quotes and escapes (the escape
character is the Dockerfile's). `${VAR-word}` is an error in 20.10, and so here.
What a name means is the caller's `Lookup`.
"""

from __future__ import annotations

from collections.abc import Callable

from pachhook.docker.parse import InstructionError

# A variable's value, None when it is unset (`${NAME:?}` tells unset from empty).
Lookup = Callable[[str], str | None]
MAX_NESTING = 100  # ${A:-${B:-...}} deeper than this is refused: the lexer recurses


class _Lexer:
    """One word through Docker's `shell.Lex.ProcessWord`: quotes, escapes, variables."""

    def __init__(self, text: str, escape: str, lookup: Lookup) -> None:
        self.text = text
        self.pos = 0
        self.escape = escape
        self.lookup = lookup
        self.depth = 0

    def _peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def _next(self) -> str:
        ch = self._peek()
        self.pos += 1
        return ch

    def word(self) -> str:
        return self._until("")

    def _until(self, stop: str) -> str:
        out: list[str] = []
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if stop and ch == stop:
                self.pos += 1
                return "".join(out)
            if ch == "'":
                out.append(self._single())
            elif ch == '"':
                out.append(self._double())
            elif ch == "$":
                out.append(self._dollar())
            else:
                self.pos += 1
                if ch == self.escape:
                    if self.pos >= len(self.text):
                        break
                    ch = self._next()
                out.append(ch)
        if stop:
            raise InstructionError(
                f"unexpected end of statement while looking for matching {stop}", "close it"
            )
        return "".join(out)

    def _single(self) -> str:
        self.pos += 1
        end = self.text.find("'", self.pos)
        if end < 0:
            raise InstructionError("a single quote is not closed", "close it")
        value = self.text[self.pos : end]
        self.pos = end + 1
        return value

    def _double(self) -> str:
        self.pos += 1
        out: list[str] = []
        while True:
            ch = self._peek()
            if not ch:
                raise InstructionError("a double quote is not closed", "close it")
            if ch == '"':
                self.pos += 1
                return "".join(out)
            if ch == "$":
                out.append(self._dollar())
                continue
            self.pos += 1
            if ch == self.escape:
                following = self._peek()
                if not following:
                    continue
                if following in ('"', "$", self.escape):
                    ch = self._next()
            out.append(ch)

    def _dollar(self) -> str:
        self.depth += 1
        try:
            if self.depth > MAX_NESTING:
                raise InstructionError(
                    f"variables nested more than {MAX_NESTING} deep", "write it more simply"
                )
            return self._substitution()
        finally:
            self.depth -= 1

    def _substitution(self) -> str:
        self.pos += 1
        if self._peek() != "{":
            name = self._name()
            if not name:
                return "$"
            return self.lookup(name) or ""
        self.pos += 1
        ch = self._peek()
        if not ch:
            raise InstructionError("a ${ is not closed", "add the }")
        if ch in "{}:":
            raise InstructionError(
                "bad substitution", "write ${NAME}, ${NAME:-default} or ${NAME:+value}"
            )
        name = self._name()
        ch = self._next()
        if ch == "}":
            return self.lookup(name) or ""
        if ch == ":":
            modifier = self._next()
            try:
                word = self._until("}")
            except InstructionError:
                if not self._peek():
                    raise InstructionError("a ${ is not closed", "add the }") from None
                raise
            value = self.lookup(name)
            if modifier == "+":
                return word if value else (value or "")
            if modifier == "-":
                return value or word
            if modifier == "?":
                if not value:
                    state = "unset" if value is None else "empty"
                    raise InstructionError(
                        f"${{{name}:?}} fails: {name} is {state} ({word or 'no message'})",
                        f"set {name} with ARG, ENV or a build arg",
                    )
                return value
            raise InstructionError(
                f"unsupported modifier ({modifier}) in substitution",
                "use :- , :+ or :? (Docker 20.10 has no ${NAME-default} form)",
            )
        raise InstructionError(
            f"missing ':' in the substitution of {name}",
            "use ${NAME:-default} (Docker 20.10 has no ${NAME-default} form)",
        )

    def _name(self) -> str:
        start = self.pos
        text = self.text
        if self.pos < len(text):
            ch = text[self.pos]
            if ch.isdecimal():
                while self.pos < len(text) and text[self.pos].isdecimal():
                    self.pos += 1
                return text[start : self.pos]
            if ch in "@*#?-$!":
                self.pos += 1
                return ch
        while self.pos < len(text):
            ch = text[self.pos]
            if not (ch.isalpha() or ch.isdecimal() or ch == "_"):
                break
            self.pos += 1
        return text[start : self.pos]


def expand(text: str, escape: str, lookup: Lookup) -> str:
    """One word through Docker's lexer; raises InstructionError as the builder would fail."""
    return _Lexer(text, escape, lookup).word()
