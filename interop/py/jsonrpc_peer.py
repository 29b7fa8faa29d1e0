"""The real jsonrpcserver 5.0.9 and jsonrpcclient 4.0.3, as peers for rpc-stack's interop tests.

    python jsonrpc_peer.py dispatch          read a JSON list of request texts on stdin; print a JSON
                                             list of jsonrpcserver's answers (null where it sends none)
    python jsonrpc_peer.py client HOST:PORT  call an rpc-stack server (newline-delimited JSON over TCP)
                                             with jsonrpcclient; exit 0 if every answer is right
"""

import json
import socket
import sys

from jsonrpcserver import Result, Success, dispatch, method


@method
def subtract(minuend, subtrahend) -> Result:
    return Success(minuend - subtrahend)


@method(name="sum")
def sum_(*numbers) -> Result:
    return Success(sum(numbers))


@method
def get_data() -> Result:
    return Success(["hello", 5])


@method
def update(*args) -> Result:
    return Success(None)


@method
def notify_hello(*args) -> Result:
    return Success(None)


@method
def notify_sum(*args) -> Result:
    return Success(None)


def run_dispatch():
    requests = json.load(sys.stdin)
    answers = []
    for text in requests:
        answer = dispatch(text)
        answers.append(answer if answer else None)
    json.dump(answers, sys.stdout)


def run_client(server):
    from jsonrpcclient import Error, Ok, parse, request

    host, port = server.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=5)
    lines = sock.makefile("rb")
    failures = []

    def call(req):
        sock.sendall(json.dumps(req).encode() + b"\n")
        return parse(json.loads(lines.readline()))

    def check(name, got, want):
        if got != want:
            failures.append("%s: got %r, want %r" % (name, got, want))
        else:
            print("ok", name, flush=True)

    r = call(request("subtract", params=[42, 23]))
    check("positional", (type(r), getattr(r, "result", None)), (Ok, 19))
    r = call(request("subtract", params={"subtrahend": 23, "minuend": 42}))
    check("named", (type(r), getattr(r, "result", None)), (Ok, 19))
    r = call(request("get_data"))
    check("no params", (type(r), getattr(r, "result", None)), (Ok, ["hello", 5]))
    r = call(request("nope"))
    check("unknown method", (type(r), getattr(r, "code", None)), (Error, -32601))
    r = call(request("subtract", params=["a", 1]))
    check("invalid params", (type(r), getattr(r, "code", None)), (Error, -32602))
    batch = [request("sum", params=[1, 2, 4]), request("subtract", params=[42, 23])]
    sock.sendall(json.dumps(batch).encode() + b"\n")
    answers = parse(json.loads(lines.readline()))
    by_id = {a.id: a.result for a in answers}
    check("batch", sorted(by_id.items()), sorted({batch[0]["id"]: 7, batch[1]["id"]: 19}.items()))
    sock.close()
    if failures:
        print("FAILED:\n" + "\n".join(failures), flush=True)
        return 1
    print("all passed", flush=True)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["dispatch"]:
        run_dispatch()
    elif sys.argv[1:2] == ["client"] and len(sys.argv) == 3:
        sys.exit(run_client(sys.argv[2]))
    else:
        sys.exit(__doc__)
