"""`pachhook deps IMAGE`: the input files of one image, one per line."""

from __future__ import annotations

import argparse
from typing import Any

from pachhook.commands import env, out, print_json, source_at
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
    from pachhook.config import load, normalize_repository
    from pachhook.plan.workspace import image_state

    source = source_at(args.rev)
    environment = env()
    config = load(source.read, environment)
    wanted = normalize_repository(args.image)
    for index, candidate in enumerate(config.images):
        if candidate.name == args.image or candidate.repository == wanted:
            state = image_state(candidate, config, source, index, frozenset(), environment)
            break
    else:
        names = ", ".join(i.name for i in config.images) or "none configured"
        raise InputError(
            f"deps: no image named {args.image!r} (images: {names}); use a configured name"
        )
    if args.json:
        print_json({"image": state.name, "inputs": list(state.inputs)})
    else:
        for path in state.inputs:
            out(path)
    return 0
