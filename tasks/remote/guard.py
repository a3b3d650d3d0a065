"""Runs a command (argv[1:]) so that it dies, process group and all, when its run goes away.

Shipped as ``python3 -c`` by tasks/target/guard.py around the long steps (venv, install). sshd
leaves a command without a pty running when its client goes away; this watcher's stdin reaches
EOF then (the executor never closes the stdin of a command without a payload), and it kills the
command's whole group. By hand: ``python3 guard.py sh -c 'sleep 60'`` and press Ctrl-D.
"""
import os
import signal
import subprocess
import sys
import threading
import time


def main(argv: list[str]) -> int:
    with open(os.devnull) as null:
        child = subprocess.Popen(argv, stdin=null, preexec_fn=os.setsid)

    def watch() -> None:
        try:
            while os.read(0, 65536):
                pass
        except OSError:
            pass
        for sig in (signal.SIGTERM, signal.SIGKILL):  # the run is gone: take the whole group with it
            try:
                os.killpg(child.pid, sig)
            except OSError:
                return
            for _ in range(50):
                if child.poll() is not None:
                    return
                time.sleep(0.1)

    watcher = threading.Thread(target=watch)
    watcher.daemon = True
    watcher.start()
    code = child.wait()
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
