"""Splits a pushed bundle of wheels into wheels, keeping each only if its sha256 matches.

Shipped as ``python3 -c`` by tasks/offline/install.py ``plan_push``. By hand:
``python3 unbundle.py WHEELHOUSE_DIR BUNDLE_NAME < WHEELS_JSON`` ([[name, size, sha256], ...] in bundle order).
"""
import hashlib
import json
import os
import sys
from typing import Any


def main(directory: str, bundle: str, wheels: list[list[Any]]) -> int:
    os.umask(0o077)  # wheels below the 0700 prefix stay the user's alone
    bad = []
    with open(os.path.join(directory, bundle), "rb") as f:
        for name, size, sha256 in wheels:
            data = f.read(size)
            if len(data) == size and hashlib.sha256(data).hexdigest() == sha256:
                tmp = os.path.join(directory, name + ".tmp")
                with open(tmp, "wb") as out:
                    out.write(data)
                os.rename(tmp, os.path.join(directory, name))
            else:
                bad.append(name)
    for name in os.listdir(directory):  # this bundle, and any left by an older plan
        if name.startswith(".bundle-"):
            os.remove(os.path.join(directory, name))
    if bad:
        sys.stderr.write("%d wheel(s) arrived damaged and were removed (run again to resend them): %s\n"
                         % (len(bad), ", ".join(bad)))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], json.loads(sys.stdin.read())))
