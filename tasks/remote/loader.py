# Runs the script of argv[1] bytes that starts stdin, leaving the rest of stdin to it (lock.py).
import os
import sys

size, script = int(sys.argv[1]), b""
while len(script) < size:
    chunk = os.read(0, size - len(script))
    if not chunk:
        sys.exit(0)  # the run went away before it sent the script
    script += chunk
del sys.argv[1]
exec(compile(script, "<stdin>", "exec"))
