"""`carla-launch down`: every agent of the profile down and the local session closed, and with
it the SSH tunnels (their loops get HUP and end their ssh; nothing may listen on their local
ports afterwards); with `--server`, every server of the profile too.

Only the compose projects that `up` and `attach` recorded for this profile are taken down, so
another profile's agents, on the same compose folder or not, keep running. An agent whose
`docker compose down` failed stays recorded, so that a second `down` tries it again.
"""

from __future__ import annotations

from typing import Any

from carla_launcher import parallel, records
from carla_launcher import session as sess
from carla_launcher.errors import LauncherError
from carla_launcher.profile import Profile
from carla_launcher.stack import agents, tunnels
from carla_launcher.stack.variants import Say


def down(profile: Profile, stop_server: bool, say: Say) -> list[str]:
    """What was taken down, one line each (empty: nothing was running)."""
    done = []
    found = records.session(profile)
    recorded = list(found.pairs) if found is not None else []
    left = []
    for agent, err in zip(recorded, agents.down_all(recorded), strict=True):
        if err is not None:
            say(f"warning: docker compose down of {agent.project or agent.variant.name}: {err}")
            left.append(agent)
            continue
        own = f" (project {agent.project})" if agent.project else ""
        done.append(f"agent containers of {agent.variant.name} removed{own}")
    if sess.kill_session(sess.tmux_server(), sess.session_name(profile.key)):
        done.append("local session closed")
    opened = [a.tunnel for a in recorded if a.tunnel is not None]
    held = tunnels.close_leftovers(opened)
    for line in held:
        say(f"warning: {line}")
    if opened and not held:
        ports = ", ".join(f"{t.bind}:{t.local_port}-{t.local_port + 2}" for t in opened)
        some = "SSH tunnels" if len(opened) > 1 else "SSH tunnel"
        done.append(f"{some} closed: nothing listens on {ports}")
    if stop_server:
        done += _stop_servers(profile, say)
    if found is not None and left:
        records.remember_session(profile, records.SessionRecord.of(found.session, left))
    else:
        records.forget_session(profile)
    return done


def _stop_servers(profile: Profile, say: Say) -> list[str]:
    """Every server of the profile on every host, each host in one round trip, all at once."""
    from carla_launcher.server import control

    def stop(host: str) -> list[dict[str, Any]] | str:
        try:
            return control.stop_servers(profile, host, by="carla-launch down --server")
        except LauncherError as e:
            return str(e).removeprefix(f"{host}: ")

    hosts = list(profile.remote.hosts)
    done = []
    for host, got in zip(hosts, parallel.each(hosts, stop), strict=True):
        if isinstance(got, str):
            say(f"warning: {host}: {got}; its servers may still run")
            continue
        for r in got:
            which = f"server {r.get('slot')}" if len(got) > 1 else "server"
            if r.get("error"):
                say(f"warning: {host} {which}: {r['error']}")
            elif r.get("done"):
                done.append(f"{which} on {host} stopped")
            if r.get("warning"):
                say(f"warning: {r['warning']}")
    return done
