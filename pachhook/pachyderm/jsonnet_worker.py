"""The Jsonnet evaluator process of `jsonnet.py`: go-jsonnet, bounded, behind a pipe.

    python -I -S jsonnet_worker.py GOJSONNET_DIR DATA_LIMIT_BYTES

It limits its own memory before go-jsonnet's runtime starts, then evaluates the jobs
it reads on stdin, one after the other. It reads no file itself: every import is asked
of the parent, which owns the repository view (a commit or the working tree) and
decides what may be read. Only the standard library and `_gojsonnet` are imported.

Frames, both ways: a type byte, a 4-byte big-endian length, the payload.
  parent -> worker   J job (JSON)   F file (found_here NUL content)   X import refused
  worker -> parent   H hello (go-jsonnet's version)   I import wanted (JSON [base, rel])
                     R result (JSON text)   E go-jsonnet's error text
"""

import json
import os
import resource
import struct
import sys
from collections.abc import Callable

Frame = tuple[bytes, bytes]


def main() -> None:
    library, data_limit = sys.argv[1], int(sys.argv[2])
    # RLIMIT_DATA counts the private writable memory Go really uses; RLIMIT_AS would also
    # count the ~1.5 GB of address space Go reserves and leave no usable limit.
    resource.setrlimit(resource.RLIMIT_DATA, (data_limit, data_limit))
    sys.path.insert(0, library)
    import _gojsonnet

    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer

    def send(kind: bytes, payload: bytes) -> None:
        stdout.write(kind + struct.pack(">I", len(payload)) + payload)
        stdout.flush()

    def receive() -> Frame | None:
        head = stdin.read(5)
        if len(head) < 5:
            return None
        (size,) = struct.unpack(">I", head[1:])
        payload = stdin.read(size)
        return (head[:1], payload) if len(payload) == size else None

    send(b"H", _gojsonnet.version.encode())
    while (frame := receive()) is not None:
        job = json.loads(frame[1])
        _cpu_backstop(job["cpu_seconds"])
        try:
            text = _gojsonnet.evaluate_snippet(
                job["file"],
                job["source"],
                tla_vars=job["args"],
                import_callback=_importer(send, receive),
                max_stack=job["max_stack"],
                max_trace=job["max_trace"],
            )
        except RuntimeError as exc:
            send(b"E", str(exc).encode("utf-8", "replace"))
        except UnicodeDecodeError as exc:
            # The binding decodes its error text as UTF-8, and the text of a refused
            # import carries stray bytes (see _importer): the raw bytes are the message.
            send(b"E", bytes(exc.object))
        else:
            send(b"R", text.encode("utf-8", "surrogatepass"))


def _cpu_backstop(seconds: int) -> None:
    """Should the parent die while a template loops, the kernel stops this process."""
    used = resource.getrusage(resource.RUSAGE_SELF)
    spent = int(used.ru_utime + used.ru_stime) + 1
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = spent + seconds
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _importer(
    send: Callable[[bytes, bytes], None], receive: Callable[[], Frame | None]
) -> Callable[[str, str], tuple[str, bytes]]:
    """The import callback of one job. go-jsonnet calls it each time an import expression
    is evaluated, so each (base, rel) is asked of the parent once."""
    answers: dict[tuple[str, str], tuple[str, bytes] | None] = {}

    def callback(base: str, rel: str) -> tuple[str, bytes]:
        if (base, rel) not in answers:
            send(b"I", json.dumps([base, rel]).encode())
            reply = receive()
            if reply is None:
                raise ImportError("the parent process went away")
            kind, payload = reply
            if kind == b"F":
                found, _, content = payload.partition(b"\0")
                answers[(base, rel)] = (found.decode(), content)
            else:
                answers[(base, rel)] = None
        answer = answers[(base, rel)]
        if answer is None:
            # The binding hands this text to Go without its terminating NUL, so it
            # arrives with stray bytes: the parent words the refusal itself.
            raise ImportError("refused")
        return answer

    return callback


if __name__ == "__main__":
    try:
        main()
    except BrokenPipeError:
        os._exit(0)
