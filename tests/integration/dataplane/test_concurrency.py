"""Many connections at once through an in-process pair: no deadlock, no crossed bytes, every record complete."""

from __future__ import annotations

import os
import socket
import threading

from proxy.errors import CloseReason
from support.net import EchoServer, recv_all
from support.sidecar import Plane

CLIENTS = 64
PAYLOAD = 96 * 1024


def test_concurrent_connections_each_get_their_own_bytes_back(plane: Plane) -> None:
    echo = EchoServer()
    plane.add_pair(echo.port)
    plane.start()
    failures: list[str] = []

    def client(i: int) -> None:
        payload = os.urandom(PAYLOAD)
        try:
            with socket.create_connection(("127.0.0.1", plane.port("out")), timeout=30) as sock:
                sender = threading.Thread(target=lambda: (sock.sendall(payload), sock.shutdown(socket.SHUT_WR)))
                sender.start()
                got = recv_all(sock, 1 << 24)
                sender.join(30)
            if got != payload:
                failures.append(f"client {i}: {len(got)} bytes back, not the {PAYLOAD} bytes sent")
        except OSError as exc:
            failures.append(f"client {i}: {exc}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures, failures[:5]
    plane.wait_record(lambda r: sum(1 for x in plane.records if x.listener == "out") == CLIENTS, timeout=15)
    outs = [r for r in plane.records if r.listener == "out"]
    assert all(r.close_reason is CloseReason.COMPLETED and r.bytes_out == PAYLOAD for r in outs)
    echo.close()
