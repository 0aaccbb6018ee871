"""Starting the server: a listening socket (one line when the port is taken), the uvicorn
server over it, and (for tests and benchmarks) the same in a background thread."""

from __future__ import annotations

import socket
import threading

from udml_cli.errors import UsageError


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``, or one line naming what stops it."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as e:
        raise UsageError(f"--host {host}: not an address of this machine ({e})") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError as e:
        sock.close()
        why = (
            "is in use (another udml serve?)"
            if e.errno == 98
            else f"cannot be opened ({e.strerror})"
        )
        raise UsageError(f"port {port} on {host} {why}; choose another with --port") from None
    sock.set_inheritable(True)
    return sock


def server_for(app):
    import uvicorn

    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    return uvicorn.Server(config)


def start_in_thread(app, host: str = "127.0.0.1", port: int = 0):
    """``(url, stop)``: ``app`` served from a background thread until ``stop()``."""
    import time

    sock = bind(host, port)
    server = server_for(app)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        time.sleep(0.02)

    def stop() -> None:
        server.should_exit = True
        thread.join(10)
        sock.close()

    return f"http://{host}:{sock.getsockname()[1]}/", stop
