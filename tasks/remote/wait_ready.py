"""Waits until JupyterLab answers HTTP(S) at URL, or says why not with the log's tail.

Shipped as ``VENV_PYTHON -c`` by tasks/plan.py ``wait_step``. By hand:
``python3 wait_ready.py URL PID_FILE LOG_FILE SECONDS``; exit 0 once it answers, 1 otherwise.
"""
import os
import ssl
import sys
import time
import urllib.error
import urllib.request


def tail(log_file: str) -> str:
    try:
        with open(log_file, errors="replace") as f:
            return "".join(f.readlines()[-15:])
    except OSError:
        return "(no log)"


def alive(pid_file: str) -> bool:
    try:
        with open(pid_file) as f:
            pid = int(f.read())
    except (OSError, ValueError):
        return True  # not written yet
    return os.path.exists("/proc/%d" % pid) or not os.path.isdir("/proc")


def main(url: str, pid_file: str, log_file: str, timeout: float) -> int:
    context = ssl._create_unverified_context()  # our own self-signed cert, on our own host
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2, context=context)
            return 0
        except urllib.error.HTTPError:
            return 0  # it answers HTTP: up
        except Exception:
            pass
        if not alive(pid_file):
            sys.stderr.write("JupyterLab exited during start-up; log tail:\n" + tail(log_file))
            return 1
        time.sleep(0.2)
    sys.stderr.write("JupyterLab did not answer %s within %ds; log tail:\n%s" % (url, timeout, tail(log_file)))
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])))
