"""Dockerfile -> inputs, and Docker's ignore-file and glob matching: one test per rule.

Each case is a small Dockerfile and a few files; no Docker engine is needed.
The behaviour each test pins down was checked against Docker 20.10's classic
builder driven by docker-py, and (at the end, "BuildKit") against its BuildKit driven
by the Docker CLI; tests/test_dockerfile_judge.py checks the inputs against the engine
itself, under both builders.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from pachhook.config import ImageConfig
from pachhook.docker.ignore import (
    BadPattern,
    compile_ignore,
    filepath_match,
    go_clean,
    has_wildcards,
    read_patterns,
)
from pachhook.docker.inputs import analyze, image_inputs
from pachhook.docker.parse import parse
from pachhook.errors import InputError


def is_excluded(text: str, path: str) -> bool:
    """Whether an ignore file with this text keeps the context-relative `path` from the builder."""
    return compile_ignore(text).excluded(go_clean(path.lstrip("/")) if path else ".")


def filter_paths(text: str, paths: list[str]) -> list[str]:
    """The context-relative `paths` that an ignore file with this text lets through."""
    return [p for p in paths if not compile_ignore(text).excluded(p)]


def inputs(
    dockerfile: str | None,
    files: Mapping[str, str] | Sequence[str] = (),
    *,
    context: str = ".",
    name: str = "Dockerfile",
    target: str | None = None,
    build_args: Mapping[str, str] | None = None,
    builder: str = "classic",
    configured: str = "auto",
) -> list[str]:
    """The inputs of an image whose Dockerfile (at context/name) has this text, under
    `builder`; `configured` is the builder the configuration asked for."""
    contents = dict(files) if isinstance(files, Mapping) else {p: p for p in files}
    image = ImageConfig(
        name="registry.example/app",
        context=context,
        dockerfile=name,
        target=target,
        build_args=dict(build_args or {}),
        builder=configured,
    )
    if dockerfile is not None:
        contents[image.dockerfile_path] = dockerfile
    paths = sorted(contents)

    def read(path: str) -> bytes | None:
        text = contents.get(path)
        return None if text is None else text.encode()

    return list(image_inputs(image, paths, read, builder=builder))


def error(dockerfile: str | None, files: Mapping[str, str] | Sequence[str] = (), **kw: Any) -> str:
    """The one-line InputError message the analysis gives."""
    with pytest.raises(InputError) as caught:
        inputs(dockerfile, files, **kw)
    message = str(caught.value)
    assert "\n" not in message
    assert caught.value.exit_code == 2
    return message


FILES = ["a.txt", "b.txt", "c.txt", "src/main.py", "src/util.py", "src/lib/deep.py", "other/x"]


# --- the result ---------------------------------------------------------------------------------


def test_dockerfile_and_copied_files_are_inputs_sorted() -> None:
    assert inputs("FROM scratch\nCOPY c.txt a.txt /x/\n", FILES) == ["Dockerfile", "a.txt", "c.txt"]


def test_files_never_copied_are_not_inputs() -> None:
    assert inputs("FROM scratch\nRUN echo hi\n", FILES) == ["Dockerfile"]


def test_missing_dockerfile_is_an_input_error() -> None:
    message = error(None, FILES)
    assert message.startswith("Dockerfile: no such Dockerfile")


def test_analysis_names_the_needed_stages() -> None:
    text = "FROM scratch AS a\nFROM scratch AS b\nFROM a\n"
    image = ImageConfig(name="x")
    result = analyze(image, ["Dockerfile"], lambda p: text.encode() if p == "Dockerfile" else None)
    assert result.stages == ("a", "2")
    assert result.ignore_file is None


# --- parsing: continuations, comments, directives, heredocs -------------------------------------


def test_line_continuation_joins_sources() -> None:
    assert inputs("FROM scratch\nCOPY a.txt \\\n     b.txt /x/\n", FILES) == [
        "Dockerfile",
        "a.txt",
        "b.txt",
    ]


def test_comments_and_empty_lines_inside_a_continuation_are_skipped() -> None:
    text = "FROM scratch\nCOPY a.txt \\\n# c.txt\n\n   # also\n  b.txt /x/\n"
    assert inputs(text, FILES) == ["Dockerfile", "a.txt", "b.txt"]


def test_comment_lines_are_not_instructions() -> None:
    text = "# COPY c.txt /\nFROM scratch\n  # COPY b.txt /\nCOPY a.txt /x\n"
    assert inputs(text, FILES) == ["Dockerfile", "a.txt"]


def test_escape_directive_changes_the_continuation_character() -> None:
    text = "# escape=`\nFROM scratch\nCOPY a.txt `\n  b.txt /x/\n"
    assert inputs(text, FILES) == ["Dockerfile", "a.txt", "b.txt"]


def test_escape_directive_after_another_line_is_a_comment() -> None:
    # Directives count only at the very top; here ` is no escape, so the
    # instruction ends at that line and the next line is an unknown instruction.
    text = "# hello\n# escape=`\nFROM scratch\nCOPY a.txt `\n  b.txt /x/\n"
    assert "unknown instruction B.TXT" in error(text, FILES)


def test_escape_directive_with_a_bad_character_is_an_error() -> None:
    assert "invalid escape" in error("# escape=x\nFROM scratch\n", FILES)


def test_backslash_is_literal_in_words_with_backtick_escape() -> None:
    text = "# escape=`\nFROM scratch\nCOPY dir\\file /x\n"
    assert inputs(text, ["dir\\file"]) == ["Dockerfile", "dir\\file"]


def test_crlf_line_endings_and_bom() -> None:
    text = "\ufeffFROM scratch\r\nCOPY a.txt \\\r\n  b.txt /x/\r\n"
    assert inputs(text, FILES) == ["Dockerfile", "a.txt", "b.txt"]


def test_heredoc_bodies_are_skipped() -> None:
    text = (
        "FROM scratch\n"
        "RUN <<EOF\nCOPY c.txt /nope\nEOF\n"
        "RUN <<-'END' cat >/x\n\t\tnot an instruction\n\tEND\n"
        "COPY a.txt /x\n"
    )
    assert inputs(text, FILES) == ["Dockerfile", "a.txt"]


def test_heredoc_source_of_copy_is_inline_content() -> None:
    text = "FROM scratch\nCOPY <<EOF a.txt /dir/\nhello\nEOF\n"
    assert inputs(text, FILES) == ["Dockerfile", "a.txt"]
    assert inputs("FROM scratch\nCOPY <<EOF /x\nhello\nEOF\n", FILES) == ["Dockerfile"]


def test_unterminated_heredoc_is_an_error() -> None:
    assert "unterminated heredoc <<EOF" in error("FROM scratch\nRUN <<EOF\necho\n", FILES)


def test_unknown_instruction_names_the_line() -> None:
    message = error("FROM scratch\nCOPY a.txt /x\nCOPPY b.txt /y\n", FILES)
    assert message.startswith("Dockerfile:3: unknown instruction COPPY;")


def test_parse_keeps_start_lines() -> None:
    parsed = parse("# escape=`\n\nFROM scratch\nCOPY --chown=1 a `\n b /x/\n")
    assert parsed.escape == "`"
    assert [(i.cmd, i.line, i.flags) for i in parsed.instructions] == [
        ("from", 3, ()),
        ("copy", 4, ("--chown=1",)),
    ]
    assert parsed.instructions[1].rest == "a  b /x/"


# --- ARG, ENV and expansion ---------------------------------------------------------------------


def test_arg_default_in_source() -> None:
    text = "FROM scratch\nARG F=a.txt\nCOPY $F ${F} /x/\n"
    assert inputs(text, FILES) == ["Dockerfile", "a.txt"]


def test_build_args_override_the_default() -> None:
    text = "FROM scratch\nARG F=a.txt\nCOPY $F /x\n"
    assert inputs(text, FILES, build_args={"F": "b.txt"}) == ["Dockerfile", "b.txt"]


def test_global_arg_is_invisible_in_a_stage_until_declared_there() -> None:
    text = "ARG F=a.txt\nFROM scratch\nCOPY ${F:-b.txt} /x\n"
    assert inputs(text, FILES) == ["Dockerfile", "b.txt"]


def test_redeclared_global_arg_takes_the_global_value_or_build_arg() -> None:
    text = "ARG F=a.txt\nFROM scratch\nARG F\nCOPY $F /x\n"
    assert inputs(text, FILES) == ["Dockerfile", "a.txt"]
    assert inputs(text, FILES, build_args={"F": "c.txt"}) == ["Dockerfile", "c.txt"]


def test_stage_default_beats_the_global_default() -> None:
    text = "ARG F=a.txt\nFROM scratch\nARG F=b.txt\nCOPY $F /x\n"
    assert inputs(text, FILES) == ["Dockerfile", "b.txt"]


def test_global_args_see_earlier_global_args_with_overrides() -> None:
    text = "ARG D=a\nARG F=$D.txt\nFROM scratch\nARG F\nCOPY $F /x\n"
    assert inputs(text, FILES) == ["Dockerfile", "a.txt"]
    assert inputs(text, FILES, build_args={"D": "c"}) == ["Dockerfile", "c.txt"]


def test_undeclared_build_arg_is_not_used() -> None:
    text = "FROM scratch\nCOPY ${F:-a.txt} /x\n"
    assert inputs(text, FILES, build_args={"F": "b.txt"}) == ["Dockerfile", "a.txt"]


def test_proxy_build_args_need_no_declaration() -> None:
    text = "FROM scratch\nCOPY ${HTTP_PROXY:-a.txt} /x\n"
    assert inputs(text, FILES, build_args={"HTTP_PROXY": "b.txt"}) == ["Dockerfile", "b.txt"]


def test_arg_without_default_later_clears_the_default() -> None:
    text = "FROM scratch\nARG F=a.txt\nARG F\nCOPY ${F:-b.txt} /x\n"
    assert inputs(text, FILES) == ["Dockerfile", "b.txt"]


def test_several_args_on_one_line_and_quotes() -> None:
    text = 'FROM scratch\nARG A=a.txt B="b.txt"\nCOPY $A $B /x/\n'
    assert inputs(text, FILES) == ["Dockerfile", "a.txt", "b.txt"]


def test_arg_default_is_expanded() -> None:
    text = "FROM scratch\nARG D=src\nARG F=${D}/main.py\nCOPY $F /x\n"
    assert inputs(text, FILES) == ["Dockerfile", "src/main.py"]


def test_substitution_modifiers() -> None:
    text = (
        "FROM scratch\nARG SET=1\nARG EMPTY=\nCOPY ${EMPTY:-a.txt} ${SET:+b.txt}${EMPTY:+x} /x/\n"
    )
    assert inputs(text, FILES) == ["Dockerfile", "a.txt", "b.txt"]


def test_dash_without_colon_is_an_error_in_docker_20_10() -> None:
    assert "missing ':'" in error("FROM scratch\nCOPY ${F-a.txt} /x\n", FILES)


def test_question_modifier_fails_when_unset() -> None:
    message = error("FROM scratch\nCOPY ${F:?set-it} /x\n", FILES)
    assert message.startswith("Dockerfile:2: ") and "F is unset (set-it)" in message
    # Words are split on blanks before expansion, so a blank breaks the ${...}.
    assert "not closed" in error("FROM scratch\nCOPY ${F:?set it} /x\n", FILES)
    assert inputs("FROM scratch\nARG F=a.txt\nCOPY ${F:?} /x\n", FILES) == ["Dockerfile", "a.txt"]


def test_escaped_and_single_quoted_dollar_is_literal() -> None:
    text = "FROM scratch\nARG F=a.txt\nCOPY \\$F '$F' /x/\n"
    assert inputs(text, ["$F", "a.txt"]) == ["$F", "Dockerfile"]


def test_env_expands_in_sources() -> None:
    text = "FROM scratch\nENV DIR=src\nCOPY $DIR/main.py /x\n"
    assert inputs(text, FILES) == ["Dockerfile", "src/main.py"]


def test_env_old_form() -> None:
    assert inputs("FROM scratch\nENV F a.txt\nCOPY $F /x\n", FILES) == ["Dockerfile", "a.txt"]


def test_env_wins_over_arg_whatever_the_order() -> None:
    for text in (
        "FROM scratch\nARG F=b.txt\nENV F=a.txt\nCOPY $F /x\n",
        "FROM scratch\nENV F=a.txt\nARG F=b.txt\nCOPY $F /x\n",
    ):
        assert inputs(text, FILES, build_args={"F": "c.txt"}) == ["Dockerfile", "a.txt"]


def test_env_values_of_one_instruction_see_the_env_before_it() -> None:
    text = "FROM scratch\nENV F=c.txt\nENV F=a.txt G=$F\nCOPY $G /x\n"
    assert inputs(text, FILES) == ["Dockerfile", "c.txt"]


def test_env_is_inherited_from_a_parent_stage_but_arg_is_not() -> None:
    text = "FROM scratch AS base\nENV E=a.txt\nARG A=b.txt\nFROM base\nCOPY $E ${A:-c.txt} /x/\n"
    assert inputs(text, FILES) == ["Dockerfile", "a.txt", "c.txt"]


def test_variable_does_not_split_words() -> None:
    text = 'FROM scratch\nARG F="a.txt b.txt"\nCOPY $F /x/\n'
    assert inputs(text, ["a.txt b.txt", "a.txt", "b.txt"]) == ["Dockerfile", "a.txt b.txt"]


# --- stages -------------------------------------------------------------------------------------

MULTI = (
    "FROM scratch AS deps\nCOPY a.txt /a\n"
    "FROM scratch AS test\nCOPY b.txt /b\n"
    "FROM scratch AS build\nCOPY --from=deps /a /a\nCOPY src/ /src/\n"
    "FROM build AS runtime\nCOPY c.txt /c\n"
)


def test_without_target_the_last_stage_and_what_it_needs() -> None:
    assert inputs(MULTI, FILES) == [
        "Dockerfile",
        "a.txt",
        "c.txt",
        "src/lib/deep.py",
        "src/main.py",
        "src/util.py",
    ]


def test_target_takes_only_the_stages_it_needs() -> None:
    assert inputs(MULTI, FILES, target="test") == ["Dockerfile", "b.txt"]
    assert inputs(MULTI, FILES, target="BUILD") == [
        "Dockerfile",
        "a.txt",
        "src/lib/deep.py",
        "src/main.py",
        "src/util.py",
    ]


def test_unknown_target_is_an_error() -> None:
    message = error(MULTI, FILES, target="prod")
    assert "target 'prod'" in message and "deps, test, build, runtime" in message


def test_stages_after_the_target_are_not_built() -> None:
    text = "FROM scratch AS one\nCOPY a.txt /a\nFROM scratch\nCOPY missing /m\n"
    assert inputs(text, FILES, target="one") == ["Dockerfile", "a.txt"]


def test_unneeded_stage_before_the_target_still_fails_on_a_missing_source() -> None:
    text = "FROM scratch AS one\nCOPY missing /m\nFROM scratch\nCOPY a.txt /a\n"
    assert error(text, FILES).startswith("Dockerfile:2: COPY source 'missing' does not exist")


def test_copy_from_index_and_case_insensitive_name() -> None:
    text = "FROM scratch AS Deps\nCOPY a.txt /a\nFROM scratch\nCOPY b.txt /b\n"
    by_index = text + "FROM scratch\nCOPY --from=0 /a /a\n"
    by_name = text + "FROM scratch\nCOPY --from=DEPS /a /a\n"
    assert inputs(by_index, FILES) == ["Dockerfile", "a.txt"]
    assert inputs(by_name, FILES) == ["Dockerfile", "a.txt"]


def test_copy_from_an_index_out_of_range_is_an_error() -> None:
    text = "FROM scratch\nCOPY a.txt /a\nFROM scratch\nCOPY --from=1 /a /a\n"
    assert error(text, FILES).startswith("Dockerfile:4: --from=1: there is no stage 1")


def test_copy_from_an_image_adds_no_file() -> None:
    text = "FROM scratch\nCOPY --from=busybox:1.36 /bin/sh /sh\nCOPY --from=later /x /x\n"
    assert inputs(text, FILES) == ["Dockerfile"]


def test_copy_from_is_not_expanded_by_the_classic_builder() -> None:
    text = "FROM scratch AS s\nCOPY a.txt /a\nFROM scratch\nARG S=s\nCOPY --from=$S /a /a\n"
    assert inputs(text, FILES) == ["Dockerfile"]


def test_from_a_stage_given_by_a_global_arg() -> None:
    text = "ARG BASE=one\nFROM scratch AS one\nCOPY a.txt /a\nFROM scratch AS two\nCOPY b.txt /b\nFROM $BASE\n"
    assert inputs(text, FILES) == ["Dockerfile", "a.txt"]
    assert inputs(text, FILES, build_args={"BASE": "two"}) == ["Dockerfile", "b.txt"]


def test_onbuild_triggers_run_in_the_child_stage() -> None:
    text = "FROM scratch AS base\nONBUILD COPY a.txt /a\nFROM base\n"
    assert inputs(text, FILES) == ["Dockerfile", "a.txt"]


def test_instructions_before_the_first_from() -> None:
    assert "before the first FROM" in error("COPY a.txt /a\nFROM scratch\n", FILES)
    assert "no FROM" in error("ARG A=1\n", FILES)


# --- COPY and ADD sources -----------------------------------------------------------------------


def test_json_form_with_expansion() -> None:
    text = 'FROM scratch\nARG F=a.txt\nCOPY ["$F", "b.txt", "/x/"]\n'
    assert inputs(text, FILES) == ["Dockerfile", "a.txt", "b.txt"]


def test_directory_source_copies_everything_below_it() -> None:
    assert inputs("FROM scratch\nCOPY src /src\n", FILES) == [
        "Dockerfile",
        "src/lib/deep.py",
        "src/main.py",
        "src/util.py",
    ]


def test_dot_copies_the_whole_context() -> None:
    files = ["app/a", "app/b/c", "other/x"]
    assert inputs("FROM scratch\nCOPY . .\n", files, context="app") == [
        "app/Dockerfile",
        "app/a",
        "app/b/c",
    ]


def test_leading_slash_dot_slash_and_inner_dots_are_cleaned() -> None:
    text = "FROM scratch\nCOPY /a.txt ./b.txt src/../c.txt src/./main.py /x/\n"
    assert inputs(text, FILES) == ["Dockerfile", "a.txt", "b.txt", "c.txt", "src/main.py"]


def test_glob_star_does_not_cross_directories() -> None:
    text = "FROM scratch\nCOPY *.txt src/*.py /x/\n"
    assert inputs(text, FILES) == [
        "Dockerfile",
        "a.txt",
        "b.txt",
        "c.txt",
        "src/main.py",
        "src/util.py",
    ]


def test_glob_question_mark_and_class() -> None:
    text = "FROM scratch\nCOPY [ab].txt ?.tx[^a-s] /x/\n"
    assert inputs(text, FILES) == ["Dockerfile", "a.txt", "b.txt", "c.txt"]


def test_glob_matching_a_directory_copies_it() -> None:
    text = "FROM scratch\nCOPY sr* /x/\n"
    assert inputs(text, FILES) == [
        "Dockerfile",
        "src/lib/deep.py",
        "src/main.py",
        "src/util.py",
    ]


def test_glob_in_a_middle_component() -> None:
    files = ["svc/a/conf.yml", "svc/b/conf.yml", "svc/b/other.yml", "svc/c/d/conf.yml"]
    assert inputs("FROM scratch\nCOPY svc/*/conf.yml /x/\n", files) == [
        "Dockerfile",
        "svc/a/conf.yml",
        "svc/b/conf.yml",
    ]


def test_escaped_star_is_still_a_wildcard_after_expansion() -> None:
    # The lexer drops the backslash before Docker looks for wildcards.
    assert inputs("FROM scratch\nCOPY a\\*b /x/\n", ["a*b", "axb"]) == ["Dockerfile", "a*b", "axb"]


def test_glob_matching_nothing_is_fine_next_to_another_source() -> None:
    assert inputs("FROM scratch\nCOPY *.nope a.txt /x/\n", FILES) == ["Dockerfile", "a.txt"]


def test_glob_matching_nothing_alone_is_an_error() -> None:
    message = error("FROM scratch\nRUN true\nCOPY *.nope /x/\n", FILES)
    assert message.startswith("Dockerfile:3: COPY has no source files: *.nope matches nothing")


def test_missing_source_names_the_line() -> None:
    message = error("FROM scratch\n\nCOPY a.txt \\\n  missing.txt /x/\n", FILES)
    assert message.startswith("Dockerfile:3: COPY source 'missing.txt' does not exist")
    assert message.count(";") == 1


def test_source_outside_the_context_is_an_error() -> None:
    for source in ("../x", "/../x", "./../x", "src/../../x"):
        message = error(f"FROM scratch\nCOPY {source} /x\n", ["app/a", "x"], context="app")
        assert message.startswith("app/Dockerfile:2: COPY source")
        assert "outside the build context 'app'" in message


def test_glob_outside_the_context_matches_nothing() -> None:
    assert "has no source files" in error("FROM scratch\nCOPY ../* /x/\n", ["app/a"], context="app")


def test_several_sources_need_a_directory_destination() -> None:
    assert "end the destination with /" in error("FROM scratch\nCOPY a.txt b.txt /x\n", FILES)
    assert "end the destination with /" in error("FROM scratch\nCOPY *.txt /x\n", FILES)
    assert inputs("FROM scratch\nCOPY src /x\n", FILES)[0] == "Dockerfile"


def test_copy_needs_a_destination() -> None:
    assert "at least one source and a destination" in error("FROM scratch\nCOPY a.txt\n", FILES)


def test_chown_is_accepted() -> None:
    text = "FROM scratch\nARG U=1000\nCOPY --chown=$U:$U a.txt /x\nADD --chown=1 b.txt /y\n"
    assert inputs(text, FILES) == ["Dockerfile", "a.txt", "b.txt"]


def test_chmod_needs_buildkit() -> None:
    message = error("FROM scratch\nCOPY --chmod=644 a.txt /x\n", FILES)
    assert message.startswith("Dockerfile:2: COPY --chmod needs BuildKit")


@pytest.mark.parametrize(
    "line",
    ["COPY --link a.txt /x", "COPY --parents a.txt /x/", "COPY --exclude=*.md . /x"],
)
def test_buildkit_flags_under_the_classic_builder_say_to_use_buildkit(line: str) -> None:
    message = error(f"FROM scratch AS s\n{line}\n", FILES)
    assert message.startswith("Dockerfile:2: ") and "needs BuildKit" in message


def test_flags_no_builder_knows() -> None:
    message = error("FROM scratch AS s\nADD --from=s a /x\n", FILES)
    assert message.startswith("Dockerfile:2: ") and "has no such flag" in message


def test_add_of_a_url_adds_no_file() -> None:
    text = "FROM scratch\nADD https://example.com/x.tgz http://example.com/y a.txt /x/\n"
    assert inputs(text, FILES) == ["Dockerfile", "a.txt"]


def test_copy_of_a_url_is_an_error() -> None:
    assert "can't be a URL for COPY" in error("FROM scratch\nCOPY https://e.com/x /x\n", FILES)


def test_add_of_a_git_url_is_a_missing_path_for_the_classic_builder() -> None:
    message = error("FROM scratch\nADD git@github.com:o/r.git /src\n", FILES)
    assert "does not exist" in message


def test_add_of_a_local_archive_is_an_input() -> None:
    assert inputs("FROM scratch\nADD a.txt /x\n", FILES) == ["Dockerfile", "a.txt"]


def test_source_through_a_symlinked_directory() -> None:
    files = {"real/f": "x", "link": "real"}
    assert inputs("FROM scratch\nCOPY link/f /x\n", files) == ["Dockerfile", "link", "real/f"]


def test_symlinked_file_source_brings_its_target() -> None:
    files = {"data/v1.csv": "1,2", "current.csv": "data/v1.csv"}
    assert inputs("FROM scratch\nCOPY current.csv /x\n", files) == [
        "Dockerfile",
        "current.csv",
        "data/v1.csv",
    ]


def test_guessed_symlink_to_an_ignored_file_is_just_a_file() -> None:
    files = {".dockerignore": "secret\n", "secret": "s", "NOTES": "secret"}
    assert inputs("FROM scratch\nCOPY NOTES /x\n", files) == [
        ".dockerignore",
        "Dockerfile",
        "NOTES",
    ]


def test_known_modes_replace_the_guess() -> None:
    files = {"real/f": "x", "link": "real", "NAME": "real/f", "dangling": "gone"}
    paths = sorted([*files, "Dockerfile"])
    links = {"link", "dangling"}

    def run(text: str) -> list[str]:
        contents = {**files, "Dockerfile": text}
        return list(
            image_inputs(
                ImageConfig(name="x"),
                paths,
                lambda p: contents[p].encode() if p in contents else None,
                is_link=lambda p: p in links,
            )
        )

    assert run("FROM scratch\nCOPY link/f NAME /x/\n") == ["Dockerfile", "NAME", "link", "real/f"]
    with pytest.raises(InputError, match="'dangling' does not exist"):
        run("FROM scratch\nCOPY dangling /x\n")


def test_file_whose_text_names_no_path_is_just_a_file() -> None:
    files = {"VERSION": "1.2.3", "notes": "see the docs\nfor more"}
    assert inputs("FROM scratch\nCOPY VERSION notes /x/\n", files) == [
        "Dockerfile",
        "VERSION",
        "notes",
    ]


# --- the context and the ignore file ------------------------------------------------------------


def test_dockerfile_outside_the_context() -> None:
    files = ["app/a", "app/b", "docker/other"]
    assert inputs(
        "FROM scratch\nCOPY . /\n", files, context="app", name="../docker/app.Dockerfile"
    ) == [
        "app/a",
        "app/b",
        "docker/app.Dockerfile",
    ]


def test_ignored_files_are_not_inputs_but_the_ignore_file_and_dockerfile_are() -> None:
    files = {".dockerignore": "*.txt\nDockerfile\n.dockerignore\n", "a.txt": "", "keep.py": ""}
    assert inputs("FROM scratch\nCOPY . .\n", files) == [".dockerignore", "Dockerfile", "keep.py"]


def test_ignore_negation_and_last_match_wins() -> None:
    files = {".dockerignore": "*.txt\n!b.txt\n!c.txt\nc.txt\n", **{p: "" for p in FILES}}
    result = inputs("FROM scratch\nCOPY *.txt /x/\n", files)
    assert result == [".dockerignore", "Dockerfile", "b.txt"]


def test_ignore_double_star_and_leading_slash() -> None:
    files = {
        ".dockerignore": "**/*.pyc\n/build\n",
        "a.pyc": "",
        "src/m.py": "",
        "src/m.pyc": "",
        "build/out": "",
        "src/build/kept": "",
    }
    assert inputs("FROM scratch\nCOPY . .\n", files) == [
        ".dockerignore",
        "Dockerfile",
        "src/build/kept",
        "src/m.py",
    ]


def test_ignored_directory_hides_everything_below_unless_reincluded() -> None:
    files = {".dockerignore": "src\n!src/lib/deep.py\n", **{p: "" for p in FILES}}
    assert inputs("FROM scratch\nCOPY src /src\n", files) == [
        ".dockerignore",
        "Dockerfile",
        "src/lib/deep.py",
    ]


def test_copy_of_an_ignored_file_is_an_error() -> None:
    files = {".dockerignore": "a.txt\n", **{p: "" for p in FILES}}
    message = error("FROM scratch\nCOPY a.txt /x\n", files)
    assert "'a.txt' is excluded by .dockerignore" in message


def test_dockerfile_is_copyable_only_when_not_ignored() -> None:
    files = {".dockerignore": "Dockerfile\n", "a": ""}
    assert "excluded by .dockerignore" in error("FROM scratch\nCOPY Dockerfile /x\n", files)


def test_ignore_file_of_the_context_root_only() -> None:
    files = {
        ".dockerignore": "a\n",  # the repository root is not the context
        "app/.dockerignore": "b\n",
        "app/a": "",
        "app/b": "",
    }
    assert inputs("FROM scratch\nCOPY . .\n", files, context="app") == [
        "app/.dockerignore",
        "app/Dockerfile",
        "app/a",
    ]


def test_dockerfile_specific_ignore_file_is_not_honoured() -> None:
    # The classic builder and docker-py read only <context>/.dockerignore (checked on the engine).
    files = {"app.Dockerfile.dockerignore": "a.txt\n", **{p: "" for p in FILES}}
    assert inputs("FROM scratch\nCOPY a.txt /x\n", files, name="app.Dockerfile") == [
        "a.txt",
        "app.Dockerfile",
    ]


def test_bad_ignore_pattern_is_an_error_naming_its_line() -> None:
    files = {"app/.dockerignore": "# c\nok\n[z-a\n", "app/a": ""}
    message = error("FROM scratch\nCOPY . .\n", files, context="app")
    assert message.startswith("app/.dockerignore:3: bad pattern '[z-a'")


# --- dockerignore module ------------------------------------------------------------------------


def test_read_patterns_like_docker() -> None:
    text = "\ufeff# comment\n  spaced  \n\n !  neg \n/abs/./x/\n  # not a comment\n/\nr\r\n"
    assert read_patterns(text) == [
        (2, "spaced"),
        (4, "!neg"),
        (5, "abs/x"),
        (6, "# not a comment"),
        (7, "/"),
        (8, "r"),
    ]


def test_illegal_exclusion_pattern() -> None:
    with pytest.raises(InputError, match=r"^x/.dockerignore:2: illegal exclusion pattern"):
        compile_ignore("a\n!\n", "x/.dockerignore")


# (pattern, path, excluded): moby/patternmatcher's own table, for clean paths.
PATTERNMATCHER_CASES = [
    ("**", "file", True),
    ("**", "dir/file", True),
    ("**/", "dir/file", True),
    ("**/**", "dir/file", True),
    ("dir/**", "dir/file", True),
    ("dir/**", "dir/dir2/file", True),
    ("**/dir", "dir", True),
    ("**/dir", "dir/file", True),
    ("**/dir2/*", "dir/dir2/file", True),
    ("**/dir2/**", "dir/dir2/dir3/file", True),
    ("**file", "file", True),
    ("**file", "dir/file", True),
    ("**/file", "dir/file", True),
    ("**file", "dir/dir/file", True),
    ("**/file", "dir/dir/file", True),
    ("**/file*", "dir/dir/file", True),
    ("**/file*", "dir/dir/file.txt", True),
    ("**/file*txt", "dir/dir/file.txt", True),
    ("**/file*.txt", "dir/dir/file.txt", True),
    ("**/file*.txt*", "dir/dir/file.txt", True),
    ("**/**/*.txt", "dir/dir/file.txt", True),
    ("**/**/*.txt2", "dir/dir/file.txt", False),
    ("**/*.txt", "file.txt", True),
    ("**/**/*.txt", "file.txt", True),
    ("a**/*.txt", "a/file.txt", True),
    ("a**/*.txt", "a/dir/file.txt", True),
    ("a**/*.txt", "a/dir/dir/file.txt", True),
    ("a/*.txt", "a/dir/file.txt", False),
    ("a/*.txt", "a/file.txt", True),
    ("a/*.txt**", "a/file.txt", True),
    ("a[b-d]e", "ae", False),
    ("a[b-d]e", "ace", True),
    ("a[b-d]e", "aae", False),
    ("a[^b-d]e", "aze", True),
    (".*", ".foo", True),
    (".*", "foo", False),
    ("abc.def", "abcdef", False),
    ("abc.def", "abc.def", True),
    ("abc.def", "abcZdef", False),
    ("abc?def", "abcZdef", True),
    ("abc?def", "abcdef", False),
    ("a\\\\", "a\\", True),
    ("**/foo/bar", "foo/bar", True),
    ("**/foo/bar", "dir/foo/bar", True),
    ("**/foo/bar", "dir/dir2/foo/bar", True),
    ("abc/**", "abc", False),
    ("abc/**", "abc/def", True),
    ("abc/**", "abc/def/ghi", True),
    ("**/.foo", ".foo", True),
    ("**/.foo", "bar.foo", False),
    ("a(b)c/def", "a(b)c/def", True),
    ("a(b)c/def", "a(b)c/xyz", False),
    ("a.|)$(}+{bc", "a.|)$(}+{bc", True),
    ("dist/*.whl", "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", True),
    # a pattern matching a parent directory excludes what is below it
    ("docs", "docs/a/b.md", True),
    ("*/tmp", "x/tmp/y/z", True),
    ("d*", "dir/file", True),
    ("/build", "build/out", True),
    ("build/", "build/out", True),
    ("./build/../build", "build/out", True),
]


@pytest.mark.parametrize(("pattern", "path", "excluded"), PATTERNMATCHER_CASES)
def test_patternmatcher_table(pattern: str, path: str, excluded: bool) -> None:
    assert is_excluded(pattern + "\n", path) is excluded


def test_is_excluded_never_excludes_the_context_itself() -> None:
    assert is_excluded("**\n", ".") is False


def test_filter_paths_keeps_order_and_reincluded_files() -> None:
    text = "*.log\ndocs\n!docs/keep.md\n!important.log\n"
    paths = ["a.log", "docs/x.md", "docs/keep.md", "important.log", "src/a.py", "src/b.log"]
    assert filter_paths(text, paths) == ["docs/keep.md", "important.log", "src/a.py", "src/b.log"]


def test_negation_inside_an_excluded_directory_wins_only_after_it() -> None:
    assert is_excluded("!docs/keep.md\ndocs\n", "docs/keep.md") is True
    assert is_excluded("docs\n!docs/keep.md\n", "docs/keep.md") is False


def test_empty_ignore_file_excludes_nothing() -> None:
    matcher = compile_ignore("# only a comment\n\n")
    assert not matcher
    assert filter_paths("# only a comment\n\n", ["a", "b/c"]) == ["a", "b/c"]


# --- Go's filepath.Match ------------------------------------------------------------------------

# (pattern, name, matched or BadPattern): Go's own table (path/filepath/match_test.go).
GO_MATCH_CASES: list[tuple[str, str, bool | type[BadPattern]]] = [
    ("abc", "abc", True),
    ("*", "abc", True),
    ("*c", "abc", True),
    ("a*", "a", True),
    ("a*", "abc", True),
    ("a*", "ab/c", False),
    ("a*/b", "abc/b", True),
    ("a*/b", "a/c/b", False),
    ("a*b*c*d*e*/f", "axbxcxdxe/f", True),
    ("a*b*c*d*e*/f", "axbxcxdxexxx/f", True),
    ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", False),
    ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", False),
    ("a*b?c*x", "abxbbxdbxebxczzx", True),
    ("a*b?c*x", "abxbbxdbxebxczzy", False),
    ("ab[c]", "abc", True),
    ("ab[b-d]", "abc", True),
    ("ab[e-g]", "abc", False),
    ("ab[^c]", "abc", False),
    ("ab[^b-d]", "abc", False),
    ("ab[^e-g]", "abc", True),
    ("a\\*b", "a*b", True),
    ("a\\*b", "ab", False),
    ("a?b", "a☺b", True),
    ("a[^a]b", "a☺b", True),
    ("a???b", "a☺b", False),
    ("a[^a][^a][^a]b", "a☺b", False),
    ("[a-ζ]*", "α", True),
    ("*[a-ζ]", "A", False),
    ("a?b", "a/b", False),
    ("a*b", "a/b", False),
    ("[\\]a]", "]", True),
    ("[\\-]", "-", True),
    ("[x\\-]", "x", True),
    ("[x\\-]", "-", True),
    ("[x\\-]", "z", False),
    ("[\\-x]", "x", True),
    ("[\\-x]", "-", True),
    ("[\\-x]", "a", False),
    ("[]a]", "]", BadPattern),
    ("[-]", "-", BadPattern),
    ("[x-]", "x", BadPattern),
    ("[x-]", "-", BadPattern),
    ("[x-]", "z", BadPattern),
    ("[-x]", "x", BadPattern),
    ("[-x]", "-", BadPattern),
    ("[-x]", "a", BadPattern),
    ("\\", "a", BadPattern),
    ("[a-b-c]", "a", BadPattern),
    ("[", "a", BadPattern),
    ("[^", "a", BadPattern),
    ("[^bc", "a", BadPattern),
    ("a[", "a", BadPattern),
    ("a[", "ab", BadPattern),
    ("a[", "x", BadPattern),
    ("a/b[", "x", BadPattern),
    ("*x", "xxx", True),
]


@pytest.mark.parametrize(("pattern", "name", "expected"), GO_MATCH_CASES)
def test_go_filepath_match(pattern: str, name: str, expected: bool | type[BadPattern]) -> None:
    if expected is BadPattern:
        with pytest.raises(BadPattern):
            filepath_match(pattern, name)
    else:
        assert filepath_match(pattern, name) is expected


def test_has_wildcards_skips_escaped_characters() -> None:
    assert has_wildcards("a*") and has_wildcards("a?") and has_wildcards("[ab]")
    assert not has_wildcards("plain/path") and not has_wildcards("a\\*b")


# --- many images over many paths ----------------------------------------------------------------
# (How fast: bench/bench_inputs.py measures it; tests assert what, not how long.)


def test_many_images_over_many_paths() -> None:
    paths = [f"svc{i:03d}/src/m{j:03d}.py" for i in range(100) for j in range(200)]
    files = {p: "" for p in paths}
    for i in range(100):
        files[f"svc{i:03d}/.dockerignore"] = "**/*.pyc\ntests\n!tests/keep\n"
        files[f"svc{i:03d}/Dockerfile"] = "FROM scratch\nCOPY src/*.py /app/\nCOPY . /all/\n"
    ordered = sorted(files)

    def read(path: str) -> bytes | None:
        return files[path].encode() if path in files else None

    for i in range(100):
        image = ImageConfig(name=f"r/svc{i}", context=f"svc{i:03d}")
        result = image_inputs(image, ordered, read)
        assert len(result) == 202
        assert all(path.startswith(f"svc{i:03d}/") for path in result)


# --- BuildKit -------------------------------------------------------------------------------------
# Checked against Docker 20.10's BuildKit (`DOCKER_BUILDKIT=1 docker build`, from a folder).


def bk(
    dockerfile: str | None, files: Mapping[str, str] | Sequence[str] = (), **kw: Any
) -> list[str]:
    return inputs(dockerfile, files, builder="buildkit", **kw)


def bk_error(
    dockerfile: str | None, files: Mapping[str, str] | Sequence[str] = (), **kw: Any
) -> str:
    return error(dockerfile, files, builder="buildkit", **kw)


def test_buildkit_reads_the_ignore_file_beside_the_dockerfile() -> None:
    files = {
        ".dockerignore": "a.txt\n",
        "Dockerfile.dockerignore": "b.txt\n",
        "a.txt": "",
        "b.txt": "",
    }
    text = "FROM scratch\nCOPY . /c/\n"
    # .dockerignore is then an ordinary file of the context, copied by `COPY .`.
    assert bk(text, files) == [".dockerignore", "Dockerfile", "Dockerfile.dockerignore", "a.txt"]
    # The classic builder knows only .dockerignore.
    assert inputs(text, files) == [
        ".dockerignore",
        "Dockerfile",
        "Dockerfile.dockerignore",
        "b.txt",
    ]


def test_buildkit_ignore_file_of_a_dockerfile_outside_the_context() -> None:
    files = {
        "app/.dockerignore": "a.txt\n",
        "docker/app.Dockerfile.dockerignore": "b.txt\n",
        "app/a.txt": "",
        "app/b.txt": "",
    }
    result = bk("FROM scratch\nCOPY . /c/\n", files, context="app", name="../docker/app.Dockerfile")
    assert result == [
        "app/.dockerignore",
        "app/a.txt",
        "docker/app.Dockerfile",
        "docker/app.Dockerfile.dockerignore",
    ]


def test_buildkit_without_its_own_ignore_file_reads_dockerignore() -> None:
    files = {".dockerignore": "a.txt\n", "a.txt": "", "b.txt": ""}
    assert bk("FROM scratch\nCOPY . /c/\n", files) == [".dockerignore", "Dockerfile", "b.txt"]
    assert "excluded by Dockerfile.dockerignore" in bk_error(
        "FROM scratch\nCOPY a.txt /c/\n", {"Dockerfile.dockerignore": "a.txt\n", "a.txt": ""}
    )


def test_run_mount_bind_sources_are_inputs() -> None:
    text = (
        "FROM scratch\n"
        'RUN --mount=type=bind,source=a.txt,target=/a --mount="src=src/lib,dst=/l" true\n'
        "RUN --mount=type=BIND,source=/../b.txt,target=/b,ro true\n"
    )
    assert bk(text, FILES) == ["Dockerfile", "a.txt", "b.txt", "src/lib/deep.py"]


def test_run_mount_bind_without_source_takes_the_whole_visible_context() -> None:
    files = {".dockerignore": "*.txt\n", **{p: "" for p in FILES}}
    result = bk("FROM scratch\nRUN --mount=type=bind,target=/ctx true\n", files)
    assert result == [
        ".dockerignore",
        "Dockerfile",
        "other/x",
        "src/lib/deep.py",
        "src/main.py",
        "src/util.py",
    ]


def test_run_mounts_that_read_no_file() -> None:
    text = (
        "FROM scratch\nRUN --mount=type=cache,target=/c --mount=type=tmpfs,target=/t "
        "--mount=type=secret,id=pip,required --mount=type=ssh true\n"
    )
    assert bk(text, FILES) == ["Dockerfile"]


def test_run_mount_from_a_stage_needs_that_stage() -> None:
    text = (
        "FROM scratch AS gen\nCOPY a.txt /\nFROM scratch AS unused\nCOPY b.txt /\n"
        "FROM scratch\nRUN --mount=type=bind,from=gen,source=/a.txt,target=/a true\n"
        "RUN --mount=type=cache,from=gen,target=/c true\n"
    )
    assert bk(text, FILES) == ["Dockerfile", "a.txt"]


def test_run_mount_from_an_index_is_an_image_not_a_stage() -> None:
    text = "FROM scratch AS gen\nCOPY a.txt /\nFROM scratch\nRUN --mount=from=0,target=/a true\n"
    assert bk(text, FILES) == ["Dockerfile"]


def test_run_mount_errors() -> None:
    assert "unsupported mount type 'foo'" in bk_error(
        "FROM scratch\nRUN --mount=type=foo,target=/x true\n"
    )
    message = bk_error("FROM scratch\nRUN --mount=source=nope.txt,target=/x true\n", FILES)
    assert message.startswith("Dockerfile:2: RUN --mount source 'nope.txt' does not exist")
    assert "takes no variables" in bk_error("FROM scratch\nRUN --mount=from=$S,target=/x true\n")
    assert "must be a key=value pair" in bk_error("FROM scratch\nRUN --mount=type=bind,oops true\n")
    assert "has no value" in bk_error("FROM scratch\nRUN --mount true\n")


def test_run_mount_source_is_expanded_like_a_copy_source() -> None:
    text = "FROM scratch\nARG REQ=a.txt\nRUN --mount=source=$REQ,target=/r true\n"
    assert bk(text, FILES) == ["Dockerfile", "a.txt"]
    assert bk(text, FILES, build_args={"REQ": "c.txt"}) == ["Dockerfile", "c.txt"]


def test_onbuild_run_mount_reads_in_the_child_stage() -> None:
    text = "FROM scratch AS base\nONBUILD RUN --mount=source=a.txt,target=/a true\nFROM base\n"
    assert bk(text, FILES) == ["Dockerfile", "a.txt"]


def test_buildkit_ignores_errors_in_stages_the_target_does_not_need() -> None:
    text = "FROM scratch AS test\nCOPY tests/ /t/\nFROM scratch\nCOPY a.txt /\n"
    assert bk(text, FILES) == ["Dockerfile", "a.txt"]
    assert "'tests/' does not exist" in error(text, FILES)  # the classic builder builds it
    needed = "FROM scratch AS base\nCOPY tests/ /t/\nFROM base\nCOPY a.txt /\n"
    assert "'tests/' does not exist" in bk_error(needed, FILES)


def test_buildkit_copies_what_wildcards_match_even_nothing() -> None:
    assert bk("FROM scratch\nCOPY *.nope /x\n", FILES) == ["Dockerfile"]
    assert bk("FROM scratch\nCOPY *.txt /x\n", FILES) == ["Dockerfile", "a.txt", "b.txt", "c.txt"]
    assert "does not exist" in bk_error("FROM scratch\nCOPY nope.txt /x\n", FILES)


def test_buildkit_flags() -> None:
    text = "FROM scratch\nCOPY --chmod=755 --link a.txt /a\nADD --chmod=600 --checksum=sha256:x b.txt /b\n"
    assert bk(text, FILES) == ["Dockerfile", "a.txt", "b.txt"]
    assert bk("FROM scratch\nRUN --network=none --security=insecure true\n", FILES) == [
        "Dockerfile"
    ]
    assert "BuildKit has no such flag" in bk_error(
        "FROM scratch\nCOPY --frobnicate a.txt /a\n", FILES
    )


def test_run_mount_under_the_classic_builder_says_to_use_buildkit() -> None:
    text = "FROM scratch\nRUN --mount=type=cache,target=/c true\n"
    configured = error(text, FILES, configured="classic")
    assert configured.startswith("Dockerfile:2: RUN --mount needs BuildKit, and image ")
    assert 'set builder = "buildkit"' in configured
    fell_back = error(text, FILES, configured="auto")
    assert 'builder "auto" chose the classic builder' in fell_back
    assert "PACHHOOK_DOCKER_CLI" in fell_back
    # In a stage after the target the classic builder never runs it.
    later = "FROM scratch AS app\nCOPY a.txt /\nFROM app\nRUN --mount=type=cache,target=/c true\n"
    assert inputs(later, FILES, target="app") == ["Dockerfile", "a.txt"]
