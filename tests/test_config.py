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
        (
            '[build]\nbuilder = "kaniko"\n',
            'pachhook.toml:2: build.builder: got \'kaniko\'; expected one of "auto", "buildkit"',
        ),
        ("[build]\ncache_from = true\n", "build.cache_from: got True; expected one of"),
        (
            '[[image]]\nname = "a/b"\nsecrets = ["id=pip,src=/root/.netrc"]\n',
            "pachhook.toml:3: image[0].secrets: 'id=pip,src=/root/.netrc': write id=ID,env=VARIABLE",
        ),
        (
            '[[image]]\nname = "a/b"\nsecrets = ["id=t,env=PACHYDERM_TOKEN"]\n',
            "PACHYDERM_TOKEN holds one of pachhook's own credentials and is never given to a build",
        ),
        (
            '[[image]]\nname = "a/b"\nsecrets = ["id=t,env=A", "id=t,env=B"]\n',
            "image[0].secrets: two secrets share an id",
        ),
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


def test_builder_cache_and_secrets():
    text = """
[build]
builder = "classic"
[[image]]
name = "a/one"
[[image]]
name = "a/two"
builder = "buildkit"
cache_from = "registry"
secrets = ["id=pip,env=PIP_TOKEN", " id=npm , env=NPM_TOKEN"]
"""
    c = load({"pachhook.toml": text})
    one, two = c.images
    assert c.build == config.BuildConfig("classic", "off")
    assert (one.builder, one.cache_from, one.secrets) == ("classic", "off", ())
    assert (two.builder, two.cache_from) == ("buildkit", "registry")
    assert two.secrets == (
        config.BuildSecret("pip", "PIP_TOKEN"),
        config.BuildSecret("npm", "NPM_TOKEN"),
    )
    assert two.secrets[0].spec == "id=pip,env=PIP_TOKEN"


def test_builder_defaults_to_auto_and_the_registry_cache_to_ci():
    files = {"pachhook.toml": '[[image]]\nname = "a/b"\n'}
    image = load(files).images[0]
    assert (image.builder, image.cache_from) == ("auto", "off")
    assert load(files, {"CI": "true"}).images[0].cache_from == "registry"
    assert load(files, {"CI": "0"}).images[0].cache_from == "off"
    ci_off = {"pachhook.toml": '[build]\ncache_from = "off"\n[[image]]\nname = "a/b"\n'}
    assert load(ci_off, {"CI": "1"}).images[0].cache_from == "off"
    seed = load({}, {"DOCKER_IMAGE_TAG": "acme/app", "CI": "1"}).images[0]
    assert (seed.builder, seed.cache_from) == ("auto", "registry")


def test_every_error_of_a_file_is_reported_at_once_up_to_a_bound():
    text = 'jobs = 0\ntag_policy = "x"\n[pachyderm]\nprojekt = "a"\n[[image]]\nname = 1\n'
    with pytest.raises(InputError) as caught:
        config.parse("pachhook.toml", text, {})
    lines = caught.value.message.splitlines()
    assert [line.split(": ")[1] for line in lines] == [
        "jobs",
        "tag_policy",
        "pachyderm.projekt",
        "image[0].name",
    ]
    many = "".join(f"[[image]]\nname = 'a/b'\nbogus{i} = 1\n" for i in range(30))
    with pytest.raises(InputError) as caught:
        config.parse("pachhook.toml", many, {})
    lines = caught.value.message.splitlines()
    assert len(lines) == 21 and lines[-1] == "... and 10 more error(s) of the same run"


def test_image_variants_share_a_name_and_match_by_tag():
    from pachhook.config import ImageIndex

    text = (
        '[[image]]\nname = "pachyderm/iris-train"\nvariant = "python-svm"\n'
        '[[image]]\nname = "pachyderm/iris-train"\nvariant = "julia-tree"\n'
        '[[image]]\nname = "acme/app"\n'
    )
    parsed = config.parse("pachhook.toml", text, {})
    index = ImageIndex(parsed.images)
    assert index.match("docker.io/pachyderm/iris-train:julia-tree") == 1
    assert index.match("pachyderm/iris-train:python-svm") == 0
    assert index.match("pachyderm/iris-train:other") is None
    assert index.match("acme/app:1.0") == 2 and index.match("acme/app") == 2
    with pytest.raises(
        InputError, match=r"image\[1\].name: 'pachyderm/iris-train:julia-tree' is also image\[0\]"
    ):
        config.parse("pachhook.toml", text.replace("python-svm", "julia-tree"), {})
    with pytest.raises(InputError, match=r"image\[0\].variant: got 'a b'"):
        config.parse("pachhook.toml", '[[image]]\nname = "x/y"\nvariant = "a b"\n', {})
