"""Serving the viewer: Solara's server (uvicorn) in this process, on 127.0.0.1 by default,
in production mode and without telemetry, with the front-end assets from the local cache
(the solara-assets package), so nothing is fetched from the internet.
"""

from __future__ import annotations

import errno
import os
import socket
import warnings

# read by Solara's settings when it is imported: no usage reports leave the machine
os.environ.setdefault("SOLARA_TELEMETRY_MIXPANEL_ENABLE", "False")
# Mesa 3.3's page trips Solara's hook check when it is imported: harmless, and not ours
warnings.filterwarnings("ignore", message=".*ComponentsView: `use_state` found despite",
                        category=UserWarning)

PORT_TRIES = 20  # ports tried from the one asked for, upwards


class PortError(OSError):
    """No free port to serve on."""


def free_port(host: str, port: int, tries: int = PORT_TRIES) -> int:
    """`port` if it is free on `host`, else the next free one of the `tries` above it
    (port 0: any free port). Raises PortError when none is."""
    for candidate in [0] if port == 0 else range(port, min(port + tries, 65536)):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((host, candidate))
            except OSError as exc:
                if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                    continue
                raise PortError(f"cannot serve on {host}: {exc.strerror}") from None
            return probe.getsockname()[1]
    raise PortError(f"ports {port} to {port + tries - 1} on {host} are all in use; pass "
                    "--port with another one, or --port 0 for any free port")


def serve(host: str, port: int) -> None:
    """Serve the page of cosim.viz.page (configured beforehand) until interrupted."""
    import solara.server.settings as settings
    import uvicorn

    settings.main.mode = "production"  # development mode reaches out to an outside page
    settings.telemetry.mixpanel_enable = False
    os.environ["SOLARA_APP"] = "cosim.viz.page"
    os.environ["SERVER_NAME"], os.environ["SERVER_PORT"] = host, str(port)
    uvicorn.run("solara.server.starlette:app", host=host, port=port, log_level="warning")
