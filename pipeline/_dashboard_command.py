"""`finetune-advisor dashboard`: start the Streamlit app over run directories."""

from __future__ import annotations

import os
import subprocess
import sys


def register(sub) -> None:
    p = sub.add_parser(
        "dashboard", help="open the dashboard of one or more run directories (Streamlit)",
        description="Start a Streamlit dashboard of the advice, the search (live while it runs) and the export of "
                    "each run directory, and a comparison of several. It binds to 127.0.0.1 unless --host is given.",
        epilog="examples:\n  finetune-advisor dashboard runs/bbc\n"
               "  finetune-advisor dashboard runs/bbc runs/reviews --port 8600\n"
               "  finetune-advisor dashboard runs/bbc --host 0.0.0.0        reachable from other machines",
        formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="*", metavar="RUN", help="run directories")
    p.add_argument("--port", type=int, default=8501, help="port (default 8501)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..core import InputError
    from ..dashboard import APP

    if not 0 < args.port < 65536:
        raise InputError(f"--port {args.port} is not a port: use 1..65535 (e.g. 8501).")
    check_port(args.host, args.port)
    command = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.port", str(args.port),
               "--server.address", args.host, "--server.headless", "true",
               "--browser.gatherUsageStats", "false", "--", *args.runs]
    print(f"dashboard on http://{args.host}:{args.port}  (Ctrl-C stops it)", flush=True)
    if os.name == "posix":  # become the server, so that a signal to this process reaches it
        os.execv(sys.executable, command)
    try:
        return subprocess.call(command)
    except KeyboardInterrupt:
        return 0


def check_port(host: str, port: int) -> None:
    """InputError unless the server could listen on host:port now (free, and an address of this machine)."""
    import socket

    from ..core import InputError

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise InputError(f"--host '{host}' is not an address of this machine ({e.strerror}). "
                         "Use 127.0.0.1 (this machine only) or 0.0.0.0 (every interface).") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(address)
        except OSError as e:
            if e.errno in (98, 48, 10048):  # EADDRINUSE on Linux, macOS, Windows
                raise InputError(f"--port {port} is already in use on {host}. Pick another, e.g. "
                                 f"--port {port + 1}, or stop what listens there.") from None
            raise InputError(f"--host '{host}' --port {port} cannot be used ({e.strerror or e}). "
                             "Use 127.0.0.1 or 0.0.0.0, and a port above 1023.") from None
