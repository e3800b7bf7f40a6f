"""One run, whatever triggered it: plan, execute with the real adapters, record, report."""

from __future__ import annotations

import json
from collections.abc import Mapping

import click

from pachhook import ledger
from pachhook.git import Repo
from pachhook.planning import plan_selection
from pachhook.report import plan_lines, record_lines
from pachhook.run import Cluster, Images, RunOptions, RunRecord, execute
from pachhook.selection import Selection


def run_selection(
    repo: Repo,
    selection: Selection,
    options: RunOptions,
    env: Mapping[str, str],
    *,
    trigger: str,
    as_json: bool = False,
) -> RunRecord:
    planned = plan_selection(repo, selection, env)
    config = planned.workspace.config if planned.workspace else None

    def say(line: str) -> None:
        if not as_json:
            click.echo(line, err=True)

    def images() -> Images:
        from pachhook.build import DockerImages

        assert config is not None
        return DockerImages.from_environment(repo, config, env, progress=say)

    def cluster() -> Cluster:
        from pachhook.deploy import PachydermCluster

        assert config is not None
        return PachydermCluster.connect(config, env)

    if not as_json:
        for line in plan_lines(planned.plan):
            click.echo(line)
    record = execute(
        planned, options, trigger=trigger, images=images, cluster=cluster, progress=say
    )
    if planned.plan.evaluated and not options.dry_run:
        ledger.append(repo.state_dir, {"kind": "run", **record.to_json()})
    if as_json:
        click.echo(json.dumps({"plan": planned.plan.to_json(), "run": record.to_json()}, indent=2))
    else:
        for line in record_lines(record):
            click.echo(line)
    return record
