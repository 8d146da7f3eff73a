"""The "Install OS packages" step: apt-get on the box, bounded in time. Pure: shell text out.

A box without internet (an air-gapped cluster, a lab behind a proxy) must not hang a deploy in
`apt-get update`: apt's own network time-outs are short, `timeout` bounds the whole, and while
it runs the script prints progress lines (phase `apt`, seconds so far of the time-out). apt's
output goes to a log on the box; a failure is ONE line that names the packages and the two
ways on. Only missing packages get here: a box that has them never runs apt (`plan.py`).
"""

from __future__ import annotations

from carla_launcher.box.shell import q
from carla_launcher.deploy.boxlib import EVERY, FUNCTIONS

TOTAL_TIMEOUT = 600  # s: update and install together (a few hundred MB of .debs, slowly)
NET_TIMEOUT = 20  # s: apt's per-connection time-out (a dead mirror fails in seconds)

#: apt's options: short network time-outs, one retry, wait for another apt's lock, no pty.
OPTIONS = (
    f"-o Acquire::http::Timeout={NET_TIMEOUT} -o Acquire::https::Timeout={NET_TIMEOUT} "
    f"-o Acquire::ftp::Timeout={NET_TIMEOUT} -o Acquire::Retries=1 "
    "-o DPkg::Lock::Timeout=120 -o Dpkg::Use-Pty=0"
)

#: What apt says when it cannot reach an archive (update keeps going and exits 0).
_OFFLINE = (
    "Temporary failure resolving|Could not resolve|Could not connect|Failed to fetch|"
    "Network is unreachable|Connection timed out|Unable to connect"
)


def failure_hint(packages: str) -> str:
    """The way on after a failed install, for the one error line."""
    return (
        f"set server.os_packages: [] in the profile and install {packages} on the box by "
        "hand, or give the box a proxy or a package mirror it can reach"
    )


def apt_script(missing: list[str], sudo: bool, total: int = TOTAL_TIMEOUT) -> str:
    """Body (after the prologue) that installs `missing` with apt-get, within `total` s."""
    names = " ".join(missing)
    words = " ".join(q(p) for p in missing)
    run_as = "sudo -n " if sudo else ""
    return (
        FUNCTIONS
        + f"""
PKGS={q(names)}
echo "installing OS packages: $PKGS (apt-get, up to {int(total)} s)"
log=$(mktemp) || die "cannot create a temporary file for apt-get's log"
start=$(date +%s)
every {EVERY} apt {int(total)} since "$start" &
monitor=$!
{run_as}env DEBIAN_FRONTEND=noninteractive timeout -k 10 {int(total)} sh -c '
  apt-get {OPTIONS} -q update
  apt-get {OPTIONS} -q -y --no-install-recommends install "$@"' sh {words} \\
  < /dev/null > "$log" 2>&1
rc=$?
stop_every $monitor
if [ $rc != 0 ]; then
  if [ $rc = 124 ] || [ $rc = 137 ]; then why="apt-get did not finish within {int(total)} s"
  else why=$(grep '^E:' "$log" | tail -n 1 | cut -c4-); fi
  if grep -qE '{_OFFLINE}' "$log"; then
    why="the box cannot reach its package archives${{why:+ ($why)}}"
  fi
  rm -f "$log"
  die "could not install the OS packages $PKGS: ${{why:-apt-get exit code $rc}}; \\
{failure_hint("them")}"
fi
rm -f "$log"
echo "installed OS packages: $PKGS ($(since "$start") s)"
"""
    )
