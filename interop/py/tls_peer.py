"""Python's ssl module with the real jsonrpcserver 5.0.9 and jsonrpcclient 4.0.3: JSON-RPC 2.0
over TLS, as a peer for rpc-stack's TLS interop tests. FRAMING is `newline` (a message per line)
or `length` (a 4-byte big-endian length before each message).

    python tls_peer.py client HOST:PORT NAME CA FRAMING [CERT KEY]
        call an rpc-stack TLS server, verifying that its certificate chains to CA and names NAME,
        showing the client certificate CERT (key KEY) if given; exit 0 if every answer is right
    python tls_peer.py server CERT KEY FRAMING [CLIENT_CA]
        serve on 127.0.0.1 (prints `listening on HOST:PORT`) until stdin closes; with CLIENT_CA,
        require client certificates that chain to it (mutual TLS); answers `whoami` with the
        client certificate's subject common name
"""

import json
import socket
import ssl
import struct
import sys
import threading

from jsonrpcserver import Result, Success, dispatch


def subtract(minuend, subtrahend) -> Result:
    return Success(minuend - subtrahend)


def sum_(*numbers) -> Result:
    return Success(sum(numbers))


class Framed:
    """Messages over a TLS socket, by FRAMING."""

    def __init__(self, sock, framing):
        self.sock = sock
        self.framing = framing
        self.lines = sock.makefile("rb")

    def send(self, text):
        data = text.encode()
        if self.framing == "newline":
            self.sock.sendall(data + b"\n")
        else:
            self.sock.sendall(struct.pack(">I", len(data)) + data)

    def recv(self):
        if self.framing == "newline":
            line = self.lines.readline()
            return line.decode() if line else None
        head = self.lines.read(4)
        if len(head) < 4:
            return None
        (n,) = struct.unpack(">I", head)
        return self.lines.read(n).decode()


def run_client(server, name, ca, framing, cert=None, key=None):
    from jsonrpcclient import Error, Ok, parse, request

    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    if cert:
        context.load_cert_chain(cert, key)
    host, port = server.rsplit(":", 1)
    raw = socket.create_connection((host, int(port)), timeout=5)
    sock = context.wrap_socket(raw, server_hostname=name)
    print("connected", sock.version(), flush=True)
    conn = Framed(sock, framing)
    failures = []

    def call(req):
        conn.send(json.dumps(req))
        return parse(json.loads(conn.recv()))

    def check(what, got, want):
        if got != want:
            failures.append("%s: got %r, want %r" % (what, got, want))
        else:
            print("ok", what, flush=True)

    r = call(request("subtract", params=[42, 23]))
    check("positional", (type(r), getattr(r, "result", None)), (Ok, 19))
    r = call(request("subtract", params={"subtrahend": 23, "minuend": 42}))
    check("named", (type(r), getattr(r, "result", None)), (Ok, 19))
    r = call(request("nope"))
    check("unknown method", (type(r), getattr(r, "code", None)), (Error, -32601))
    batch = [request("sum", params=[1, 2, 4]), request("subtract", params=[42, 23])]
    conn.send(json.dumps(batch))
    answers = parse(json.loads(conn.recv()))
    by_id = {a.id: a.result for a in answers}
    check("batch", sorted(by_id.items()), sorted({batch[0]["id"]: 7, batch[1]["id"]: 19}.items()))
    sock.close()
    if failures:
        print("FAILED:\n" + "\n".join(failures), flush=True)
        return 1
    print("all passed", flush=True)
    return 0


def run_server(cert, key, framing, client_ca=None):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    if client_ca:
        context.load_verify_locations(cafile=client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    host, port = listener.getsockname()
    print("listening on %s:%d" % (host, port), flush=True)

    def serve(raw):
        try:
            sock = context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError) as e:
            print("handshake failed:", e, file=sys.stderr, flush=True)
            return
        peer = sock.getpeercert() or {}
        cn = dict(x[0] for x in peer.get("subject", ())).get("commonName")

        def whoami() -> Result:
            return Success(cn)

        # This connection's methods: `whoami` answers for its own client.
        methods = {"subtract": subtract, "sum": sum_, "whoami": whoami}
        conn = Framed(sock, framing)
        try:
            while True:
                text = conn.recv()
                if text is None:
                    break
                answer = dispatch(text, methods=methods)
                if answer:
                    conn.send(answer)
        except (ssl.SSLError, OSError):
            pass
        finally:
            sock.close()

    def accept():
        while True:
            raw, _ = listener.accept()
            threading.Thread(target=serve, args=(raw,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    # Serves until the test closes stdin.
    sys.stdin.read()
    return 0


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["client"] and len(args) in (5, 7):
        sys.exit(run_client(*args[1:]))
    elif args[:1] == ["server"] and len(args) in (4, 5):
        sys.exit(run_server(*args[1:]))
    else:
        sys.exit(__doc__)
