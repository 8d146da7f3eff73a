"""Getting the CARLA package onto the box: where it comes from, and the scripts that fetch,
check and unpack it. Pure: values in, shell text out.

Hosting of CARLA archives is fragile, so: http(s) downloads resume (`curl -C -`, a bounded
number of attempts, from zero when the server ignores Range; an HTTP error such as 404 is
final), a local file is uploaded instead, the sha256 is checked before anything is unpacked (a
bad archive is deleted), disk space is checked first, and the archive is unpacked into a
temporary folder next to the install root and renamed into place, so a failed run never leaves
half a tree (and the next run removes what a killed one left). Each deploy uploads into a file
of its own, moved into place under the lock once checked; the next run removes the uploads of
deploys that are gone. Archives live in the server user's download folder, closed to others
(0700, files 0600), and stay there once unpacked: it is the box's download cache, shared by
every install root of that user (another profile's root, another version), so an archive is
fetched once per box; `server uninstall` removes it with the last install that uses it. One
deploy per install root works at a time (the install lock), and one per archive fetches or
checks it (the archive lock, which unpacks share); a deploy that waited finds the work done.
A marker in the root records what was installed; the next run reads it and skips all of this
without re-hashing gigabytes. Each phase prints progress lines (`box/progress.py`).
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from carla_launcher.box.marker import marker_sha256, marker_url
from carla_launcher.box.shell import MARKER, q
from carla_launcher.deploy.boxlib import EVERY, FUNCTIONS
from carla_launcher.errors import InputError

TRIES = 5  # download attempts in one run (a rerun resumes where the last one stopped)


@dataclass(frozen=True)
class PackageSource:
    kind: str  # http | local | none (use what is at the root)
    url: str | None
    local_path: Path | None
    archive_name: str | None
    sha256: str | None

    @property
    def package_id(self) -> str:
        return self.sha256 or self.url or "preinstalled"


def package_source(url: str | None, sha256: str | None, base: Path) -> PackageSource:
    """Classify `server.package.url`: http(s) download, a local file to upload, or nothing.

    A `file://` URL is refused (InputError, exit code 2): it reads as a file on the box, yet
    it would be copied from this machine; a plain path says "upload this" without doubt.
    """
    if not url:
        return PackageSource("none", None, None, None, sha256)
    parsed = urlparse(url)
    if parsed.scheme in ("http", "https"):
        name = posixpath.basename(unquote(parsed.path)) or "carla-package.tar.xz"
        return PackageSource("http", url, None, _safe_name(name), sha256)
    if parsed.scheme == "file":
        raise InputError(None, None, FILE_URL_REFUSED, "server.package.url")
    path = Path(url).expanduser()
    if not path.is_absolute():
        path = base / path
    return PackageSource("local", url, path, _safe_name(path.name), sha256)


FILE_URL_REFUSED = (
    "file:// URLs are not accepted: give the path of an archive on this machine to upload "
    "it (e.g. /data/CARLA_0.9.15.tar.gz), or an http(s):// URL the box downloads from"
)


def _safe_name(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "._-+" else "_" for c in name).lstrip(".")
    return cleaned or "carla-package.tar.xz"


def is_installed(
    source: PackageSource, marker: dict[str, str] | None, root_has_carla: bool
) -> bool:
    """Does the marker at the root say this very package is installed?"""
    if source.kind == "none":
        return root_has_carla
    if not marker or not root_has_carla:
        return False
    if source.sha256:
        return marker_sha256(marker) == source.sha256
    return marker_url(marker) == source.url


def cache_origin(source: PackageSource) -> str:
    """Where the cached archive came from: its URL, or the absolute path of the local file.
    Without a sha256 in the profile, the download cache trusts an archive of the same name
    only when it came from the same place (`verified_here`: the `from=` line of NAME.sha256)."""
    if source.kind == "local" and source.local_path is not None:
        return str(source.local_path)
    return source.url or ""


def _archive_vars(source: PackageSource) -> str:
    return (
        f"A={q(source.archive_name or '')}\n"
        f"URL={q(source.url or '')}\n"
        f"SHA={q(source.sha256 or '')}\n"
        f"ORIGIN={q(cache_origin(source))}\n"
    )


def download_script(source: PackageSource, tries: int = TRIES) -> str:
    """Body (after the prologue) of the step that fetches and verifies an http(s) archive.

    Under the install lock, then the archive's lock (shared while it looks, exclusive to fetch):
    a deploy that waited for another, of this root or another root of the box, finds the
    archive fetched (or installed) and stops. curl's own exit code and message end up in the
    error line.
    """
    return (
        FUNCTIONS
        + "\n"
        + _archive_vars(source)
        + f"""TRIES={int(tries)}
lock_install
if installed_here; then echo "$A is installed at $ROOT already (by another deploy)"; exit 0; fi
private_downloads
if take_archive; then echo "$A is in the download cache, downloaded already by another deploy"
  exit 0; fi
rm -f "$DLDIR/$A" "$DLDIR/$A.sha256"
total=$(as_server curl -sSIL --max-time 30 "$URL" 2>/dev/null | tr -d '\\r' |
  awk 'tolower($1) == "content-length:" {{ v = $2 }} END {{ print v + 0 }}')
have=$(size_of "$DLDIR/$A.part")
if [ "$total" -gt 0 ] && [ "$have" -gt "$total" ]; then rm -f "$DLDIR/$A.part"; have=0; fi
if [ "$have" -gt 0 ]; then
  echo "resuming the download of $A after $(human "$have") of $(human "$total")"
else
  echo "downloading $A ($(human "$total")) from $URL"
fi
check_disk $((total - have)) "$total"
every {EVERY} download "$total" size_of "$DLDIR/$A.part" &
monitor=$!
ok=no final=no attempt=1 err=
while :; do
  have=$(size_of "$DLDIR/$A.part")
  if [ "$total" -gt 0 ] && [ "$have" -eq "$total" ]; then ok=yes; break; fi
  msg=$(as_server curl -fL -sS --connect-timeout 20 --speed-limit 1 --speed-time 120 \\
    -C - -o "$DLDIR/$A.part" "$URL" 2>&1)
  rc=$?
  if [ $rc = 0 ]; then ok=yes; break; fi
  err="curl exit code $rc: $(printf '%s\\n' "$msg" | sed -n '$s/^curl: ([0-9]*) //p')"
  case $rc:$msg in
    33:*|22:*"error: 416"*)  # the server ignores or refuses our Range: start over from zero
      rm -f "$DLDIR/$A.part"
      echo "the server cannot resume this download ($err); starting over from zero" ;;
    22:*) final=yes ;;  # an HTTP error (404, 403, ...): trying again would not help
  esac
  [ $final = no ] && [ $attempt -lt $TRIES ] || break
  attempt=$((attempt + 1))
  echo "download interrupted ($err); resuming (attempt $attempt of $TRIES)"
  sleep $((attempt - 1))
done
stop_every $monitor
if [ $ok = no ] && [ $final = yes ]; then
  die "could not download $URL ($err); check server.package.url"
fi
[ $ok = yes ] || die "could not download $URL after $TRIES attempts ($err); rerun to resume"
total=$(size_of "$DLDIR/$A.part")
progress download "$total" "$total"
echo "downloaded $A ($(human "$total"))"
verify_archive
"""
    )


def upload_name(archive: str, owner: str) -> str:
    """The file one deploy uploads `archive` into: a name of its own, as two deploys of one
    archive at once upload at the same time (the install lock is not held during the transfer).
    `owner` is `box.facts`' upload owner (PID.START) or `t` and a token of the deploy; the next
    run removes the file when that owner is gone (`dead_uploads`)."""
    if not owner or not all(c.isalnum() or c == "." for c in owner):
        raise ValueError(f"not an upload owner: {owner!r}")
    return f"{archive}.upload-{owner}.part"


def upload_prepare_script(source: PackageSource, size: int, name: str) -> str:
    """Before uploading a local archive into `name`: room for it, what gone uploads left
    removed, and an empty file, 0600 in a 0700 folder, for the upload to write into (an upload
    keeps the mode of the file it replaces)."""
    return (
        FUNCTIONS
        + "\n"
        + _archive_vars(source)
        + f"""UP="$DLDIR/"{q(name)}
lock_install
private_downloads
clean_uploads
check_disk {int(size)} {int(size)}
: > "$UP" || die "cannot write $UP"
echo "uploading $A ($(human {int(size)}))"
"""
    )


def upload_finish_script(source: PackageSource, name: str) -> str:
    """After the upload (as the login user): hand the file to the server user, verify it, and
    it becomes the archive to unpack (under the archive's lock: another root's deploy may be
    unpacking the cached one); a deploy that waited for another finds that work done and
    removes its own upload."""
    return (
        FUNCTIONS
        + "\n"
        + _archive_vars(source)
        + f"""UP="$DLDIR/"{q(name)}
# open while we wait for the lock: a deploy that holds it sees this upload in use
[ -r "$UP" ] || die "the upload $UP is gone (removed by another deploy?); rerun carla-launch deploy"
exec 8< "$UP"
lock_install
umask 077
if installed_here; then
  rm -f "$UP"; echo "$A is installed at $ROOT already (by another deploy)"; exit 0
fi
if take_archive; then
  rm -f "$UP"; echo "$A is in the download cache, uploaded already by another deploy"; exit 0
fi
if [ "$(id -u)" = 0 ] && [ "$SU" != root ]; then
  chown "$SU" "$UP" || die "cannot hand $UP to $SU"
fi
verify_archive "$UP"
"""
    )


def cleanup_script() -> str:
    """Remove what an interrupted unpack, upgrade or upload left."""
    return FUNCTIONS + "lock_install\nclean_leftovers\nclean_uploads\n"


def unpack_script(source: PackageSource) -> str:
    """Unpack the verified archive into a temporary folder, then rename it into place; the
    archive stays in the download cache for the box's other install roots.

    Under the install lock and the archive's lock, shared (deploys of other roots unpack the
    same archive at once; none replaces it meanwhile); what a killed run left is removed first,
    and a deploy that waited for another finds the package installed and stops. The disk check
    counts the unpacked tree only: the archive is on the disk already.
    """
    return (
        FUNCTIONS
        + "\n"
        + _archive_vars(source)
        + f"""PARENT=$(dirname "$ROOT")
lock_install
clean_leftovers
if installed_here; then echo "$A is installed at $ROOT already (by another deploy)"; exit 0; fi
if [ -e "$ROOT" ] && [ ! -f "$ROOT/{MARKER}" ]; then
  die "$ROOT exists but was not installed by carla-launch; move it away, or remove \\
server.package.url to use it as it is"
fi
lock_archive -s
[ -f "$DLDIR/$A" ] && [ -f "$DLDIR/$A.sha256" ] ||
  die "the checked archive $A is no longer in $DLDIR; rerun carla-launch deploy"
verified_here || die "the archive $A in the download cache $DLDIR is another package (from \\
$(sed -n 's/^from=//p' "$DLDIR/$A.sha256")); remove it (rm $DLDIR/$A $DLDIR/$A.sha256), or \\
set server.package.sha256, then rerun carla-launch deploy"
# the server user owns the tree; a parent it cannot write (e.g. /opt) is handled as root
sr() {{ as_server "$@" 2>/dev/null || {{ [ "$(id -u)" = 0 ] && "$@"; }}; }}
sr mkdir -p "$PARENT" || die "cannot create $PARENT"
tmp=$(sr mktemp -d "$PARENT/.carla-launch-unpack.$(basename "$ROOT").XXXXXX") ||
  die "cannot write in $PARENT"
[ "$(id -u)" = 0 ] && chown "$SU" "$tmp"
old= errs="$DLDIR/.unpack.$$"
cleanup() {{ [ -n "$tmp" ] && rm -rf "$tmp"; [ -n "$old" ] && rm -rf "$old"; rm -f "$errs"; }}
trap cleanup EXIT
trap 'exit 1' HUP INT TERM PIPE
size=$(size_of "$DLDIR/$A")
check_disk 0 "$size"
echo "unpacking $A ($(human "$size")) into $ROOT"
case $A in
  *.zip) as_server unzip -q "$DLDIR/$A" -d "$tmp" < /dev/null > /dev/null 2> "$errs" & ;;
  *.tar.xz|*.txz) as_server tar -xJf - -C "$tmp" < "$DLDIR/$A" 2> "$errs" & ;;
  *.tar.gz|*.tgz) as_server tar -xzf - -C "$tmp" < "$DLDIR/$A" 2> "$errs" & ;;
  *) as_server tar -xf - -C "$tmp" < "$DLDIR/$A" 2> "$errs" & ;;
esac
worker=$!
every {EVERY} unpack "$size" read_pos "$(readlink -f "$DLDIR/$A")" "$worker" &
monitor=$!
wait $worker; rc=$?
stop_every $monitor
[ $rc = 0 ] || die "could not unpack $A ($(tail -n 1 "$errs" 2>/dev/null)): a damaged \\
archive or a full disk; nothing was installed"
progress unpack "$size" "$size"
if [ -f "$tmp/CarlaUE4.sh" ]; then src=$tmp
else
  src=$(find "$tmp" -mindepth 2 -maxdepth 2 -name CarlaUE4.sh -print | head -n 1)
  src=${{src%/CarlaUE4.sh}}
fi
[ -n "$src" ] || die "$A holds no CarlaUE4.sh (looked at its top two folder levels)"
sum=$(head -n 1 "$DLDIR/$A.sha256")
printf 'sha256=%s\\nurl=%s\\narchive=%s\\n' "$sum" "$URL" "$A" |
  as_server sh -c 'cat > "$1"' sh "$src/{MARKER}"
[ "$src" = "$tmp" ] && tmp=
if [ -e "$ROOT" ]; then old="$ROOT.old.$$"; sr mv "$ROOT" "$old"; fi
sr mv "$src" "$ROOT" || die "could not move the unpacked tree to $ROOT"
echo "installed $A at $ROOT; the archive is kept in the download cache $DLDIR for other \\
installs on this box"
"""
    )
