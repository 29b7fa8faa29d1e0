"""A Python kademlia 2.2.3 node for the interop tests.

    python kademlia_peer.py PORT [HOST:PORT ...]

Listens on 127.0.0.1:PORT (0: any), prints `listening on 127.0.0.1:PORT`, bootstraps through
the given nodes, prints `joined`, then answers one JSON line per command read on stdin:
["set", key, value], ["set_bytes", key, hex], ["get", key] -> {"type": ..., "value": ...}
(bytes as hex; a missing key is {"type": "NoneType", "value": null}), ["bootstrap", "H:P", ...].
"""

import asyncio
import json
import sys

from kademlia.network import Server


def addr(text):
    host, port = text.rsplit(":", 1)
    return (host, int(port))


def described(value):
    if isinstance(value, bytes):
        return {"type": "bytes", "value": value.hex()}
    return {"type": type(value).__name__, "value": value}


async def main():
    server = Server()
    await server.listen(int(sys.argv[1]), interface="127.0.0.1")
    port = server.transport.get_extra_info("sockname")[1]
    print(f"listening on 127.0.0.1:{port}", flush=True)
    if len(sys.argv) > 2:
        await server.bootstrap([addr(a) for a in sys.argv[2:]])
    print("joined", flush=True)
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        command = json.loads(line)
        if command[0] == "set":
            answer = await server.set(command[1], command[2])
        elif command[0] == "set_bytes":
            answer = await server.set(command[1], bytes.fromhex(command[2]))
        elif command[0] == "get":
            answer = described(await server.get(command[1]))
        elif command[0] == "bootstrap":
            answer = len(await server.bootstrap([addr(a) for a in command[1:]]))
        else:
            answer = {"error": f"unknown command {command[0]}"}
        print(json.dumps(answer), flush=True)
    server.stop()


asyncio.run(main())
