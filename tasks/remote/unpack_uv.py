"""Unpacks uv's binary from its wheel to DEST, once it has run here (``uv --version``).

Shipped as ``python3 -c`` by tasks/offline/install.py ``plan_push``. By hand: ``python3 unpack_uv.py WHEEL DEST``.
"""
import os
import shutil
import subprocess
import sys
import zipfile


def main(wheel: str, dest: str) -> None:
    with zipfile.ZipFile(wheel) as z:
        member = [n for n in z.namelist() if n.endswith(".data/scripts/uv")][0]
        os.makedirs(os.path.dirname(dest), mode=0o700, exist_ok=True)
        tmp = dest + ".tmp"
        with z.open(member) as src, open(tmp, "wb") as out:
            shutil.copyfileobj(src, out)
    os.chmod(tmp, 0o700)  # like everything below the prefix: the user's alone
    subprocess.check_call([tmp, "--version"], stdout=subprocess.DEVNULL)  # it runs on this host
    os.rename(tmp, dest)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
