"""Runs in labhop's Slurm job on the compute node (the venv's python): JupyterLab on a free port.

Shipped as ``VENV_PYTHON -c`` in the job script (tasks/slurm/job.py ``job_script``). By hand, inside a job:
``python3 slurm_launch.py ENDPOINT CONFIG_DIR ROOT_DIR PORT JUPYTER SCHEME LAB_DIR``.
Takes the node's address as the login node reaches it, PORT when it is free there (else another one, said
in the log), starts ``JUPYTER lab`` with its config from CONFIG_DIR (address and port in LABHOP_SLURM_IP /
LABHOP_SLURM_PORT), and once it answers writes node, address and port to ENDPOINT (0600). SIGTERM (scancel,
walltime) is passed on to JupyterLab; ENDPOINT goes with the job.
"""
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any, Dict, List, Optional

TRIES = 3  # another port when JupyterLab lost a race for the one found free


def say(text: str) -> None:
    print("labhop: " + text, flush=True)


def address(node: str) -> str:
    """The node name's own address, else the interface that routes to the submit host (a UDP connect
    sends nothing)."""
    try:
        found = socket.gethostbyname(node)
        if not found.startswith("127."):
            return found
    except OSError:
        pass
    try:
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.connect((os.environ.get("SLURM_SUBMIT_HOST", ""), 9))
        return str(probe.getsockname()[0])
    except OSError:
        return "0.0.0.0"


def free(addr: str, port: int) -> Optional[int]:
    s = socket.socket()
    # as JupyterLab binds (tornado sets SO_REUSEADDR): a listener makes it fail, TIME_WAIT leftovers do not
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((addr, port))
        return port
    except OSError:
        return None
    finally:
        s.close()


def any_port(addr: str) -> int:
    s = socket.socket()
    s.bind((addr, 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def answers(url: str, context: ssl.SSLContext) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2, context=context)
        return True
    except urllib.error.HTTPError:
        return True
    except Exception:
        return False


def write_endpoint(path: str, record: Dict[str, Any]) -> None:
    old = os.umask(0o077)
    try:
        tmp = "%s.%s.tmp" % (path, record["job"])
        with open(tmp, "w") as f:
            json.dump(record, f)
        os.chmod(tmp, 0o600)
        os.rename(tmp, path)
    finally:
        os.umask(old)


def main(argv: List[str]) -> int:
    endpoint, config_dir, root_dir, wanted, jupyter, scheme, lab_dir = argv[:7]
    want = int(wanted)
    job = os.environ.get("SLURM_JOB_ID", "")
    node = socket.gethostname()
    addr = address(node)
    env = dict(os.environ)
    env.pop("JUPYTER_CONFIG_PATH", None)
    env.update(JUPYTER_CONFIG_DIR=config_dir, JUPYTER_PREFER_ENV_PATH="0", LABHOP_SLURM_IP=addr,
               JUPYTERLAB_SETTINGS_DIR=os.path.join(lab_dir, "user-settings"),
               JUPYTERLAB_WORKSPACES_DIR=os.path.join(lab_dir, "workspaces"))
    context = ssl._create_unverified_context()  # our own server on our own node
    state: Dict[str, Any] = {"proc": None, "stopping": False}

    def stop(signum: int, frame: Any) -> None:
        state["stopping"] = True
        proc = state["proc"]
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        say("stopping JupyterLab (signal %d)" % signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    proc: Optional["subprocess.Popen[bytes]"] = None
    port: Optional[int] = want
    for attempt in range(TRIES):
        if state["stopping"]:
            return 1
        port = free(addr, want) if attempt == 0 else None
        if port is None:
            port = any_port(addr)
            say("port %d is taken on %s: using %d" % (want, node, port) if attempt == 0 else "trying port %d" % port)
        env["LABHOP_SLURM_PORT"] = str(port)
        say("starting JupyterLab on %s (%s:%d), job %s" % (node, addr, port, job))
        proc = state["proc"] = subprocess.Popen([jupyter, "lab"], cwd=root_dir, env=env, stdin=subprocess.DEVNULL)
        url = "%s://%s:%d/api" % (scheme, "127.0.0.1" if addr == "0.0.0.0" else addr, port)
        while proc.poll() is None:
            if answers(url, context):
                break
            time.sleep(0.1)
        if proc.poll() is None:
            break
        if state["stopping"]:
            return 1  # cancelled or out of time while starting
        say("JupyterLab exited (status %s) before it answered" % proc.returncode)
    else:
        return 1
    write_endpoint(endpoint, {"job": job, "node": node, "host": addr, "port": port, "scheme": scheme,
                              "pid": proc.pid, "since": int(time.time())})
    say("JupyterLab answers on %s:%d" % (addr, port))
    status = proc.wait()
    try:
        with open(endpoint) as f:
            if json.load(f).get("job") == job:
                os.unlink(endpoint)
    except (OSError, ValueError):
        pass
    return status if status >= 0 else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
