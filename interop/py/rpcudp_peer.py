"""The real rpcudp 5.0.1, as a peer for rpc-stack's interop tests.

    python rpcudp_peer.py server           serve on 127.0.0.1, an ephemeral port; print "listening on HOST:PORT"
    python rpcudp_peer.py client HOST:PORT call an rpc-stack server, check every answer; exit 0 if all are right
    python rpcudp_peer.py sayhi HOST:PORT  rpcudp's README client: print the answer, or "No response received."
    python rpcudp_peer.py call HOST:PORT METHOD ARG...
                                           call METHOD with ARGs (Python literals, b"" for bytes);
                                           print the result's type and repr, or "No response received."

Nothing here is modified rpcudp: the server is an RPCProtocol subclass with rpc_ methods, the
client uses RPCProtocol's own attribute-call mechanism, as rpcudp's README does.
"""

import asyncio
import sys

from rpcudp.protocol import RPCProtocol


class Server(RPCProtocol):
    def rpc_sayhi(self, sender, name):
        return "Hello %s you live at %s:%i" % (name, sender[0], sender[1])

    def rpc_echo(self, sender, *args):
        return list(args)

    async def rpc_slow_add(self, sender, a, b):
        await asyncio.sleep(0.05)
        return a + b

    def rpc_fail(self, sender, message):
        raise RuntimeError(message)


async def serve():
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(Server, local_addr=("127.0.0.1", 0))
    host, port = transport.get_extra_info("sockname")[:2]
    print("listening on %s:%d" % (host, port), flush=True)
    # Serve until the test closes our stdin (or kills us).
    await loop.run_in_executor(None, sys.stdin.read)
    transport.close()


EVERY_TYPE = [
    0, 1, -1, 127, 128, -32, -33, 255, 256, 65535, 65536, 2**32, 2**63 - 1, 2**64 - 1, -(2**63),
    0.0, 3.5, -1.25, 1e300,
    True, False, None,
    b"", b"\x00\x01\xff", bytes(range(256)) * 2,
    "", "s", "snowman \u2603", "x" * 40, "y" * 300,
    [], [1, [2, [3]]], {"k": "v", "n": {"m": [1, 2]}},
]


async def client(server):
    host, port = server.rsplit(":", 1)
    addr = (host, int(port))
    loop = asyncio.get_running_loop()
    # A short wait so the unanswered calls below do not take rpcudp's default 5 s.
    transport, proto = await loop.create_datagram_endpoint(
        lambda: RPCProtocol(wait_timeout=1), local_addr=("127.0.0.1", 0)
    )
    me = transport.get_extra_info("sockname")
    failures = []

    def check(name, got, want):
        if got != want:
            failures.append("%s: got %r, want %r" % (name, got, want))
        else:
            print("ok %s" % name, flush=True)

    ok, result = await proto.sayhi(addr, "Snake Plissken")
    check("sayhi", (ok, result), (True, "Hello Snake Plissken you live at %s:%d" % (me[0], me[1])))

    for i, value in enumerate(EVERY_TYPE):
        ok, result = await proto.echo(addr, value)
        check("echo type %d %r" % (i, type(value).__name__), (ok, result, type(result)), (True, [value], list))
        if ok and result and type(result[0]) is not type(value):
            failures.append("echo %r came back as %s" % (value, type(result[0]).__name__))

    ok, result = await proto.echo(addr, *EVERY_TYPE)
    check("echo all types at once", (ok, result), (True, EVERY_TYPE))

    ok, result = await proto.types(addr, 7, -7, 2.5, True, None, b"\x01\x02", "str", [1, 2], {"k": "v"})
    check("typed handler", (ok, result), (True, [7, -7, 2.5, True, None, b"\x01\x02", "str", [1, 2], {"k": "v"}]))

    results = await asyncio.gather(*(proto.add(addr, i, i) for i in range(100)))
    check("100 calls in flight", results, [(True, 2 * i) for i in range(100)])

    # rpc-stack answers these with error replies of a type rpcudp drops: rpcudp sees no reply.
    ok, result = await proto.no_such_method(addr, 1)
    check("unknown method", (ok, result), (False, None))
    ok, result = await proto.add(addr, "one", 2)
    check("wrong argument types", (ok, result), (False, None))
    ok, result = await proto.sayhi(addr, "again")
    check("still serving", (ok, result), (True, "Hello again you live at %s:%d" % (me[0], me[1])))

    transport.close()
    if failures:
        print("FAILED:\n" + "\n".join(failures), flush=True)
        return 1
    print("all passed", flush=True)
    return 0


async def readme_client(server):
    host, port = server.rsplit(":", 1)
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(
        lambda: RPCProtocol(wait_timeout=2), local_addr=("127.0.0.1", 0)
    )
    result = await proto.sayhi((host, int(port)), "Snake Plissken")
    print(result[1] if result[0] else "No response received.", flush=True)
    transport.close()
    return 0 if result[0] else 1


async def call(server, method, args):
    host, port = server.rsplit(":", 1)
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(
        lambda: RPCProtocol(wait_timeout=2), local_addr=("127.0.0.1", 0)
    )
    result = await getattr(proto, method)((host, int(port)), *args)
    if result[0]:
        print("%s %r" % (type(result[1]).__name__, result[1]), flush=True)
    else:
        print("No response received.", flush=True)
    transport.close()
    return 0 if result[0] else 1


if __name__ == "__main__":
    if sys.argv[1:2] == ["server"]:
        asyncio.run(serve())
    elif sys.argv[1:2] == ["sayhi"] and len(sys.argv) == 3:
        sys.exit(asyncio.run(readme_client(sys.argv[2])))
    elif sys.argv[1:2] == ["client"] and len(sys.argv) == 3:
        sys.exit(asyncio.run(client(sys.argv[2])))
    elif sys.argv[1:2] == ["call"] and len(sys.argv) >= 4:
        import ast

        args = [ast.literal_eval(a) for a in sys.argv[4:]]
        sys.exit(asyncio.run(call(sys.argv[2], sys.argv[3], args)))
    else:
        sys.exit(__doc__)
