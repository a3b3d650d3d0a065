"""rmate's port on this host: is the wanted one free on the loopback, a spare one, and ~/.rmate.rc.

Shipped on stdin (``python3 - PORT [SLURM_ENDPOINT]``) by tasks/tunnel/opener.py; parsed by
tasks/tunnel/rmate.py ``parse_ports``. The check binds instead of connecting, so nothing listening there is
disturbed. SLURM_ENDPOINT (a leading ~ is this user's home): the file a labhop Slurm job writes while its
JupyterLab serves; its job and node are passed on (rmate then says where it forwards).
By hand: ``python3 rmate_ports.py 52698``.
"""
import json
import os
import socket
import sys
from typing import Dict, Optional


def free(port: int) -> Optional[int]:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        bound: int = s.getsockname()[1]
        return bound
    except OSError:
        return None
    finally:
        s.close()


def slurm_job(endpoint: str) -> Optional[Dict[str, str]]:
    """The job and node of a labhop Slurm job serving from here, if one does."""
    try:
        with open(os.path.expanduser(endpoint)) as f:
            data = json.load(f)
        return {"job": str(data["job"]), "node": str(data["node"])}
    except (OSError, ValueError, TypeError, KeyError):
        return None


def main(wanted: int, endpoint: Optional[str] = None) -> None:
    rc_path = os.path.expanduser("~/.rmate.rc")
    try:
        with open(rc_path) as f:
            rc: Optional[str] = f.read(65536)
    except OSError:
        rc = None
    print(json.dumps({"wanted_free": free(wanted) is not None, "spare": free(0), "rc": rc, "rc_path": rc_path,
                      "slurm": slurm_job(endpoint) if endpoint else None}))


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else None)
