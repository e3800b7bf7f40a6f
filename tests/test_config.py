from __future__ import annotations

import pytest

from pachhook import config
from pachhook.errors import InputError


def load(files: dict[str, str], env: dict[str, str] | None = None) -> config.Config:
    return config.load(lambda p: files[p].encode() if p in files else None, env or {})


def test_full_config_parses():
    c = load(
        {
            "pachhook.toml": """
tag_policy = "git-sha"
jobs = 4
[pachyderm]
address = "grpcs://pachd.example.com:443"
project = "ml"
reprocess = true
[[image]]
name = "docker.io/acme/housing-prices"
context = "app"
dockerfile = "../docker/app.Dockerfile"
target = "runtime"
build_args = { PY = "3.11", N = "3" }
platform = "linux/amd64"
[pipelines]
include = ["pipelines/**/*.json"]
exclude = ["pipelines/old/*"]
[hooks]
deploy_branches = ["main", "release/*"]
on_build_failure = "warn"
post_push_timeout = 30
"""
        }
    )
    assert c.tag_policy == "git-sha" and c.jobs == 4
    assert c.pachyderm == config.PachydermConfig("grpcs://pachd.example.com:443", "ml", True)
    (image,) = c.images
    assert image.context == "app"
    assert image.dockerfile_path == "docker/app.Dockerfile"
    assert image.build_args == {"PY": "3.11", "N": "3"}
    assert c.pipelines.include == ("pipelines/**/*.json",)
    assert c.hooks.deploy_branches == ("main", "release/*")
    assert c.hooks.on_build_failure == "warn" and c.hooks.post_push_timeout == 30


def test_pyproject_tool_table():
    c = load(
        {
            "pyproject.toml": '[project]\nname="x"\n[tool.pachhook]\njobs = 3\n[[tool.pachhook.image]]\nname = "a/b"\n'
        }
    )
    assert c.path == "pyproject.toml" and c.jobs == 3 and c.images[0].name == "a/b"


def test_pyproject_without_table_falls_back_to_environment():
    c = load({"pyproject.toml": '[project]\nname="x"\n'}, {"DOCKER_IMAGE_TAG": "acme/app"})
    assert c.path is None and c.images[0].name == "acme/app"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("jobz = 2\n", "pachhook.toml:1: jobz: unknown key; did you mean 'jobs'?"),
        (
            'jobs = "two"\n',
            "pachhook.toml:1: jobs: got 'two'; expected a whole number of at least 1",
        ),
        ("jobs = 0\n", "pachhook.toml:1: jobs: got 0; expected"),
        (
            'tag_policy = "latest"\n',
            'tag_policy: got \'latest\'; expected one of "digest", "git-sha"',
        ),
        (
            '[pachyderm]\nadress = "x"\n',
            "pachhook.toml:2: pachyderm.adress: unknown key; did you mean 'address'?",
        ),
        (
            '[pachyderm]\nreprocess = "yes"\n',
            "pachhook.toml:2: pachyderm.reprocess: got 'yes'; expected true or false",
        ),
        (
            '[[image]]\nname = "a"\ncontxt = "x"\n',
            "pachhook.toml:3: image[0].contxt: unknown key; did you mean 'context'?",
        ),
        ('[[image]]\ncontext = "x"\n', "image[0]: has no name"),
        (
            '[[image]]\nname = "a/b:latest"\n',
            "carries a tag or digest; give the repository alone ('a/b')",
        ),
        (
            '[[image]]\nname = "a/b"\ncontext = "../x"\n',
            "image[0].context: '../x' is outside the repository",
        ),
        (
            '[[image]]\nname = "a/b"\n[[image]]\nname = "docker.io/a/b"\n',
            "image[1].name: 'docker.io/a/b' is also image[0]",
        ),
        (
            '[hooks]\non_build_failure = "ignore"\n',
            'hooks.on_build_failure: got \'ignore\'; expected one of "block", "warn"',
        ),
        ('[pipelines]\ninclude = "a.json"\n', "pipelines.include: got 'a.json'; expected a list"),
        ("jobs = [\n", "pachhook.toml:1: not valid TOML"),
        ("image = 3\n", "image: must be an array of tables"),
        (
            '[[image]]\nname = "a/b"\nbuild_args = { N = 3 }\n',
            "image[0].build_args: got {'N': 3}; expected a table of strings (quote numbers)",
        ),
        ('[[image]]\nname = "Acme/App"\n', "image[0].name: 'Acme/App' is no image name"),
        ("a = " + "[" * 600 + "]" * 600 + "\n", "pachhook.toml: nested too deeply"),
    ],
)
def test_bad_config_names_file_line_key_and_fix(text: str, expected: str):
    with pytest.raises(InputError) as exc:
        load({"pachhook.toml": text})
    assert expected in str(exc.value)
    assert exc.value.exit_code == 2
    assert "\n" not in str(exc.value)


def test_pyproject_errors_name_the_tool_table():
    with pytest.raises(InputError, match=r"pyproject.toml:4: tool.pachhook.jobz: unknown key"):
        load({"pyproject.toml": '[project]\nname="x"\n[tool.pachhook]\njobz = 1\n'})


def test_seed_variables_without_config():
    c = load(
        {},
        {
            "DOCKER_IMAGE_TAG": "pachyderm/housing-prices:abc",
            "PACHYDERM_PIPELINE_FILES": "regression.json  other.yaml",
            "PACHYDERM_CLUSTER_URL": "grpcs://hub.example.com:31400",
        },
    )
    assert c.path is None
    (image,) = c.images
    assert (image.name, image.context, image.dockerfile_path) == (
        "pachyderm/housing-prices",
        ".",
        "Dockerfile",
    )
    assert c.pipelines.include == ("regression.json", "other.yaml")
    # The operator's cluster is not the configuration's: the connection reads the variable.
    assert c.pachyderm.address is None


def test_config_wins_over_environment():
    c = load(
        {"pachhook.toml": '[pachyderm]\naddress = "grpc://a:1"\n[[image]]\nname = "x/y"\n'},
        {"PACHYDERM_CLUSTER_URL": "grpc://b:2", "DOCKER_IMAGE_TAG": "z/z"},
    )
    assert c.pachyderm.address == "grpc://a:1"
    assert [i.name for i in c.images] == ["x/y"]


@pytest.mark.parametrize(
    ("ref", "repository"),
    [
        ("ubuntu", "docker.io/library/ubuntu"),
        ("ubuntu:22.04", "docker.io/library/ubuntu"),
        ("acme/app", "docker.io/acme/app"),
        ("docker.io/acme/app:1", "docker.io/acme/app"),
        ("index.docker.io/acme/app", "docker.io/acme/app"),
        ("docker.io/ubuntu", "docker.io/library/ubuntu"),
        ("localhost/app", "localhost/app"),
        ("localhost:5000/app:tag", "localhost:5000/app"),
        ("127.0.0.1:5000/team/app@sha256:" + "a" * 64, "127.0.0.1:5000/team/app"),
        ("gcr.io/proj/app:1@sha256:" + "b" * 64, "gcr.io/proj/app"),
        ("acme/app@sha256:" + "c" * 64, "docker.io/acme/app"),
    ],
)
def test_docker_reference_rules(ref: str, repository: str):
    assert config.normalize_repository(ref) == repository
