"""A rogue listener for the farm tests: takes a dead server's address and port, accepts every
connection, says nothing, and records everything each peer sends.

    python farm_rogue.py ADDRESS PORT OUTFILE SECONDS

Prints "listening" once bound; stops after SECONDS or at SIGTERM, then writes OUTFILE: a JSON
object {"connections": [{"peer": "...", "received": "<base64>"}]}.
"""

from __future__ import annotations

import base64
import json
import select
import signal
import socket
import sys
import time


def main() -> int:
    address, port, outfile, seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((address, port))
    listener.listen(64)
    print("listening", flush=True)
    peers: dict[socket.socket, dict] = {}
    received: list[dict] = []
    deadline = time.monotonic() + seconds
    while not stop and time.monotonic() < deadline:
        try:
            ready, _, _ = select.select([listener, *peers], [], [], 0.1)
        except InterruptedError:
            continue
        for sock in ready:
            if sock is listener:
                conn, peer = listener.accept()
                peers[conn] = {"peer": f"{peer[0]}:{peer[1]}", "data": bytearray()}
                received.append(peers[conn])
                continue
            try:
                chunk = sock.recv(65536)
            except OSError:
                chunk = b""
            if chunk:
                peers[sock]["data"] += chunk
            else:
                sock.close()
                del peers[sock]
    for sock in peers:
        sock.close()
    listener.close()
    record = {"connections": [{"peer": r["peer"], "received": base64.b64encode(r["data"]).decode()} for r in received]}
    with open(outfile, "w", encoding="utf-8") as f:
        json.dump(record, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
