"""Tests of tests/actions_runner.py, the composite-action emulator: one toy action that uses every
feature the emulator models, and small actions for each rule and each refusal."""

from __future__ import annotations

import json
import os
import re
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests import actions_runner as runner
from tests.actions_runner import ZERO_SHA, RunnerError, load_action, parse_env_file, run_action

SHA = "3" * 40
BEFORE = "1" * 40

TOY = """
name: toy
description: every feature the emulator models
inputs:
  who:
    description: who is greeted
    required: true
  Greeting:
    description: mixed-case id, read case-insensitively
    default: hello
  token:
    description: a secret, passed through env only
    default: ''
  place:
    description: a default computed from the github context
    default: ${{ github.workspace }}/sub
  flag:
    description: YAML 1.2 booleans only
    default: yes
outputs:
  message:
    description: from the heredoc form
    value: ${{ steps.greet.outputs.message }}
  last:
    description: the last value written wins
    value: ${{ steps.greet.outputs.count }}
  seen:
    description: from a later step, through GITHUB_ENV and GITHUB_PATH
    value: ${{ steps.after.outputs.seen }}
runs:
  using: composite
  steps:
    - id: greet
      name: Greet ${{ inputs.who }}
      shell: bash
      working-directory: sub
      env:
        WHO: ${{ inputs.who }}
        GREETING: ${{ inputs.greeting }}
        TOKEN: ${{ inputs.token }}
        FROM_JOB: ${{ env.JOB_LEVEL }}
      run: |
        echo "::add-mask::$TOKEN"
        echo "token is $TOKEN"
        echo "pwd=$PWD"
        echo "input-env=${INPUT_WHO-unset}"
        echo "from-job=$FROM_JOB"
        echo "warning on stderr" >&2
        echo "count=1" >> "$GITHUB_OUTPUT"
        {
          echo "message<<EOF_1"
          printf '%s, %s!\\nsecond line\\n' "$GREETING" "$WHO"
          echo "EOF_1"
        } >> "$GITHUB_OUTPUT"
        echo "count=2" >> "$GITHUB_OUTPUT"
        echo "EXPORTED=from greet" >> "$GITHUB_ENV"
        echo "exported-now=${EXPORTED-unset}"
        mkdir -p "$RUNNER_TEMP/bin"
        printf '#!/bin/sh\\necho tool-ran\\n' > "$RUNNER_TEMP/bin/toytool"
        chmod +x "$RUNNER_TEMP/bin/toytool"
        echo "$RUNNER_TEMP/bin" >> "$GITHUB_PATH"
        echo "::group::Details"
        echo "inside the group"
        echo "::endgroup::"
        echo "::error file=src/app.py,line=7,title=Bad%3A spec%2C really::first%0Asecond %25 done"
        echo "### Greeted $WHO" >> "$GITHUB_STEP_SUMMARY"
    - id: after
      shell: bash
      if: env.EXPORTED == 'FROM GREET' && steps.greet.outcome == 'success'
      run: |
        echo "seen=$EXPORTED $(toytool)" >> "$GITHUB_OUTPUT"
        echo "flag=${{ inputs.flag }}"
    - id: skipped
      shell: bash
      if: ${{ inputs.who != 'bob' }}
      run: echo never
"""


def write_action(root: Path, text: str, name: str = "act") -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "action.yml").write_text(textwrap.dedent(text))
    return folder


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    (ws / "sub").mkdir(parents=True)
    return ws


def push(**kw):  # type: ignore[no-untyped-def]
    return runner.push_event(before=kw.pop("before", BEFORE), after=kw.pop("after", SHA), **kw)


def run(folder: Path, workspace: Path, **kw):  # type: ignore[no-untyped-def]
    kw.setdefault("event", push())
    kw.setdefault("runner_temp", workspace.parent / "runner-temp")
    return run_action(folder, workspace=workspace, **kw)


# ---------------------------------------------------------------- the toy action, end to end


def test_toy_action_end_to_end(tmp_path: Path, workspace: Path) -> None:
    folder = write_action(tmp_path, TOY)
    result = run(
        folder,
        workspace,
        inputs={"WHO": "bob", "token": "s3cr3t-token"},
        env={"JOB_LEVEL": "job value"},
    )
    assert result.ok, result.log
    greet, after, skipped = result.steps

    # inputs: given (case-insensitive), defaults, a default computed from github.*, YAML 1.2 'yes'
    assert result.inputs == {
        "who": "bob",
        "Greeting": "hello",
        "token": "s3cr3t-token",
        "place": f"{workspace.resolve()}/sub",
        "flag": "yes",
    }
    # no INPUT_* variables for a composite action; working-directory is relative to the workspace
    assert "input-env=unset" in greet.stdout
    assert f"pwd={workspace.resolve()}/sub" in greet.stdout
    assert greet.working_directory == workspace.resolve() / "sub"
    # the job's env context reaches the step, stdout and stderr are kept apart
    assert "from-job=job value" in greet.stdout
    assert greet.stderr == "warning on stderr\n"
    # the step name is evaluated
    assert greet.name == "Greet bob"

    # outputs: the heredoc form (no trailing newline), the last of two values wins
    assert greet.outputs["message"] == "hello, bob!\nsecond line"
    assert result.outputs == {
        "message": "hello, bob!\nsecond line",
        "last": "2",
        "seen": "from greet tool-ran",
    }

    # GITHUB_ENV: not in the step that wrote it, in the next one; GITHUB_PATH likewise
    assert "exported-now=unset" in greet.stdout
    assert result.env["EXPORTED"] == "from greet"
    assert result.path == [str(result.runner_temp / "bin")]
    assert after.env["PATH"].split(os.pathsep)[0] == str(result.runner_temp / "bin")

    # if: == is case-insensitive, steps.X.outcome, a false condition skips the step
    assert after.outcome == "success"
    assert (skipped.outcome, skipped.conclusion, skipped.exit_code) == ("skipped", "skipped", None)

    # workflow commands: the mask, the group, the annotation with its escapes undone
    assert "token is ***" in greet.log
    assert "##[group]Details" in greet.log and "##[endgroup]" in greet.log
    [annotation] = result.annotations
    assert annotation.level == "error"
    assert annotation.message == "first\nsecond % done"
    assert annotation.properties == {
        "file": "src/app.py",
        "line": "7",
        "title": "Bad: spec, really",
    }

    # the step summary, per step and for the action
    assert greet.summary == "### Greeted bob\n"
    assert result.summary == "### Greeted bob\n"

    # the secret only reaches the runner through ::add-mask:: and the masked log...
    # ...but the raw stdout line "token is ..." and the env dump printed before the step ran
    # (before the mask existed) are reported: pass tokens from secrets, which are masked first.
    leaks = result.find_secret("s3cr3t-token")
    assert any("stdout line 2" in leak for leak in leaks)
    assert any("log line" in leak for leak in leaks)  # the env dump above the script


def test_secrets_are_masked_from_the_start_and_env_dumps_are_printed(
    tmp_path: Path, workspace: Path
) -> None:
    folder = write_action(tmp_path, TOY)
    result = run(
        folder, workspace, inputs={"who": "bob", "token": "s3cr3t-token"}, secrets=["s3cr3t-token"]
    )
    assert result.ok
    greet = result.steps[0]
    assert "  TOKEN: ***" in greet.log  # the runner prints every env entry of the step, masked
    assert not any("s3cr3t-token" in line for line in result.log)
    # the raw stdout still holds what the step printed: a leak the runner would have masked
    assert [leak for leak in result.find_secret("s3cr3t-token") if "log" in leak] == []
    assert any("stdout" in leak for leak in result.find_secret("s3cr3t-token"))


def test_runner_variables_and_files(tmp_path: Path, workspace: Path) -> None:
    folder = write_action(
        tmp_path,
        """
        name: env
        runs:
          using: composite
          steps:
            - id: a
              shell: bash
              env:
                GITHUB_SHA: an env value cannot replace the runner's own
                TEMP_CTX: ${{ runner.temp }}/${{ runner.os }}
              run: |
                echo "temp_ctx=$TEMP_CTX" >> "$GITHUB_OUTPUT"
                for v in CI GITHUB_ACTIONS GITHUB_EVENT_NAME GITHUB_SHA GITHUB_REF GITHUB_REF_NAME \\
                         GITHUB_WORKSPACE GITHUB_ACTION_PATH RUNNER_TEMP RUNNER_OS; do
                  echo "$v=${!v}" >> "$GITHUB_OUTPUT"
                done
                echo "event_path=$GITHUB_EVENT_PATH" >> "$GITHUB_OUTPUT"
                printf 'MULTI<<END\\nline 1\\nline 2\\nEND\\n' >> "$GITHUB_ENV"
                echo "JOB_LEVEL=overridden" >> "$GITHUB_ENV"
                echo "files=$GITHUB_OUTPUT $GITHUB_ENV $GITHUB_PATH $GITHUB_STEP_SUMMARY" >> "$GITHUB_OUTPUT"
                echo "opts=$- $(set -o | grep pipefail | tr -s ' \\t' ' ')" >> "$GITHUB_OUTPUT"
                echo "script=$0" >> "$GITHUB_OUTPUT"
                echo "ap=${{ github.action_path }}" >> "$GITHUB_OUTPUT"
            - id: b
              shell: bash
              run: |
                echo "files=$GITHUB_OUTPUT $GITHUB_ENV $GITHUB_PATH $GITHUB_STEP_SUMMARY" >> "$GITHUB_OUTPUT"
                echo "multi=${MULTI//$'\\n'/|} job=$JOB_LEVEL" >> "$GITHUB_OUTPUT"
        """,
    )
    event = push(ref="refs/heads/feature/x")
    result = run(folder, workspace, event=event, env={"JOB_LEVEL": "job"})
    assert result.ok, result.log
    a, b = result.steps
    out = a.outputs
    assert out["CI"] == "true" and out["GITHUB_ACTIONS"] == "true"
    assert out["GITHUB_EVENT_NAME"] == "push"
    assert (out["GITHUB_SHA"], out["GITHUB_REF"], out["GITHUB_REF_NAME"]) == (
        SHA,
        "refs/heads/feature/x",
        "feature/x",
    )
    assert out["GITHUB_WORKSPACE"] == str(workspace.resolve())
    assert out["GITHUB_ACTION_PATH"] == out["ap"] == str(folder.resolve())
    assert out["RUNNER_TEMP"] == str(result.runner_temp) and out["RUNNER_OS"] == "Linux"
    assert out["temp_ctx"] == f"{result.runner_temp}/Linux"
    assert out["event_path"] == str(result.event_path)
    assert json.loads(result.event_path.read_text()) == event
    # GITHUB_ENV: multi-line values, and a value that replaces the job's
    assert b.outputs["multi"] == "line 1|line 2 job=overridden"
    # bash --noprofile --norc -e -o pipefail FILE, FILE a fresh .sh under RUNNER_TEMP
    assert a.argv[1:6] == ["--noprofile", "--norc", "-e", "-o", "pipefail"]
    assert "e" in out["opts"].split()[0] and "pipefail on" in out["opts"]
    assert out["script"] == str(a.script_path) and a.script_path.parent == result.runner_temp
    assert a.script_path.suffix == ".sh"
    # each step gets its own, fresh file-command files
    assert set(out["files"].split()).isdisjoint(b.outputs["files"].split())
    assert all("_runner_file_commands" in f for f in out["files"].split())


def test_host_github_variables_do_not_leak_in(
    tmp_path: Path, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITHUB_OUTPUT", "/nonexistent/host-output")
    monkeypatch.setenv("INPUT_WHO", "host")
    folder = write_action(
        tmp_path,
        """
        name: clean
        runs:
          using: composite
          steps:
            - shell: bash
              run: echo "input=${INPUT_WHO-unset} out=$GITHUB_OUTPUT"
        """,
    )
    result = run(folder, workspace)
    assert "input=unset" in result.steps[0].stdout
    assert "/nonexistent" not in result.steps[0].stdout
    with pytest.raises(RunnerError, match="runner-owned"):
        run(folder, workspace, base_env={"PATH": os.environ["PATH"], "GITHUB_TOKEN": "x"})


# ---------------------------------------------------------------- failures and conditions


STATUS = """
name: status
outputs:
  after-failure:
    description: outputs are evaluated after a failure too
    value: ${{ steps.first.outputs.x }}
runs:
  using: composite
  steps:
    - id: first
      shell: bash
      run: |
        echo "x=set before failing" >> "$GITHUB_OUTPUT"
        echo "before the pipe"
        false | true
        echo "not reached: with pipefail a pipe fails when any of its commands fails"
    - id: soft
      shell: bash
      continue-on-error: true
      if: always()
      run: exit 3
    - id: normal
      shell: bash
      run: echo "runs only on success"
    - id: on-failure
      shell: bash
      if: failure() && steps.first.conclusion == 'failure'
      run: echo "cleanup after failure"
    - id: on-always
      shell: bash
      if: ${{ always() }}
      run: echo "always ran; soft=${{ steps.soft.outcome }}/${{ steps.soft.conclusion }}"
"""


def test_failure_skips_the_rest_unless_a_status_function_says_otherwise(
    tmp_path: Path, workspace: Path
) -> None:
    result = run(write_action(tmp_path, STATUS), workspace)
    assert result.conclusion == "failure"
    first, soft, normal, on_failure, on_always = result.steps
    assert (first.outcome, first.exit_code) == ("failure", 1)
    assert first.stdout == "before the pipe\n"
    assert "##[error]Process completed with exit code 1." in first.log
    assert (soft.outcome, soft.conclusion, soft.exit_code) == ("failure", "success", 3)
    assert normal.outcome == "skipped"
    assert on_failure.outcome == "success" and "cleanup after failure" in on_failure.stdout
    assert "soft=failure/success" in on_always.stdout
    assert result.outputs == {"after-failure": "set before failing"}


def test_expression_semantics(tmp_path: Path, workspace: Path) -> None:
    folder = write_action(
        tmp_path,
        """
        name: expr
        inputs:
          a:
            description: a
            default: 'Yes'
          n:
            description: n
            default: '1'
          empty:
            description: e
            default: ''
        runs:
          using: composite
          steps:
            - id: e
              shell: bash
              env:
                QUOTE: ${{ 'it''s' }}
                OR: ${{ inputs.empty || 'fallback' }}
                AND: ${{ inputs.a && 'second' }}
                NOT: ${{ !inputs.empty }}
                CI_EQ: ${{ inputs.a == 'YES' }}
                NUM_EQ: ${{ inputs.n == 1 }}
                NE: ${{ inputs.n != '1' }}
                NULLS: ${{ null }}|${{ steps.later.outputs.x }}|${{ env.MISSING }}
                GROUP: ${{ (inputs.empty || inputs.n) == '1' && !(inputs.a == 'no') }}
                NUMBER: ${{ 0x10 }}
              run: env | grep -E '^(QUOTE|OR|AND|NOT|CI_EQ|NUM_EQ|NE|NULLS|GROUP|NUMBER)=' | sort
            - id: later
              shell: bash
              run: echo "x=1" >> "$GITHUB_OUTPUT"
        """,
    )
    result = run(folder, workspace)
    assert result.ok
    assert result.steps[0].stdout.splitlines() == [
        "AND=second",
        "CI_EQ=true",
        "GROUP=true",
        "NE=false",
        "NOT=true",
        "NULLS=||",
        "NUMBER=16",
        "NUM_EQ=true",
        "OR=fallback",
        "QUOTE=it's",
    ]


def test_env_context_is_case_sensitive_and_sees_the_steps_own_env(
    tmp_path: Path, workspace: Path
) -> None:
    folder = write_action(
        tmp_path,
        """
        name: env
        runs:
          using: composite
          steps:
            - shell: bash
              env:
                Mine: own
              if: env.Mine == 'own' && env.MINE == ''
              run: echo "${{ env.Mine }}/${{ env.mine }}/${{ env.FROM_JOB }}"
        """,
    )
    result = run(folder, workspace, env={"FROM_JOB": "job"})
    assert result.steps[0].stdout == "own//job\n"


def test_working_directory_that_does_not_exist_fails_the_step(
    tmp_path: Path, workspace: Path
) -> None:
    folder = write_action(
        tmp_path,
        """
        name: wd
        runs:
          using: composite
          steps:
            - shell: bash
              working-directory: nowhere
              run: echo hi
        """,
    )
    result = run(folder, workspace)
    assert result.conclusion == "failure" and result.steps[0].exit_code is None


# ---------------------------------------------------------------- file commands


def test_parse_env_file_matches_the_runner() -> None:
    assert parse_env_file("a=b=c\nx<<E\n1\n\n2\nE\nempty<<E\nE\nlast=1\nlast=2") == [
        ("a", "b=c"),
        ("x", "1\n\n2"),
        ("empty", ""),
        ("last", "1"),
        ("last", "2"),
    ]
    assert parse_env_file("k=v<<not-a-heredoc\n") == [("k", "v<<not-a-heredoc")]
    assert parse_env_file("k<<D=\nv\nD=\n") == [("k", "v")]  # << before = : heredoc
    assert parse_env_file("cr=1\r\n") == [("cr", "1\r")]  # Linux: CR stays
    with pytest.raises(RunnerError, match="Matching delimiter not found"):
        parse_env_file("k<<EOF\nv\n")
    with pytest.raises(RunnerError, match="EOF marker missing new line"):
        parse_env_file("k<<EOF\nv")
    with pytest.raises(RunnerError, match="Invalid format"):
        parse_env_file("no separator\n")
    with pytest.raises(RunnerError, match="Name must not be empty"):
        parse_env_file("=v\n")


def test_bad_file_commands_fail_the_step(tmp_path: Path, workspace: Path) -> None:
    folder = write_action(
        tmp_path,
        """
        name: files
        runs:
          using: composite
          steps:
            - id: bad
              shell: bash
              run: |
                echo "out<<EOF" >> "$GITHUB_OUTPUT"
                echo "never closed" >> "$GITHUB_OUTPUT"
                echo "NODE_OPTIONS=--inspect" >> "$GITHUB_ENV"
                head -c 1100000 /dev/zero | tr '\\0' 'x' >> "$GITHUB_STEP_SUMMARY"
        """,
    )
    result = run(folder, workspace)
    step = result.steps[0]
    assert step.exit_code == 0 and step.outcome == "failure" and result.conclusion == "failure"
    assert any("Unable to process file command 'output'" in e for e in step.errors)
    assert "NODE_OPTIONS" not in result.env
    messages = [a.message for a in result.errors()]
    assert any("NODE_OPTIONS" in m for m in messages) and any("1024k" in m for m in messages)
    assert step.summary == ""


# ---------------------------------------------------------------- workflow commands


def test_workflow_commands(tmp_path: Path, workspace: Path) -> None:
    line = runner.workflow_command("warning", "50% of\r\nit", file="a,b:c.py", line=2, endLine=3)
    assert line == "::warning file=a%2Cb%3Ac.py,line=2,endLine=3::50%25 of%0D%0Ait"
    folder = write_action(
        tmp_path,
        f"""
        name: cmds
        runs:
          using: composite
          steps:
            - shell: bash
              run: |
                echo '{line}'
                echo "::notice::plain"
                echo "::unknown-command::stays text"
                echo "::add-mask::multi"
                echo "a multi word"
                echo "::stop-commands::pause-1234567"
                echo "::error::not an annotation while stopped"
                echo "::pause-1234567::"
                echo "::debug::dbg"
        """,
    )
    result = run(folder, workspace)
    assert result.ok
    levels = [(a.level, a.message) for a in result.annotations]
    assert levels == [("warning", "50% of\r\nit"), ("notice", "plain")]
    assert result.annotations[0].properties == {"file": "a,b:c.py", "line": "2", "endline": "3"}
    log = result.steps[0].log
    assert "::unknown-command::stays text" in log
    assert "a *** word" in log
    assert "::error::not an annotation while stopped" in log
    assert "##[debug]dbg" in log


def test_deprecated_commands_are_refused(tmp_path: Path, workspace: Path) -> None:
    folder = write_action(
        tmp_path,
        """
        name: old
        runs:
          using: composite
          steps:
            - shell: bash
              run: echo "::set-output name=x::1"
        """,
    )
    with pytest.raises(RunnerError, match=r"deprecated ::set-output:: .*GITHUB_OUTPUT"):
        run(folder, workspace)


# ---------------------------------------------------------------- inputs


INPUTS = """
name: inputs
inputs:
  must:
    description: required, no default
    required: true
  old:
    description: deprecated
    deprecationMessage: use must
runs:
  using: composite
  steps:
    - shell: bash
      env:
        MUST: ${{ inputs.must }}
      run: echo "must=[$MUST]"
"""


def test_required_inputs(tmp_path: Path, workspace: Path) -> None:
    folder = write_action(tmp_path, INPUTS)
    with pytest.raises(RunnerError, match="Input required and not supplied: must"):
        run(folder, workspace)
    # GitHub itself does not enforce required: true; the action must check for itself
    result = run(folder, workspace, enforce_required=False)
    assert result.ok and result.steps[0].stdout == "must=[]\n"


def test_unexpected_and_deprecated_inputs(tmp_path: Path, workspace: Path) -> None:
    folder = write_action(tmp_path, INPUTS)
    with pytest.raises(RunnerError, match="Unexpected input"):
        run(folder, workspace, inputs={"must": "1", "typo": "x"})
    result = run(
        folder, workspace, inputs={"must": True, "typo": "x", "old": "y"}, strict_inputs=False
    )
    assert result.inputs["must"] == "true"
    assert any(w.startswith("Unexpected input(s) 'typo'") for w in result.warnings)
    assert any("deprecated with message: use must" in w for w in result.warnings)
    with pytest.raises(RunnerError, match="given twice"):
        run(folder, workspace, inputs={"must": "1", "MUST": "2"})


def test_inputs_inserted_into_a_script_are_flagged(tmp_path: Path, workspace: Path) -> None:
    folder = write_action(
        tmp_path,
        """
        name: injection
        inputs:
          token:
            description: t
        runs:
          using: composite
          steps:
            - shell: bash
              run: echo "${{ inputs.token }}" > /dev/null
        """,
    )
    action = load_action(folder)
    assert any("pass it through env: instead" in w for w in action.warnings)
    result = run(folder, workspace, inputs={"token": "t0ken-value"}, secrets=["t0ken-value"])
    assert any("script text" in leak for leak in result.find_secret("t0ken-value"))


# ---------------------------------------------------------------- events and the github context


def test_pull_request_event(tmp_path: Path, workspace: Path) -> None:
    folder = write_action(
        tmp_path,
        """
        name: pr
        runs:
          using: composite
          steps:
            - shell: bash
              env:
                BASE: ${{ github.event.pull_request.base.sha }}
                HEAD: ${{ github.event.PULL_REQUEST.head.sha }}
                NUMBER: ${{ github.event.number }}
              run: echo "$BASE $HEAD $NUMBER $GITHUB_REF $GITHUB_SHA $GITHUB_BASE_REF $GITHUB_HEAD_REF"
        """,
    )
    event = runner.pull_request_event(number=7, base_sha=BEFORE, head_sha="2" * 40)
    result = run_action(
        folder,
        workspace=workspace,
        event_name="pull_request",
        event=event,
        sha=SHA,
        runner_temp=tmp_path / "runner-temp",
    )
    assert result.steps[0].stdout.split() == [
        BEFORE,
        "2" * 40,
        "7",
        "refs/pull/7/merge",
        SHA,
        "main",
        "feature",
    ]
    with pytest.raises(RunnerError, match="sha and ref"):
        run_action(folder, workspace=workspace, event_name="pull_request", event=event)


def test_push_event_of_a_new_branch() -> None:
    event = runner.push_event(before=ZERO_SHA, after=SHA, ref="refs/heads/topic")
    assert event["created"] is True and event["before"] == ZERO_SHA and event["forced"] is False


def test_github_properties_that_are_not_given_are_refused(tmp_path: Path, workspace: Path) -> None:
    folder = write_action(
        tmp_path,
        """
        name: token
        inputs:
          token:
            description: t
            default: ${{ github.token }}
        runs:
          using: composite
          steps:
            - shell: bash
              run: echo "${#TOKEN}"
              env:
                TOKEN: ${{ inputs.token }}
        """,
    )
    with pytest.raises(RunnerError, match=r"github.token is not modeled"):
        run(folder, workspace)
    result = run(folder, workspace, github={"token": "ghs_abc"})
    assert result.steps[0].stdout == "7\n"


# ---------------------------------------------------------------- refusals at load time


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("steps:\n    - uses: actions/checkout@v4", "uses steps are not supported"),
        ("steps:\n    - run: echo\n      shell: sh", "only bash"),
        ("steps:\n    - run: echo", "shell is required"),
        (
            "steps:\n    - run: echo\n      shell: bash\n      timeout-minutes: 3",
            "Unexpected value 'timeout-minutes'",
        ),
        (
            "steps:\n    - run: echo ${{ secrets.X }}\n      shell: bash",
            "Unrecognized named-value: 'secrets'",
        ),
        (
            "steps:\n    - run: echo ${{ matrix.x }}\n      shell: bash",
            "matrix context is not modeled",
        ),
        (
            "steps:\n    - run: echo ${{ inputs.nope }}\n      shell: bash",
            "inputs.nope is not declared",
        ),
        (
            "steps:\n    - run: echo ${{ steps.nope.outputs.x }}\n      shell: bash",
            "no step has that id",
        ),
        (
            "steps:\n    - run: echo ${{ github.nope }}\n      shell: bash",
            "not a property of the github context",
        ),
        (
            "steps:\n    - run: echo ${{ contains('a', 'b') }}\n      shell: bash",
            "contains() is not supported",
        ),
        ("steps:\n    - run: echo ${{ 1 < 2 }}\n      shell: bash", "operator < is not supported"),
        (
            "steps:\n    - run: echo ${{ github.event.commits.*.id }}\n      shell: bash",
            "object filters",
        ),
        ("steps:\n    - run: echo ${{ success() }}\n      shell: bash", "can only be used in if:"),
        (
            "steps:\n    - run: echo\n      shell: bash\n      if: ${{ true }} == false",
            "mixes text",
        ),
        ("steps:\n    - run: echo ${{ 'open\n      shell: bash", "unclosed"),
        (
            "steps:\n    - id: a\n      run: echo\n      shell: bash\n    - id: A\n      run: echo\n      shell: bash",
            "used twice",
        ),
        ("steps:\n    - run: echo\n      shell: bash\n  post: x.sh", "no pre/post"),
    ],
)
def test_refusals(tmp_path: Path, body: str, message: str) -> None:
    folder = tmp_path / "act"
    folder.mkdir()
    (folder / "action.yml").write_text(f"name: refused\nruns:\n  using: composite\n  {body}\n")
    with pytest.raises(RunnerError, match=re.escape(message)):
        load_action(folder)


def test_other_load_refusals(tmp_path: Path) -> None:
    folder = tmp_path / "act"
    folder.mkdir()
    file = folder / "action.yml"
    file.write_text("name: a\nruns:\n  using: node20\n  main: index.js\n")
    with pytest.raises(RunnerError, match="composite actions only"):
        load_action(folder)
    file.write_text("name: a\nname: b\nruns:\n  using: composite\n  steps: []\n")
    with pytest.raises(RunnerError, match="already defined"):
        load_action(folder)
    file.write_text(
        "name: a\ninputs:\n  x:\n    default: ${{ inputs.y }}\n  y: {}\nruns:\n  using: composite\n  steps:\n    - run: echo\n      shell: bash\n"
    )
    with pytest.raises(RunnerError, match="Unrecognized named-value: 'inputs'"):
        load_action(folder)
    file.write_text(
        "name: a\noutput:\n  x: {}\nruns:\n  using: composite\n  steps:\n    - run: echo\n      shell: bash\n"
    )
    with pytest.raises(RunnerError, match="Unexpected value 'output'"):
        load_action(folder)


def test_timeout_kills_the_step(tmp_path: Path, workspace: Path) -> None:
    folder = write_action(
        tmp_path,
        """
        name: slow
        runs:
          using: composite
          steps:
            - shell: bash
              run: sleep 30
        """,
    )
    with pytest.raises(RunnerError, match="did not finish"):
        run(folder, workspace, timeout=0.5)


# ---------------------------------------------------------------- actions/checkout


def git(cwd: Path, *args: str) -> str:
    env = {
        **{k: os.environ[k] for k in ("PATH", "HOME") if k in os.environ},
        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com",
    }  # fmt: skip
    return subprocess.run(
        ["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True
    ).stdout.strip()


def test_checkout_like_actions_checkout(tmp_path: Path) -> None:
    origin = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", str(origin))
    src = tmp_path / "src"
    src.mkdir()
    git(src, "init", "-q")
    for n in range(3):
        (src / f"f{n}").write_text(str(n))
        git(src, "add", ".")
        git(src, "commit", "-q", "-m", f"c{n}")
    git(src, "push", "-q", str(origin), "HEAD:refs/heads/main")
    head = git(src, "rev-parse", "HEAD")

    ws = runner.checkout(f"file://{origin}", tmp_path / "ws", sha=head, ref="refs/heads/main")
    # one commit, shallow, on a branch whose upstream is that same commit
    assert git(ws, "rev-list", "--count", "HEAD") == "1"
    assert (ws / ".git" / "shallow").read_text().strip() == head
    assert git(ws, "rev-parse", "--abbrev-ref", "HEAD") == "main"
    assert git(ws, "rev-parse", "--abbrev-ref", "@{upstream}") == "origin/main"
    assert git(ws, "rev-parse", "@{upstream}") == head
    assert git(ws, "tag") == ""

    # a pull request's merge ref: detached HEAD
    git(src, "push", "-q", str(origin), "HEAD:refs/pull/7/merge")
    pr = runner.checkout(f"file://{origin}", tmp_path / "pr", sha=head, ref="refs/pull/7/merge")
    assert git(pr, "rev-parse", "--abbrev-ref", "HEAD") == "HEAD"
