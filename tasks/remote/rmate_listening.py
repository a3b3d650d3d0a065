"""Polls (bounded) until something listens on a loopback port: the sshd's end of rmate's -R.

Shipped on stdin (``python3 - PORT SECONDS``) by tasks/tunnel/opener.py. Exit 0 once the port
is taken, 3 when SECONDS pass first. By hand: ``python3 rmate_listening.py 52698 10``.
"""
import socket
import sys
import time


def main(port: int, seconds: float) -> int:
    deadline = time.time() + seconds
    while True:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return 0  # taken: the reverse forward listens
        finally:
            s.close()
        if time.time() > deadline:
            return 3
        time.sleep(0.1)


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]), float(sys.argv[2])))
