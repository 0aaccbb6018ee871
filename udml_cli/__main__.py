import os
import sys

from udml_cli.cli.app import main


def worker_main() -> None:
    """One of the processes ``--nproc`` started: ends without the interpreter's teardown. Its work
    is written and its process group left by then, but tearing down gloo's threads at exit can
    abort the process ("terminate called without an active exception", signal 6) after the run
    succeeded, and the launcher then calls the whole run failed."""
    try:
        main()
        code = 0
    except SystemExit as stop:
        if stop.code is None or isinstance(stop.code, int):
            code = stop.code or 0
        else:  # a message: what the interpreter would print
            print(stop.code, file=sys.stderr)
            code = 1
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


if __name__ == "__main__":
    if os.environ.get("TORCHELASTIC_RUN_ID"):
        worker_main()
    else:
        main()
