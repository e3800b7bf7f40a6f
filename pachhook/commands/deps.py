"""`pachhook deps IMAGE`: the input files of one image, one per line."""

from __future__ import annotations

import argparse
from typing import Any

from pachhook.commands import config_note, env, err, out, print_json, source_at
from pachhook.errors import InputError


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "deps",
        help="the input files of one image",
        description="The input files of one IMAGE, one per line, relative to the repository root.",
    )
    parser.add_argument("image", metavar="IMAGE", help="an image name from the configuration")
    parser.add_argument(
        "--rev", metavar="REF", help="read the files at a commit (default: the working tree)"
    )
    parser.add_argument(
        "--json", action="store_true", help='print {"image": NAME, "inputs": [PATH, ...]}'
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pachhook.config import load, matching_image
    from pachhook.plan.workspace import image_state

    source = source_at(args.rev)
    environment = env()
    config_note(source.repo, True if args.rev is None else None)
    config = load(source.read, environment)
    index = matching_image(args.image, config.images)
    if index is None:
        names = ", ".join(i.label for i in config.images) or "none configured"
        raise InputError(
            f"deps: no image named {args.image!r} (images: {names}); use a configured name "
            "(name:variant for a variant)"
        )
    state = image_state(config.images[index], config, source, index, frozenset(), environment)
    if args.json:
        print_json({"image": state.name, "inputs": list(state.inputs), "urls": list(state.urls)})
    else:
        for path in state.inputs:
            out(path)
        for url in state.urls:
            err(
                f"pachhook: note: ADD {url} is an input too, downloaded at build time "
                f'(add_urls = "{state.config.add_urls}")'
            )
    return 0
