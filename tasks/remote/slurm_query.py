"""Runs on the login node (its python3, text on stdin): what labhop knows about its Slurm job, one JSON line.

Shipped by tasks/slurm/run.py ``query``. By hand:
``python3 slurm_query.py RECORD ENDPOINT CONFIG FORMAT [JOB_ID [CLUSTER]]`` (a leading ~ is this user's home).
Prints labhop's job record (RECORD), the job's endpoint file (ENDPOINT), the server config (CONFIG, for its
token) and squeue's answer about that one job (or JOB_ID): ``--states=all`` and an explicit FORMAT, without
the user's SQUEUE_* variables and with a fixed time format, so that nothing in their environment changes
what labhop parses.
"""
import json
import os
import shutil
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional


def read(path: str) -> Optional[str]:
    try:
        with open(os.path.expanduser(path)) as f:
            return f.read()
    except OSError:
        return None


def load(path: str) -> Any:
    try:
        return json.loads(read(path) or "null")
    except ValueError:
        return None


def squeue(job: Dict[str, Any], fmt: str) -> List[Any]:
    env = dict((k, v) for k, v in os.environ.items() if not k.startswith("SQUEUE_") and k != "SLURM_CLUSTERS")
    env["SLURM_TIME_FORMAT"] = "standard"
    argv = ["squeue", "--noheader", "--states=all", "--jobs", str(job.get("id")), "--format", fmt]
    if job.get("cluster"):
        argv += ["--clusters", str(job["cluster"])]
    try:
        p = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           universal_newlines=True, timeout=60)
    except subprocess.TimeoutExpired:
        return [124, "", "squeue: Socket timed out (no answer within 60s)"]
    return [p.returncode, p.stdout, p.stderr]


def main(argv: List[str]) -> None:
    record, endpoint, config, fmt = argv[:4]
    out: Dict[str, Any] = {"now": time.strftime("%Y-%m-%dT%H:%M:%S"), "sbatch": shutil.which("sbatch"),
           "dir": os.path.isdir(os.path.dirname(os.path.expanduser(record))),
           "job": load(record), "endpoint": load(endpoint), "config": read(config)}
    job = out["job"] if isinstance(out["job"], dict) else None
    if len(argv) > 4:  # ask about this job instead of the recorded one
        job = {"id": argv[4], "cluster": argv[5] if len(argv) > 5 else ""}
    if job and shutil.which("squeue"):
        out["squeue"] = squeue(job, fmt)
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
