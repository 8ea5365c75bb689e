"""accept() out of file descriptors (issue 21, item 2): asyncio's own accept loop
logged a traceback per attempt, up to 1,024 per tick (98,483 in 25 s). The
Acceptor pauses the listener, logs one line with a count, and serves the waiting
clients once descriptors are free again."""

from __future__ import annotations

import socket
import subprocess
import sys

#: A listener on a process with RLIMIT_NOFILE 64 whose descriptors are all taken
#: (/dev/null), until its listener has paused three times; then it frees them and
#: answers "hi" to three connections, and exits.
_SCRIPT = r"""
import asyncio, logging, os, resource, socket, sys
from saslnetauth.serve.authsocket.acceptor import Acceptor

logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

async def main():
    served = asyncio.Queue()
    async def on_connect(reader, writer):
        writer.write(b"hi")
        await writer.drain()
        writer.close()
        served.put_nowait(1)
    sock = socket.create_server(("127.0.0.1", 0))
    acceptor = Acceptor(sock, on_connect, name="test")
    acceptor.start()
    dummies = []
    try:
        while True:
            dummies.append(os.open("/dev/null", os.O_RDONLY))
    except OSError:
        pass
    print(sock.getsockname()[1], flush=True)
    while acceptor.paused < 3:
        await asyncio.sleep(0.05)
    for fd in dummies:
        os.close(fd)
    for _ in range(3):
        await asyncio.wait_for(served.get(), 30)
    acceptor.close()
    print(f"paused {acceptor.paused}", flush=True)

asyncio.run(main())
"""


def test_accept_out_of_descriptors_pauses_logs_once_and_recovers() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _SCRIPT],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        clients = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(3)]
        # the clients wait in the kernel's queue until the listener has descriptors again
        assert [c.recv(10) for c in clients] == [b"hi"] * 3
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, err
    paused = int(out.split()[-1])
    assert paused >= 3
    lines = [line for line in err.splitlines() if "accept paused" in line]
    assert len(lines) == 1, err  # one line per 10 s, however many pauses
    assert "error=EMFILE" in lines[0] and "seconds=0.5" in lines[0]
    assert "Traceback" not in err and "Too many open files" not in err
