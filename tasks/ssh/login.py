"""``fab login`` / ``fab logout`` and the login line of ``status``: the hops' OpenSSH masters.

A login is one master per hop (tasks/ssh/master.py). ``login`` opens the ones that are not
live, on the terminal or ``SSH_ASKPASS`` (OpenSSH asks: second factors, new host keys), one
hop at a time; ``logout`` closes labhop's own (the user's own masters from ssh_config stay
theirs). Everything else labhop runs rides these masters until they have been idle for
``login_persist`` (inventory.toml, default 10h).
"""
from __future__ import annotations

from typing import Any, Callable, Optional

from ..errors import LabhopError
from .connect import Target
from .master import Masters, can_prompt
from ..invocation import PROGRAM


def _masters(target: Target) -> Masters:
    if target.is_local:
        raise LabhopError("login/logout are for SSH hosts: give one with -H")
    if target.masters is None:
        raise LabhopError("no OpenSSH connection sharing here (see the line above): every run logs in anew")
    return target.masters


def login(target: Target, say: Callable[[str], None]) -> dict[str, Any]:
    masters = _masters(target)
    found = masters.ensure(interactive=can_prompt())
    for master in found:
        how = "logged in now" if master.hop.name in masters.started else (
            "already logged in" if master.ours else "already logged in (your own ControlMaster)")
        say(f"login: {master.hop.name}: {how}")
    say(f"login: commands, uploads and tunnels to {target.name} share these connections until idle "
        f"for {masters.persist}; `{PROGRAM} -H {target.name} logout` ends them")
    return {"hops": [m.hop.name for m in found], "started": list(masters.started), "persist": masters.persist}


def logout(target: Target, say: Callable[[str], None]) -> dict[str, Any]:
    """Close the host's tunnels first (they live in its master; a supervisor would log in again)."""
    from ..tunnel.records import RMATE, TUNNEL, close_records, is_alive, read_records

    masters = _masters(target)
    if any(is_alive(r) for r in read_records(target.name)):
        close_records(target.name, (TUNNEL, RMATE), say)
    closed = masters.exit_all()
    say(f"logout: closed the login to {', '.join(reversed(closed))}" if closed else "logout: no login was open")
    return {"closed": list(reversed(closed))}


def login_line(target: Target) -> tuple[Optional[str], Optional[dict[str, Any]]]:
    """For ``status``: which hops have a live login (none for local runs or paramiko)."""
    if target.is_local or target.masters is None:
        return None, None
    live = target.masters.live()
    names = [m.hop.name for m in live if m is not None]
    missing = [hop.name for hop, m in zip(target.masters.chain.hops, live) if m is None]
    one = target.masters.one_session  # MaxSessions 1 (tasks/ssh/runner.py): said, since such runs may log in again
    extra = "; overlapping commands get a connection of their own (the target allows one session per connection)" \
        if one else ""
    if not missing:
        return (f"login: live to {', '.join(names)} (shared until idle for {target.masters.persist}){extra}",
                {"live": names, "persist": target.masters.persist, "one_session": one})
    return (f"login: none live to {', '.join(missing)}: the next run logs in (`{PROGRAM} -H {target.name} login`)"
            f"{extra}", {"live": names, "missing": missing, "one_session": one})
