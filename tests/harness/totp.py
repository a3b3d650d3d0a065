"""A second factor for test sshds: key + TOTP code, checked by PAM, answered by an askpass script.

``start_sshd_2fa`` starts a harness sshd with ``AuthenticationMethods publickey,keyboard-interactive``
and ``UsePAM yes``; its PAM stack (a file bind-mounted over ``/etc/pam.d/sshd`` in sshd's own
mount namespace, so the machine's PAM config is untouched) runs ``pam_exec`` with a small
stdlib TOTP checker (RFC 6238: HMAC-SHA1, 30 s steps, 6 digits, one step of drift). PAM asks
for the code with its ``Password:`` prompt, which sshd sends as a keyboard-interactive prompt.

``SecondFactor.askpass_env()`` is what a client needs to answer without a terminal:
``SSH_ASKPASS`` (a script that computes the code, and logs every prompt it was shown) and
``SSH_ASKPASS_REQUIRE=force``. ``prompts()`` and ``accepted(server)`` (sshd's own log lines)
are what tests count.
"""
from __future__ import annotations

import base64
import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

from .sshd import SshServer, start_sshd

PAM_EXEC = "/lib/x86_64-linux-gnu/security/pam_exec.so"  # Debian: libpam-modules
PAM_TARGET = "/etc/pam.d/sshd"

# The checker and the askpass script share this code (each is written out as a script of its own).
_TOTP_SOURCE = '''
import base64, hashlib, hmac, struct, time

def totp(secret, at=None, step=30, digits=6):
    counter = int((time.time() if at is None else at) // step)
    digest = hmac.new(base64.b32decode(secret), struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    code = (struct.unpack(">I", digest[offset:offset + 4])[0] & 0x7FFFFFFF) % 10 ** digits
    return str(code).zfill(digits)
'''

_CHECKER = '''#!{python}
# pam_exec expose_authtok: the code arrives on stdin (NUL-terminated); exit 0 accepts it.
import sys, time
{totp}
secret = open(sys.argv[1]).read().strip()
given = sys.stdin.buffer.read().split(b"\\0")[0].decode(errors="replace").strip()
now = time.time()
ok = any(given == totp(secret, now + drift * 30) for drift in (-1, 0, 1))
with open(sys.argv[2], "a") as log:
    log.write(("accepted" if ok else "rejected") + " " + repr(given) + "\\n")
sys.exit(0 if ok else 1)
'''

_ASKPASS = '''#!{python}
# SSH_ASKPASS: logs each prompt; a code prompt gets the current TOTP, anything else "no".
import os, sys
{totp}
prompt = sys.argv[1] if len(sys.argv) > 1 else ""
with open(os.environ["LABHOP_TEST_ASKPASS_LOG"], "a") as log:
    log.write(prompt.replace("\\n", " ") + "\\n")
if "assword" in prompt or "code" in prompt.lower():
    print(totp(open(os.environ["LABHOP_TEST_TOTP_SECRET"]).read().strip()))
else:
    print("no")
'''


def totp(secret: str, at: float | None = None) -> str:
    namespace: dict[str, object] = {}
    exec(_TOTP_SOURCE, namespace)  # the same code the scripts run
    return namespace["totp"](secret, at)  # type: ignore[operator]


@dataclass
class SecondFactor:
    directory: Path
    secret_file: Path
    checker: Path
    askpass: Path
    askpass_log: Path
    checker_log: Path
    pam_file: Path

    def askpass_env(self) -> dict[str, str]:
        return {"SSH_ASKPASS": str(self.askpass), "SSH_ASKPASS_REQUIRE": "force",
                "LABHOP_TEST_ASKPASS_LOG": str(self.askpass_log), "LABHOP_TEST_TOTP_SECRET": str(self.secret_file),
                "DISPLAY": ""}

    def prompts(self) -> list[str]:
        try:
            return [line for line in self.askpass_log.read_text().splitlines() if line]
        except FileNotFoundError:
            return []

    def checks(self) -> list[str]:
        try:
            return self.checker_log.read_text().splitlines()
        except FileNotFoundError:
            return []


def make_second_factor(directory: Path) -> SecondFactor:
    directory.mkdir(parents=True, exist_ok=True)
    secret = base64.b32encode(secrets.token_bytes(20)).decode()
    secret_file = directory / "totp.secret"
    secret_file.write_text(secret + "\n")
    secret_file.chmod(0o600)
    checker = directory / "totp_check.py"
    checker.write_text(_CHECKER.format(python=sys.executable, totp=_TOTP_SOURCE))
    checker.chmod(0o755)
    askpass = directory / "askpass.py"
    askpass.write_text(_ASKPASS.format(python=sys.executable, totp=_TOTP_SOURCE))
    askpass.chmod(0o755)
    checker_log = directory / "checker.log"
    pam_file = directory / "pam-sshd"
    pam_file.write_text(
        f"auth     required pam_exec.so expose_authtok quiet {checker} {secret_file} {checker_log}\n"
        # pam_setcred: pam_exec ignores it, and a stack where every module ignores it fails the login
        "auth     required pam_permit.so\n"
        "account  required pam_permit.so\n"
        "session  required pam_permit.so\n"
        "password required pam_deny.so\n")
    return SecondFactor(directory, secret_file, checker, askpass, directory / "askpass.log", checker_log, pam_file)


def second_factor_possible() -> tuple[bool, str]:
    if os.geteuid() != 0:
        return False, "a PAM file over /etc/pam.d/sshd needs root (a private mount namespace)"
    if not Path(PAM_EXEC).exists():
        return False, f"{PAM_EXEC} is missing (apt-get install libpam-modules)"
    if not Path(PAM_TARGET).exists():
        return False, f"{PAM_TARGET} is missing (the bind mount needs it; openssh-server installs it)"
    return True, ""


def start_sshd_2fa(workdir: Path, name: str, factor: SecondFactor, *, sshd_options: dict[str, object] | None = None,
                   **kwargs: object) -> SshServer:
    """A harness sshd that wants the key and then a TOTP code (keyboard-interactive through PAM);
    ``sshd_options`` are added (``MaxSessions``, ...)."""
    return start_sshd(
        workdir, name,
        sshd_options={"UsePAM": "yes", "KbdInteractiveAuthentication": "yes",
                "AuthenticationMethods": "publickey,keyboard-interactive", "PermitRootLogin": "yes",
                **(sshd_options or {})},
        binds=[(factor.pam_file, PAM_TARGET)], ready_check=False, **kwargs)  # type: ignore[arg-type]


def accepted(server: SshServer, method: str = "keyboard-interactive/pam") -> int:
    """How many logins sshd accepted with ``method`` (its VERBOSE log: "Accepted <method> for ...")."""
    text = server.log_path.read_text(errors="replace")
    return sum(1 for line in text.splitlines() if f"Accepted {method} for " in line)


def partial(server: SshServer) -> int:
    """Key accepted, second factor still to come (a login that went on to keyboard-interactive)."""
    text = server.log_path.read_text(errors="replace")
    return sum(1 for line in text.splitlines() if "Partial publickey for" in line)


__all__ = ["SecondFactor", "make_second_factor", "start_sshd_2fa", "second_factor_possible", "accepted", "partial",
           "totp"]
