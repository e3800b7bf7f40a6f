"""Every pipeline's name, version and annotations: one ListPipeline over plain gRPC.

That is all a plan asks of the cluster, and asking it through python-pachyderm costs more
than the rest of a 500-pipeline plan: the client takes half a second to import, and this
protobuf runtime (pure Python, the only one python-pachyderm 7.6 allows on 3.11) decodes
every PipelineInfo in full. Here the call goes over a grpc channel made as the client
makes it (same address, TLS roots and `authn-token` header), and only those fields are
read off the wire, by the field numbers of pps.proto, which pachd has kept from 2.7 to
2.12 (tests/test_state.py checks them against python-pachyderm's descriptors). Whole
specs, where needed, come through the client (cluster.py).
"""

from __future__ import annotations

from typing import Any

from pachhook.pachyderm.stored import Stored

LIST_PIPELINE = "/pps_v2.API/ListPipeline"
REQUEST = b"\x18\x01"  # ListPipelineRequest{details: true}
AUTH_HEADER = "authn-token"
READ_TIMEOUT = 60.0  # seconds the whole listing may take
DEFAULT_PROJECT = "default"

# Field numbers (pps.proto, pfs.proto).
INFO_PIPELINE, INFO_VERSION, INFO_DETAILS = 1, 2, 12
PIPELINE_NAME, PIPELINE_PROJECT = 1, 2
PROJECT_NAME = 1
DETAILS_METADATA = 29
METADATA_ANNOTATIONS = 1
ENTRY_KEY, ENTRY_VALUE = 1, 2

VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5


class WireError(ValueError):
    """An answer that is not a PipelineInfo."""


def list_pipelines(
    target: str,
    *,
    token: str | None,
    root_certs: bytes | None,
    timeout: float = READ_TIMEOUT,
    connect_timeout: float | None = None,
) -> list[Stored]:
    """`target`: host:port; `root_certs`: PEM roots for TLS, None for plain gRPC;
    `timeout`: the call's deadline, `connect_timeout`: one connection attempt's. Raises
    grpc.RpcError as the client would."""
    import grpc

    options: list[tuple[str, int]] = [("grpc.max_receive_message_length", 20 * 1024 * 1024)]
    if connect_timeout is not None:
        # gRPC waits max(this, the backoff) for one connection attempt: 20 s by default.
        options.append(("grpc.min_reconnect_backoff_ms", max(1, int(connect_timeout * 1000))))
    channel = (
        grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certs), options=options)
        if root_certs is not None
        else grpc.insecure_channel(target, options=options)
    )
    with channel:
        call = channel.unary_stream(
            LIST_PIPELINE,
            request_serializer=lambda request: request,
            response_deserializer=decode_pipeline_info,
        )
        metadata = [(AUTH_HEADER, token)] if token else None
        return list(call(REQUEST, metadata=metadata, timeout=timeout))


def decode_pipeline_info(data: bytes) -> Stored:
    name, project, version, annotations = "", "", 0, {}
    for number, value in _fields(data):
        if number == INFO_PIPELINE and isinstance(value, bytes):
            for n, v in _fields(value):
                if n == PIPELINE_NAME and isinstance(v, bytes):
                    name = v.decode()
                elif n == PIPELINE_PROJECT and isinstance(v, bytes):
                    for m, w in _fields(v):
                        if m == PROJECT_NAME and isinstance(w, bytes):
                            project = w.decode()
        elif number == INFO_VERSION and isinstance(value, int):
            version = value
        elif number == INFO_DETAILS and isinstance(value, bytes):
            for n, v in _fields(value):
                if n == DETAILS_METADATA and isinstance(v, bytes):
                    annotations.update(_annotations(v))
    if not name:
        raise WireError("a PipelineInfo without a pipeline name")
    return Stored(project or DEFAULT_PROJECT, name, version, annotations, None)


def _annotations(metadata: bytes) -> dict[str, str]:
    found = {}
    for number, entry in _fields(metadata):
        if number == METADATA_ANNOTATIONS and isinstance(entry, bytes):
            key = value = ""
            for n, v in _fields(entry):
                if n == ENTRY_KEY and isinstance(v, bytes):
                    key = v.decode()
                elif n == ENTRY_VALUE and isinstance(v, bytes):
                    value = v.decode()
            found[key] = value
    return found


def _fields(data: bytes) -> Any:
    """(field number, value) of one message: an int for varints, bytes for
    length-delimited fields (strings and messages alike), None for fixed-size ones."""
    pos, end = 0, len(data)
    while pos < end:
        key, pos = _varint(data, pos)
        number, kind = key >> 3, key & 7
        if kind == VARINT:
            value, pos = _varint(data, pos)
            yield number, value
        elif kind == LENGTH:
            size, pos = _varint(data, pos)
            if pos + size > end:
                raise WireError("a field runs past the end of the message")
            yield number, data[pos : pos + size]
            pos += size
        elif kind == FIXED64:
            pos += 8
            yield number, None
        elif kind == FIXED32:
            pos += 4
            yield number, None
        else:
            raise WireError(f"unexpected wire type {kind}")


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise WireError("a varint runs past the end of the message")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
