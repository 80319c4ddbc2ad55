"""The Jupyter signal: kernels' execution state on the pod's Jupyter servers.

Without flags the servers are found the way ``jupyter server list`` finds them: the
``jpserver-<pid>.json`` runtime files (URL and token) in jupyter_core's runtime
directory (``$JUPYTER_RUNTIME_DIR``, else ``$JUPYTER_DATA_DIR/runtime``, else
``~/.local/share/jupyter/runtime``), read again at every check so a restarted server
(new port, new token) is picked up. ``--jupyter-url`` watches one given server.

Only kernels count: a kernel that is busy (any work: GPU, pandas, pip, a download)
or that has executed or printed since the previous check. A kernel "starting" since
an unknown time (no readable ``last_activity``) is unknown, not busy (see
:meth:`JupyterSignal._status`). Terminals do not: a
``tail -f`` of the watchdog's own log in a JupyterLab tab prints forever and would
keep the pod up forever. The polls themselves (``/api/status``,
``/api/kernels?no_track_activity=1``) do not count as activity in jupyter_server.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reviewkit.watchdog.signals import BUSY, IDLE, UNKNOWN, Reading, SignalError, ago, get_json, read_time


def runtime_dir() -> Path:
    """jupyter_core's runtime directory (its own function when installed)."""
    try:
        from jupyter_core.paths import jupyter_runtime_dir
    except ImportError:
        pass
    else:
        return Path(jupyter_runtime_dir())
    if os.environ.get("JUPYTER_RUNTIME_DIR"):
        return Path(os.environ["JUPYTER_RUNTIME_DIR"])
    if os.environ.get("JUPYTER_DATA_DIR"):
        data = Path(os.environ["JUPYTER_DATA_DIR"])
    elif sys.platform == "darwin":
        data = Path.home() / "Library" / "Jupyter"
    else:
        data = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "jupyter"
    return data / "runtime"


@dataclass(frozen=True)
class JupyterServer:
    url: str
    token: str | None
    source: str  # the runtime file, or "--jupyter-url"


def _short(kernel: dict[str, Any]) -> str:
    """A kernel's id as the logs show it (its first 8 characters, as JupyterLab does)."""
    return str(kernel.get("id", "?"))[:8]


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return True  # cannot tell: ask the server
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def discover(directory: str | os.PathLike[str] | None = None) -> list[JupyterServer]:
    """Running Jupyter servers from their ``jpserver-*.json`` files (dead pids skipped)."""
    where = Path(directory) if directory is not None else runtime_dir()
    servers = []
    for path in sorted(where.glob("jpserver-*.json")):
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # being written or removed right now; next check
        if not isinstance(info, dict) or not isinstance(info.get("url"), str) or info.get("sock"):
            continue
        if not _alive(info.get("pid")):
            continue
        servers.append(JupyterServer(info["url"].rstrip("/"), info.get("token") or None, str(path)))
    return servers


class JupyterSignal:
    """Kernels of the given server, or of every server found in the runtime directory."""

    name = "jupyter"
    STARTING_GRACE = 300.0

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        timeout: float = 5.0,
        directory: str | os.PathLike[str] | None = None,
    ) -> None:
        self.url = url.rstrip("/") if url else None
        self.token = token
        self.timeout = timeout
        self.directory = directory
        self.fix = (
            "check --jupyter-url and --jupyter-token (JUPYTER_TOKEN): the server must answer "
            "/api/kernels with that token"
            if url
            else "the watchdog must run as the user that runs Jupyter (it reads the servers' "
            "jpserver-*.json files), or pass --jupyter-url and --jupyter-token"
        ) + '; shut down a kernel stuck in "starting"'

    def servers(self) -> list[JupyterServer]:
        if self.url:
            return [JupyterServer(self.url, self.token, "--jupyter-url")]
        return discover(self.directory)

    @staticmethod
    def _status(kernel: dict[str, Any], now: float) -> tuple[str, str]:
        """A kernel's own verdict (busy, idle or unknown) and, when unknown, why.

        The server reports "starting" until it sees the kernel's first status
        message, and a kernel nobody ever connected to can stay "starting" forever,
        which must not keep the pod up forever: starting is busy for STARTING_GRACE
        seconds after the kernel's ``last_activity``, then idle. Without a readable
        ``last_activity`` (jupyter_server always sends one; other servers may not)
        nobody can tell how long it has been starting: unknown, so the monitor drops
        it after ``--unknown-grace`` like any other signal that cannot be read.
        """
        state = kernel.get("execution_state")
        if state == "busy":
            return BUSY, ""
        if state != "starting":
            return IDLE, ""
        try:
            started = read_time(kernel.get("last_activity"), now)
        except (TypeError, ValueError) as exc:
            return UNKNOWN, f'kernel {_short(kernel)} is "starting" since an unknown time (last_activity: {exc})'
        return (BUSY if now - started < JupyterSignal.STARTING_GRACE else IDLE), ""

    def _kernels(self, server: JupyterServer) -> list[dict[str, Any]]:
        headers = {"Authorization": f"token {server.token}"} if server.token else {}
        get_json(server.url + "/api/status", headers, self.timeout)
        kernels = get_json(server.url + "/api/kernels?no_track_activity=1", headers, self.timeout)
        if not isinstance(kernels, list):
            raise SignalError(f"unexpected /api/kernels answer from {server.url}")
        return [k for k in kernels if isinstance(k, dict)]

    def read(self, since: float) -> Reading:
        servers = self.servers()
        if not servers:
            where = self.directory or runtime_dir()
            return Reading(self.name, IDLE, f"no Jupyter server running (no jpserver-*.json in {where})")
        now = time.time()
        kernels: list[dict[str, Any]] = []
        errors: list[str] = []
        for server in servers:
            try:
                kernels += self._kernels(server)
            except SignalError as exc:
                errors.append(str(exc))
        verdicts = [(kernel, *self._status(kernel, now)) for kernel in kernels]
        busy = [k for k, status, _ in verdicts if status == BUSY]
        if busy:
            names = ", ".join(_short(k) for k in busy)
            return Reading(self.name, BUSY, f"{len(busy)} kernel(s) busy ({names})")
        latest = None
        for kernel in kernels:
            try:
                stamp = read_time(kernel.get("last_activity"), now)
            except (TypeError, ValueError):
                continue
            latest = stamp if latest is None else max(latest, stamp)
        if latest is not None and latest > since:
            return Reading(self.name, BUSY, f"kernel activity {ago(latest, now)}")
        stuck = [(k, why) for k, status, why in verdicts if status == UNKNOWN]
        if stuck:  # each stuck kernel on its own unknown-grace clock, the servers' errors on the signal's
            parts = ((self.name,) if errors else ()) + tuple(f"{self.name} kernel {_short(k)}" for k, _ in stuck)
            return Reading(self.name, UNKNOWN, "; ".join(errors + [why for _, why in stuck]), parts=parts)
        if errors:
            return Reading(self.name, UNKNOWN, "; ".join(errors))
        last = f", last activity {ago(latest, now)}" if latest is not None else ""
        return Reading(self.name, IDLE, f"{len(kernels)} kernel(s) idle{last}")
