"""The pure part of --slurm: the request, the job script, sbatch's and squeue's answers."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest

from labhop.errors import UsageError
from labhop.inventory import parse_inventory
from labhop.jupyter_config import ServerSettings, stored_secrets
from labhop.slurm.job import (JOB_NAME, Endpoint, JobRecord, SlurmLayout, Variant, choose_variant, fingerprint,
                              job_script, parse_answer, parse_sbatch, query_args, render_config, sbatch_argv,
                              scancel_argv)
from labhop.slurm.options import DEFAULT_WAIT, SlurmRequest, resolve_request, split_args, time_seconds
from labhop.slurm.queue import FORMAT, GONE, UNKNOWN, describe, elapsed, parse_squeue, parse_time_left
from labhop.errors import LabhopError
from labhop.remote import source
from labhop.target.layout import Layout


@pytest.mark.parametrize("value, seconds", [
    ("30", 1800), ("30:15", 1815), ("4:00:00", 14400), ("1-0", 86400), ("1-2:30", 95400),
    ("2-00:00:01", 172801), ("UNLIMITED", None), ("infinite", None),
])
def test_time_limits_slurm_accepts(value: str, seconds: int) -> None:
    assert time_seconds(value) == seconds


@pytest.mark.parametrize("flags, message", [
    ({"time": "4h"}, "--time: '4h' is not a Slurm time limit"),
    ({"time": "0"}, "--time: a time limit of 0"),
    ({"time": "1:2:3:4"}, "is not a Slurm time limit"),
    ({"cpus": "two"}, "--cpus: 'two' is not a whole number"),
    ({"cpus": "0"}, "--cpus: 0 must be at least 1"),
    ({"wait": "-5"}, "--wait: -5 must be at least 1"),
    ({"mem": "16 GB"}, "--mem: '16 GB' is not a memory size"),
    ({"gpus": "a100:0"}, "--gpus: 'a100:0' is not a GPU count"),
    ({"gpus": "many"}, "is not a GPU count"),
    ({"partition": "gpu; rm -rf ~"}, "--partition: 'gpu; rm -rf ~' is not a valid partition name"),
    ({"account": "a b"}, "is not a valid account name"),
    ({"constraint": "a\nb"}, "is not a Slurm constraint expression"),
    ({"sbatch_args": ("nodelist=x",)}, "--sbatch-args: 'nodelist=x' is not an sbatch option"),
    ({"sbatch_args": ("--output=/tmp/x",)}, "labhop sets --output itself"),
    ({"sbatch_args": ("-J", "x")}, "labhop sets --job-name itself"),
])
def test_bad_requests_are_one_usage_line(flags: dict, message: str) -> None:
    with pytest.raises(UsageError) as err:
        resolve_request(None, flags)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_flags_win_over_the_inventory_table_and_name_where_a_bad_value_came_from() -> None:
    inv = {"partition": "cpu", "time": "1:00:00", "gpus": "1", "sbatch_args": ["--exclusive"]}
    req = resolve_request(inv, {"partition": "gpu", "time": None, "cpus": "4", "sbatch_args": ()},
                          table="[hosts.login.slurm]")
    assert req == SlurmRequest(partition="gpu", time="1:00:00", gpus="1", cpus=4, sbatch_args=("--exclusive",),
                               wait=DEFAULT_WAIT)
    assert req.directives() == ["--partition=gpu", "--time=1:00:00", "--cpus-per-task=4", "--gres=gpu:1"]
    with pytest.raises(UsageError, match=r"^\[hosts.login.slurm\] time: '1h'"):
        resolve_request({"time": "1h"}, {}, table="[hosts.login.slurm]")
    with pytest.raises(UsageError, match="unknown key 'partitio'"):
        resolve_request({"partitio": "x"}, {}, table="[hosts.login.slurm]")


def test_sbatch_args_split_like_a_shell() -> None:
    assert split_args(["--nodelist=node3 --exclusive", "--comment='a b'"]) == [
        "--nodelist=node3", "--exclusive", "--comment=a b"]


def test_inventory_slurm_table_is_validated_with_its_line(tmp_path: Path) -> None:
    text = '[hosts.login]\nhostname = "x"\n\n[hosts.login.slurm]\npartition = "gpu"\ncpus = "4"\n'
    with pytest.raises(UsageError, match=r"inv.toml:6: 'cpus' in \[hosts.login.slurm\] must be an integer"):
        parse_inventory(text, Path("inv.toml"))
    ok = parse_inventory(text.replace('"4"', "4"), Path("inv.toml"))
    assert dict(ok.hosts["login"].slurm or ()) == {"partition": "gpu", "cpus": 4}


# -- the job ----------------------------------------------------------------------------------------

SERVER = ServerSettings(ip="127.0.0.1", port=8888, root_dir="/home/u", public=False, token="s3cret-token")


def _script(request: Optional[SlurmRequest] = None) -> str:
    request = request or SlurmRequest(time="30")
    return job_script(Layout("/home/u/.labhop"), request, home="/home/u", root_dir="/home/u", port=8888,
                      scheme="http")


def test_the_job_script_has_labhops_directives_the_requests_and_no_secret() -> None:
    script = _script(SlurmRequest(partition="gpu", time="4:00:00", gpus="a100:1"))
    lines = script.splitlines()
    assert lines[0] == "#!/bin/sh"
    assert f"#SBATCH --job-name={JOB_NAME}" in lines
    assert "#SBATCH --output=/home/u/.labhop/slurm/job-%j.log" in lines
    assert {"#SBATCH --partition=gpu", "#SBATCH --time=4:00:00", "#SBATCH --gres=gpu:a100:1"} <= set(lines)
    # the venv is checked on the node before anything else: one clear line, exit 3
    assert "cannot run JupyterLab on $(hostname)" in script and "exit 3" in script
    assert "s3cret" not in script


def test_sbatch_argv_carries_only_the_extra_args() -> None:
    req = SlurmRequest(sbatch_args=("--exclusive",))
    assert sbatch_argv(req) == ["sbatch", "--parsable", "--exclusive"]
    assert sbatch_argv(req, test_only=True) == ["sbatch", "--parsable", "--test-only", "--exclusive"]


def test_the_config_takes_address_and_port_from_the_job_and_keeps_the_token() -> None:
    config = render_config(SERVER)
    assert stored_secrets(config).token == "s3cret-token"
    tail = config.split("# Slurm:")[1]
    assert "c.ServerApp.ip = os.environ['LABHOP_SLURM_IP']" in tail
    assert "c.NotebookApp.port = int(os.environ['LABHOP_SLURM_PORT'])" in tail
    compile(config, "jupyter_server_config.py", "exec")


def test_fingerprint_changes_with_script_argv_or_config() -> None:
    base = fingerprint(_script(), ["sbatch"], "c")
    assert base == fingerprint(_script(), ["sbatch"], "c")
    assert base != fingerprint(_script(SlurmRequest(time="31")), ["sbatch"], "c")
    assert base != fingerprint(_script(), ["sbatch", "-x"], "c")
    assert base != fingerprint(_script(), ["sbatch"], "d")


def test_fingerprint_changes_with_the_tls_certificate_only_when_there_is_one() -> None:
    base = fingerprint(_script(), ["sbatch"], "c")
    assert fingerprint(_script(), ["sbatch"], "c", tls="") == base  # token jobs keep their fingerprint
    assert fingerprint(_script(), ["sbatch"], "c", tls="AA:BB") != base
    assert fingerprint(_script(), ["sbatch"], "c", tls="AA:BB") != fingerprint(_script(), ["sbatch"], "c", tls="CC")


HASH = "$2b$12$abcdefghijklmnopqrstuu0123456789012345678901234567890"
PUBLIC = ServerSettings(ip="0.0.0.0", port=8888, root_dir="/home/u", public=True, hashed_password=HASH,
                        certfile="/home/u/.labhop/tls/cert.pem", keyfile="/home/u/.labhop/tls/key.pem")
PUBLIC_HTTP = ServerSettings(ip="0.0.0.0", port=8888, root_dir="/home/u", public=True, hashed_password=HASH)


@pytest.mark.parametrize("public, given_public, localhost_asked, stored, expected", [
    # asked this run: public, whatever was stored
    (True, True, False, None, Variant(public=True)),
    (True, True, False, SERVER, Variant(public=True)),
    # nothing stored, or a token config: the token variant
    (False, False, False, None, Variant(public=False)),
    (False, False, False, SERVER, Variant(public=False)),
    # a public job config stays public when this run does not name the variant, with its TLS mode
    (False, False, False, PUBLIC, Variant(public=True, kept=True, https=True)),
    (False, False, False, PUBLIC_HTTP, Variant(public=True, kept=True, https=False)),
    # ... unless the inventory says `public = false`, or --ip 127.0.0.1 asks for the token variant
    (False, True, False, PUBLIC, Variant(public=False)),
    (False, False, True, PUBLIC, Variant(public=False)),
])
def test_the_variant_what_serve_is_not_told_does_not_change(public: bool, given_public: bool, localhost_asked: bool,
                                                            stored: Optional[ServerSettings],
                                                            expected: Variant) -> None:
    config = render_config(stored) if stored else None
    assert choose_variant(public=public, given_public=given_public, localhost_asked=localhost_asked,
                          stored_config=config) == expected


def test_a_public_config_without_its_hash_is_not_kept() -> None:
    config = render_config(PUBLIC).replace(HASH, "")
    assert choose_variant(public=False, given_public=False, localhost_asked=False, stored_config=config) == \
        Variant(public=False)


def test_the_public_job_config_has_the_hash_tls_and_no_token_and_the_script_no_secret() -> None:
    config = render_config(PUBLIC)
    assert stored_secrets(config) == type(stored_secrets(config))(token=None, hashed_password=HASH)
    assert "c.ServerApp.certfile = '/home/u/.labhop/tls/cert.pem'" in config
    assert "c.PasswordIdentityProvider.password_required = True" in config
    assert "c.ServerApp.ip = os.environ['LABHOP_SLURM_IP']" in config.split("# Slurm:")[1]
    compile(config, "jupyter_server_config.py", "exec")
    script = job_script(Layout("/home/u/.labhop"), SlurmRequest(), home="/home/u", root_dir="/home/u", port=8888,
                        scheme="https")
    assert " https " in script and HASH not in script


@pytest.mark.parametrize("stdout, expected", [
    ("4711\n", ("4711", None)),
    ("4711;cluster2\n", ("4711", "cluster2")),
    ("site banner: be nice\n\n4711\n\n", ("4711", None)),
])
def test_parse_sbatch(stdout: str, expected: tuple) -> None:
    assert parse_sbatch(stdout) == expected


@pytest.mark.parametrize("stdout", ["", "Submitted batch job 4711\n", "sbatch: error\n"])
def test_parse_sbatch_refuses_what_is_no_job_id(stdout: str) -> None:
    with pytest.raises(LabhopError, match="sbatch printed no job id"):
        parse_sbatch(stdout)


def test_records_from_json_refuse_garbage() -> None:
    assert JobRecord.from_data({"id": "12", "fingerprint": "f", "submitted": 1, "log": "/l"}).id == "12"
    assert JobRecord.from_data({"id": "x"}) is None and JobRecord.from_data(None) is None
    assert Endpoint.from_data({"job": "12", "node": "n", "host": "10.0.0.2", "port": "8888"}).port == 8888
    assert Endpoint.from_data({"job": "12"}) is None
    assert SlurmLayout("/p").log("12") == "/p/slurm/job-12.log"


# -- squeue --------------------------------------------------------------------------------------------

ROW = "12|{state}|{reason}|{node}|{left}|2026-12-01T10:00:00|2026-12-01T10:00:05|{ends}|1:00:00"


def _row(state: str = "RUNNING", reason: str = "None", node: str = "node17", left: str = "3:12:40",
         ends: str = "2026-12-01T11:00:05") -> str:
    return ROW.format(state=state, reason=reason, node=node, left=left, ends=ends)


@pytest.mark.parametrize("rc, stdout, stderr, state, line", [
    (0, _row() + "\n", "", "RUNNING", "RUNNING on node17, 3:12:40 left"),
    (0, _row(left="UNLIMITED") + "\n", "", "RUNNING", "RUNNING on node17, no time limit"),
    (0, _row("PENDING", "Resources", "", "1:00:00") + "\n", "", "PENDING", "pending: Resources (waited 1m05s)"),
    (0, _row("PENDING", "Priority", "", "1:00:00") + "\n", "", "PENDING", "pending: Priority (waited 1m05s)"),
    (0, "CLUSTER: c2\n" + _row("TIMEOUT") + "\n", "", "TIMEOUT", "ended: TIMEOUT at 2026-12-01T11:00:05"),
    (0, _row("CANCELLED") + "\n", "", "CANCELLED", "ended: CANCELLED at 2026-12-01T11:00:05"),
    (1, "", "slurm_load_jobs error: Invalid job id specified\n", GONE, "ended (Slurm no longer lists it)"),
    (0, "", "", GONE, "ended (Slurm no longer lists it)"),
    (1, "", "slurm_load_jobs error: Socket timed out on send/recv operation\n", UNKNOWN,
     "state unknown: the Slurm controller did not answer (slurm_load_jobs error: Socket timed out"),
    (1, "", "squeue: error: Unable to contact slurm controller (connect failure)\n", UNKNOWN, "state unknown"),
    (124, "", "squeue: Socket timed out (no answer within 60s)", UNKNOWN, "state unknown"),
])
def test_squeue_answers(rc: int, stdout: str, stderr: str, state: str, line: str) -> None:
    job = parse_squeue("12", rc, stdout, stderr)
    assert job.state == state
    assert describe(job, now="2026-12-01T10:01:05").startswith(line)
    assert job.known == (state != UNKNOWN)
    assert job.ended == (state in ("TIMEOUT", "CANCELLED", GONE))


def test_squeue_lines_of_other_jobs_are_not_this_one() -> None:
    assert parse_squeue("12", 0, _row().replace("12|", "123|", 1), "").state == GONE


def test_the_format_asks_every_field_the_parser_reads() -> None:
    assert FORMAT.count("|") == ROW.count("|")


@pytest.mark.parametrize("value, seconds", [
    ("3:12:40", 11560), ("1-02:00:00", 93600), ("12:05", 725), ("0:30", 30), ("UNLIMITED", None),
    ("NOT_SET", None), ("INVALID", None), ("", None),
])
def test_time_left(value: str, seconds: int) -> None:
    assert parse_time_left(value) == seconds


def test_low_walltime_warns_under_15_minutes() -> None:
    assert parse_squeue("12", 0, _row(left="14:59"), "").low_walltime()
    assert not parse_squeue("12", 0, _row(left="15:00"), "").low_walltime()
    assert not parse_squeue("12", 0, _row(left="UNLIMITED"), "").low_walltime()


def test_elapsed_is_none_without_a_time() -> None:
    assert elapsed("N/A", "2026-12-01T10:00:00") is None
    assert elapsed("2026-12-01T10:00:00", "2026-12-01T12:00:01") == 7201


# -- the commands labhop runs about its job (multi-cluster: ``ID;CLUSTER``) ------------------------

@pytest.mark.parametrize("sbatch_out, scancel", [
    ("4711\n", ["scancel", "4711"]),
    ("4711;gpu-cluster\n", ["scancel", "--clusters", "gpu-cluster", "4711"]),
])
def test_the_cluster_sbatch_names_goes_on_to_scancel(sbatch_out: str, scancel: list) -> None:
    job_id, cluster = parse_sbatch(sbatch_out)
    record = JobRecord(id=job_id, cluster=cluster, fingerprint="f", submitted=0, log="/l")
    assert scancel_argv(record) == scancel
    assert JobRecord.from_data(json.loads(record.to_json())) == record  # the record keeps the cluster


FAKE_SQUEUE = """#!{python}
import json, os, sys
with open({calls!r}, "a") as f:
    f.write(json.dumps({{"argv": sys.argv[1:], "env": {{k: v for k, v in os.environ.items()
                                                    if k.startswith(("SQUEUE_", "SLURM_"))}}}}) + "\\n")
if "--clusters" in sys.argv:
    print("CLUSTER: " + sys.argv[sys.argv.index("--clusters") + 1])
print("{row}")
"""


@pytest.mark.parametrize("recorded, asked, squeue_job", [
    (JobRecord(id="12", cluster=None, fingerprint="f", submitted=0, log="/l"), None, ["--jobs", "12"]),
    (JobRecord(id="12", cluster="c2", fingerprint="f", submitted=0, log="/l"), None,
     ["--jobs", "12", "--clusters", "c2"]),
    (None, JobRecord(id="12", cluster="c3", fingerprint="f", submitted=0, log="/l"),
     ["--jobs", "12", "--clusters", "c3"]),
])
def test_squeue_is_asked_exactly_so_whatever_the_users_environment(tmp_path: Path, recorded: Optional[JobRecord],
                                                                   asked: Optional[JobRecord],
                                                                   squeue_job: list) -> None:
    """slurm_query.py, run for real with a squeue that records how it was called."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls.jsonl"
    bin_dir.mkdir()
    fake = bin_dir / "squeue"
    fake.write_text(FAKE_SQUEUE.format(python=sys.executable, calls=str(calls), row=_row()))
    fake.chmod(0o755)
    prefix = tmp_path / "prefix"
    paths = SlurmLayout(str(prefix))
    Path(paths.dir).mkdir(parents=True)
    if recorded:
        Path(paths.record).write_text(recorded.to_json())
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(tmp_path),
           # what a user's shell may set: none of it may change what labhop parses
           "SQUEUE_FORMAT": "%all", "SQUEUE_STATES": "RUNNING", "SQUEUE_SORT": "-t", "SLURM_CLUSTERS": "other",
           "SLURM_TIME_FORMAT": "relative"}
    done = subprocess.run([sys.executable, "-", *query_args(str(prefix), asked)], input=source("slurm_query.py"),
                          capture_output=True, text=True, env=env, timeout=30)
    assert done.returncode == 0, done.stderr
    call = json.loads(calls.read_text())
    assert call["argv"] == ["--noheader", "--states=all", *squeue_job[:2], "--format", FORMAT, *squeue_job[2:]]
    assert call["env"] == {"SLURM_TIME_FORMAT": "standard"}
    q = parse_answer(done.stdout, asked)
    assert q.state is not None and q.state.running and q.state.node == "node17"
    assert q.record == recorded


def test_the_answer_without_a_record_asks_nothing_and_garbage_is_one_line() -> None:
    q = parse_answer(json.dumps({"now": "2026-12-01T10:00:00", "sbatch": "/usr/bin/sbatch", "dir": False,
                                 "job": None, "endpoint": None, "config": None}))
    assert (q.record, q.state, q.serving, q.sbatch) == (None, None, None, "/usr/bin/sbatch")
    no_squeue = parse_answer({"job": {"id": "12", "fingerprint": "f"}, "sbatch": None})
    assert no_squeue.state is not None and no_squeue.state.state == UNKNOWN and no_squeue.sbatch is None
    with pytest.raises(LabhopError, match="^asking the login node about the Slurm job: unreadable answer"):
        parse_answer("Welcome to the cluster\n")


@pytest.mark.parametrize("endpoint_job, state, serving", [
    ("12", "RUNNING", True),
    ("11", "RUNNING", False),  # an older job's endpoint file
    ("12", "COMPLETING", False),
])
def test_the_endpoint_serves_only_for_the_recorded_running_job(endpoint_job: str, state: str, serving: bool) -> None:
    q = parse_answer({"job": {"id": "12", "fingerprint": "f"}, "squeue": [0, _row(state) + "\n", ""],
                      "endpoint": {"job": endpoint_job, "node": "node17", "host": "10.0.0.17", "port": 8888}})
    assert (q.serving is not None) == serving
