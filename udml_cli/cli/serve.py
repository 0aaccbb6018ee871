"""``udml serve``: a local web page to search an index, browse its clusters, review duplicates."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from udml_cli.cli.common import DeviceOpt, console, data_stream
from udml_cli.errors import UsageError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def serve(
    index_dir: Annotated[
        Path, typer.Argument(help="Index folder made by udml index.", metavar="INDEX")
    ],
    run_dir: Annotated[
        Path | None, typer.Option("--run", help="A training run to show: scores and curves.")
    ] = None,
    host: Annotated[
        str, typer.Option(help="Address to listen on (127.0.0.1: this machine only).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free one).")] = 8765,
    open_browser: Annotated[
        bool, typer.Option("--open", help="Open the page in the default browser.")
    ] = False,
    device: DeviceOpt = None,
) -> None:
    """A local web page over an index: search by image or path, clusters, duplicate groups.

    The URL is printed on stdout; Ctrl-C stops the server. The page only shows images the
    index lists (thumbnails are cached in INDEX/thumbnails, safe to delete) and never deletes
    or moves a file. The JSON API it uses is documented at /docs.

    \b
    udml serve idx/photos --open
    udml serve idx/photos --run runs/photos --port 9000
    """
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise UsageError(
            "udml serve needs FastAPI and uvicorn: pip install 'udml[serve]'"
        ) from None
    from udml_cli.serve.app import create_app
    from udml_cli.serve.library import Library, check_run
    from udml_cli.serve.run import bind, server_for

    lib = Library(index_dir, device or "auto")  # the index and its model, checked now
    run_dir = check_run(run_dir) if run_dir is not None else None
    sock = bind(host, port)
    bound = sock.getsockname()[1]
    name = f"[{host}]" if ":" in host else host
    url = f"http://{name}:{bound}/"
    if host not in LOOPBACK:
        console.print(
            f"warning: listening on {host}: anyone who can reach this machine on port {bound} "
            "can see the indexed photos (there is no password)"
        )
    hosts = ["127.0.0.1", "localhost"] if host in ("127.0.0.1", "localhost") else None
    app = create_app(lib, run_dir, hosts)
    server = server_for(app)
    console.print(f"serving {len(lib)} images of {lib.folder}; Ctrl-C stops")
    data_stream().write(url + "\n")
    if open_browser:
        threading.Thread(target=_open_when_up, args=(server, url), daemon=True).start()
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a TERM stops it as Ctrl-C does
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        sock.close()
    console.print("stopped")


def _open_when_up(server, url: str) -> None:
    import time
    import webbrowser

    for _ in range(200):
        if server.started:
            webbrowser.open(url)
            return
        time.sleep(0.05)
