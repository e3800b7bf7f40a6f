"""The cluster under test: the pachd double, or a real cluster named by
PACHHOOK_TEST_PACHD (with PACHHOOK_TEST_PACHD_TOKEN), seen through one interface."""

from __future__ import annotations

import os
import socket
import warnings
from dataclasses import dataclass

import pytest

from tests.pachd_double import PachdDouble

REAL_PACHD = os.environ.get("PACHHOOK_TEST_PACHD")
REAL_TOKEN = os.environ.get("PACHHOOK_TEST_PACHD_TOKEN")


# -- the cluster under test: the double, or a real one ------------------------------------


@dataclass(frozen=True)
class Deployed:
    """One pipeline as the cluster holds it, whichever cluster that is."""

    version: int
    image: str
    annotations: dict[str, str]
    reprocess: bool | None  # None where the cluster does not tell


class DoubleTarget:
    is_double = True

    def __init__(self, double: PachdDouble) -> None:
        self.double = double
        self.address = double.address
        self.token = double.token

    def create_project(self, name: str) -> None:
        self.double.create_project(name)

    def create_repo(self, name: str, project: str) -> None:
        self.double.create_repo(name, project)

    def pipelines(self, project: str) -> dict[str, Deployed]:
        return {
            name: Deployed(r.version, r.image, r.annotations, r.reprocess)
            for (p, name), r in self.double.pipelines().items()
            if p == project
        }

    def cleanup(self, project: str) -> None:
        pass


class RealTarget:
    """A real cluster, inspected through python-pachyderm itself."""

    is_double = False

    def __init__(self, address: str, token: str | None) -> None:
        import python_pachyderm

        self.address = address
        self.token = token
        self.client = python_pachyderm.Client.new_from_pachd_address(address, auth_token=token)

    def create_project(self, name: str) -> None:
        self.client.create_project(name)

    def create_repo(self, name: str, project: str) -> None:
        self.client.create_repo(name, project_name=project)

    def pipelines(self, project: str) -> dict[str, Deployed]:
        return {
            info.pipeline.name: Deployed(
                info.version,
                info.details.transform.image,
                dict(info.details.metadata.annotations),
                None,
            )
            for info in self.client.list_pipeline(details=True)
            if info.pipeline.project.name == project
        }

    def cleanup(self, project: str) -> None:
        """Delete what the test made; a cluster that refuses leaves a warning, not a failure."""
        import grpc

        try:
            # Newest first: downstream pipelines go before the ones they read.
            for name in self.pipelines(project):
                self.client.delete_pipeline(name, force=True, project_name=project)
            for info in self.client.list_repo():
                if info.repo.project.name == project:
                    self.client.delete_repo(info.repo.name, force=True, project_name=project)
            self.client.delete_project(project, force=True)
        except grpc.RpcError as exc:
            warnings.warn(f"could not delete test project {project}: {exc.details()}", stacklevel=1)


Target = DoubleTarget | RealTarget


def double_of(pachd: Target) -> PachdDouble:
    if not isinstance(pachd, DoubleTarget):
        pytest.skip("needs the pachd double (fault injection, call counts)")
    return pachd.double


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
