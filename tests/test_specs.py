from __future__ import annotations

import json

import pytest

from pachhook.errors import InputError
from pachhook.pachyderm import specs


def parse(path: str, text: str, strict: bool = True) -> list[specs.Pipeline]:
    return specs.parse_file(path, text.encode(), "default", strict=strict)


def test_json_object_array_and_stream():
    one = {"pipeline": {"name": "a"}, "transform": {"image": "x"}}
    two = {"pipeline": {"name": "b"}, "transform": {"image": "y"}}
    assert [p.name for p in parse("a.json", json.dumps(one))] == ["a"]
    assert [p.name for p in parse("a.json", json.dumps([one, two]))] == ["a", "b"]
    stream = json.dumps(one, indent=2) + "\n" + json.dumps(two, indent=2)
    pipelines = parse("a.json", stream)
    assert [(p.name, p.line) for p in pipelines] == [("a", 1), ("b", 9)]


def test_yaml_many_documents_with_lines():
    text = "pipeline: {name: a}\ntransform: {image: x}\n---\n# b\npipeline:\n  name: b\ntransform:\n  image: y\n"
    assert [(p.name, p.line) for p in parse("a.yaml", text)] == [("a", 1), ("b", 5)]


def test_camel_and_snake_case_fields_alike():
    text = json.dumps(
        {
            "pipeline": {"name": "a", "project": {"name": "ml"}},
            "transform": {"image": "x"},
            "parallelismSpec": {"constant": 1},
            "input": {"pfs": {"repo": "r", "glob": "/*"}},
        }
    )
    (camel,) = parse("a.json", text)
    (snake,) = parse("a.json", text.replace("parallelismSpec", "parallelism_spec"))
    assert camel.key == ("ml", "a") and camel.inputs == (("ml", "r"),)
    assert camel.canonical == snake.canonical


def test_project_defaults_from_config():
    (p,) = specs.parse_file(
        "a.yaml", b"pipeline: {name: a}\ntransform: {image: x}\n", "team", strict=True
    )
    assert p.key == ("team", "a")


def test_input_repos_of_every_kind():
    doc = {
        "pipeline": {"name": "p"},
        "transform": {"image": "x"},
        "input": {
            "cross": [
                {"pfs": {"repo": "a"}},
                {
                    "union": [
                        {"pfs": {"repo": "b", "project": "other"}},
                        {"cron": {"name": "tick", "spec": "@every 1m"}},
                    ]
                },
                {
                    "join": [
                        {"pfs": {"repo": "c", "joinOn": "$1"}},
                        {"pfs": {"repo": "d", "join_on": "$1"}},
                    ]
                },
                {"group": [{"pfs": {"repo": "e", "groupBy": "$1"}}]},
            ]
        },
    }
    (p,) = parse("p.json", json.dumps(doc))
    assert p.inputs == (
        ("default", "a"),
        ("other", "b"),
        ("default", "c"),
        ("default", "d"),
        ("default", "e"),
    )


@pytest.mark.parametrize(
    ("path", "text", "message"),
    [
        ("a.json", '{"pipeline": {"name": "a"},\n  "transform": }', "a.json:2: not valid JSON"),
        ("a.yaml", "pipeline: {name: a}\ntransform: [\n", "a.yaml:3: not valid YAML"),
        ("a.yaml", "pipeline:\n  name: a\n bad: indent\n", "a.yaml:3: not valid YAML"),
        ("a.json", '{"pipeline": {"name": "a"}}', "a.json:1: not a pipeline spec"),
        (
            "a.yaml",
            "pipeline: {name: a}\ntransform: {image: 3}\n",
            "a.yaml:1: transform.image must be a string",
        ),
    ],
)
def test_malformed_specs_name_file_and_line(path: str, text: str, message: str):
    with pytest.raises(InputError) as exc:
        parse(path, text)
    assert message in str(exc.value) and exc.value.exit_code == 2


def test_discovery_passes_over_other_documents():
    assert parse("ci.yaml", "jobs: {build: {runs-on: x}}\n", strict=False) == []


def test_rewrite_keeps_spelling_and_adds_annotations():
    (p,) = parse(
        "a.json",
        json.dumps(
            {
                "pipeline": {"name": "a"},
                "transform": {"image": "x:1", "cmd": ["y"]},
                "metadata": {"annotations": {"team": "ml"}},
            }
        ),
    )
    doc = specs.rewritten(p, "reg/x:ph-1", {"pachhook.io/spec-digest": "d"})
    assert doc["transform"] == {"image": "reg/x:ph-1", "cmd": ["y"]}
    assert doc["metadata"]["annotations"] == {"team": "ml", "pachhook.io/spec-digest": "d"}
    assert p.document["transform"]["image"] == "x:1"  # the original is untouched
    assert specs.spec_digest(doc) != specs.spec_digest(p.document)


def test_json_documents_separated_by_yaml_markers_are_several_specs():
    # pachctl 2.x reads a spec file as a stream of YAML documents (Pachyderm's
    # examples/ml/tensorflow/*.pipeline.json are written this way).
    one = {"pipeline": {"name": "a"}, "transform": {"image": "x"}}
    two = {"pipeline": {"name": "b"}, "transform": {"image": "y"}}
    text = json.dumps(one, indent=2) + "\n---\n" + json.dumps(two, indent=2) + "\n---  \n"
    pipelines = parse("tf.pipeline.json", text)
    assert [(p.name, p.line) for p in pipelines] == [("a", 1), ("b", 10)]
    with pytest.raises(InputError, match=r"^tf.json:17: not valid JSON"):
        parse("tf.json", json.dumps(one, indent=2) + "\n---\n" + json.dumps(two, indent=2)[:-1])


def test_a_spec_without_image_has_none():
    (p,) = parse("a.json", json.dumps({"pipeline": {"name": "a"}, "transform": {"cmd": ["x"]}}))
    assert p.image is None and p.image_repository is None


@pytest.mark.parametrize(
    "doc",
    [
        {"pipeline": {"name": "a"}, "transform": {"image": "x:1", "cmd": ["sh"]}},
        {
            "pipeline": {"name": "a"},
            "transform": {"cmd": ["sh"]},
            "metadata": {"annotations": {"team": "ml"}, "labels": {"x": "y"}},
        },
        {"pipeline": {"name": "a"}, "Transform": {"Image": "x:1"}, "metaData": {"labels": {}}},
        {"pipeline": {"name": "a"}, "transform": {"image": "x"}, "metadata": {"annotations": 3}},
    ],
)
def test_the_applied_digest_is_the_digest_of_the_rewritten_spec(doc):
    """The planner's shortcut must give what the deploy step annotates, or every pipeline
    would look changed."""
    (pipeline,) = parse("a.json", json.dumps(doc))
    before = json.dumps(pipeline.document, sort_keys=True)
    for image in ("registry.example/app:ph-1", None):
        expected = specs.spec_digest(specs.rewritten(pipeline, image, {}))
        assert specs.applied_digest(pipeline, image) == expected
    assert json.dumps(pipeline.document, sort_keys=True) == before  # the parsed spec is shared
