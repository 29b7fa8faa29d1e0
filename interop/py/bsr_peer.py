"""The real basic-socket-rpc 0.6.1, as a peer for rpc-stack's interop tests.

    python bsr_peer.py server [--exclusive]   serve the greet commands on 127.0.0.1, an ephemeral
                                              port; print "listening on HOST:PORT"
    python bsr_peer.py client HOST:PORT       call every greet command on a server, check the
                                              answers and the error cases; exit 0 if all are right
    python bsr_peer.py hold HOST:PORT SECONDS connect, hold the session for SECONDS, call hello,
                                              print "served at <time>"

The greet commands are basic-socket-rpc's greet example (hello=0, goodbye=1, add_2_words=2,
func_no_args=3), written with the package's own spec and serializer helpers.
"""

import socket
import sys
import threading
import time
from enum import Enum

from basic_socket_rpc import rpc_serialization_functions as sf
from basic_socket_rpc.rpc_blocking_client import gen_client_class
from basic_socket_rpc.rpc_spec import RpcClientReq, RpcClientSpec, RpcServerResp, RpcServerSpec
from basic_socket_rpc import rpc_threaded_server as ts


class Greet(Enum):
    hello = 0
    goodbye = 1
    add_2_words = 2
    func_no_args = 3


class Unknown(Enum):
    nothing_here = 99


u32 = lambda n: sf.int_to_le_bytes(4, n)
parse_u32 = lambda bs: sf.parse_int_from_le_bytes(4, bs)

SERVER_RESPONSES = (
    RpcServerResp(Greet.hello, sf.make_server_deserializer(sf.deserialize_str), sf.serialize_str, lambda n: "hello " + n),
    RpcServerResp(Greet.goodbye, sf.make_server_deserializer(sf.deserialize_str), sf.serialize_str, lambda n: "goodbye " + n),
    RpcServerResp(Greet.add_2_words, sf.make_server_deserializer(parse_u32, parse_u32), u32, lambda a, b: a + b),
    RpcServerResp(Greet.func_no_args, sf.call_no_args, sf.serialize_no_response, lambda: None),
)

CLIENT = gen_client_class(
    RpcClientSpec(
        requests=(
            RpcClientReq(Greet.hello, sf.make_serializer(sf.serialize_str), sf.make_client_deserializer(sf.deserialize_str)),
            RpcClientReq(Greet.goodbye, sf.make_serializer(sf.serialize_str), sf.make_client_deserializer(sf.deserialize_str)),
            RpcClientReq(Greet.add_2_words, sf.make_serializer(u32, u32), sf.make_client_deserializer(parse_u32)),
            RpcClientReq(Greet.func_no_args, sf.client_call_no_args, sf.parse_no_response),
            RpcClientReq(Unknown.nothing_here, sf.client_call_no_args, sf.parse_no_response),
        )
    )
)


def serve(exclusive):
    # Find a free port, then let the package's own accepter bind it.
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    if exclusive:
        server = ts.make_exclusive_access_server(SERVER_RESPONSES)
    else:
        server = ts.make_serve(RpcServerSpec(responses=SERVER_RESPONSES))
    # The package prints its own "listening" line: keep stdout for ours.
    real_stdout, sys.stdout = sys.stdout, sys.stderr
    stop = threading.Event()
    thread = threading.Thread(target=server, kwargs={"host_name": "127.0.0.1", "port": port, "_shutdown_event": stop}, daemon=True)
    thread.start()
    # Wait until it accepts.
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    print("listening on 127.0.0.1:%d" % port, file=real_stdout, flush=True)
    sys.stdin.read()
    stop.set()


def client(server):
    host, port = server.rsplit(":", 1)
    failures = []

    def check(name, got, want):
        if got != want:
            failures.append("%s: got %r, want %r" % (name, got, want))
        else:
            print("ok", name, flush=True)

    c = CLIENT(host, int(port), timeout_secs=20, retry_interval_secs=0.2)
    c.socket_client_connect()  # the class's __enter__ returns None, so no `with ... as c`
    try:
        # The package's client deserializers return tuples.
        check("hello", c.hello("Robert"), ("hello Robert",))
        check("goodbye", c.goodbye("Robert"), ("goodbye Robert",))
        check("add_2_words", c.add_2_words(1000, 2050), (3050,))
        check("func_no_args", c.func_no_args(), None)
        try:
            c.nothing_here()
            failures.append("unknown command: no exception")
        except Exception as e:
            check("unknown command raises", type(e).__name__, "ProtocolError")
        # The connection stays usable after an exception frame.
        check("still usable", c.hello("again"), ("hello again",))
    finally:
        c.socket_client_disconnect()
    if failures:
        print("FAILED:\n" + "\n".join(failures), flush=True)
        return 1
    print("all passed", flush=True)
    return 0


def hold(server, seconds):
    host, port = server.rsplit(":", 1)
    c = CLIENT(host, int(port), timeout_secs=30, retry_interval_secs=0.1)
    c.socket_client_connect()
    print("session at %.3f" % time.time(), flush=True)
    c.hello("x")
    time.sleep(float(seconds))
    # Stamped before the disconnect: the session ends at or after this moment, so a process
    # descheduled after closing cannot make the next session look like an overlap.
    released = time.time()
    c.socket_client_disconnect()
    print("released at %.3f" % released, flush=True)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["server"]:
        serve("--exclusive" in sys.argv)
    elif sys.argv[1:2] == ["client"] and len(sys.argv) == 3:
        sys.exit(client(sys.argv[2]))
    elif sys.argv[1:2] == ["hold"] and len(sys.argv) == 4:
        sys.exit(hold(sys.argv[2], sys.argv[3]))
    else:
        sys.exit(__doc__)
