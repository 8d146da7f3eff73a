"""Getting the CARLA package onto the box: where it comes from, and the scripts that fetch,
check and unpack it. Pure: values in, shell text out.

Hosting of CARLA archives is fragile, so: http(s) downloads resume (`curl -C -`, retried),
a local file is uploaded instead, the sha256 is checked before anything is unpacked (a bad
archive is deleted), disk space is checked first, and the archive is unpacked into a temporary
folder next to the install root and renamed into place, so a failed run never leaves half a
tree. A marker in the root records what was installed; the next run reads it and skips all of
this without re-hashing gigabytes.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from carla_launcher.box.marker import marker_sha256, marker_url
from carla_launcher.box.shell import MARKER, q

UNPACK_FACTOR = 3  # room for the unpacked tree, as a multiple of the archive (xz packs ~2-3x)


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
    """Classify `server.package.url`: http(s) download, a local file to upload, or nothing."""
    if not url:
        return PackageSource("none", None, None, None, sha256)
    parsed = urlparse(url)
    if parsed.scheme in ("http", "https"):
        name = posixpath.basename(unquote(parsed.path)) or "carla-package.tar.xz"
        return PackageSource("http", url, None, _safe_name(name), sha256)
    path = Path(unquote(parsed.path)) if parsed.scheme == "file" else Path(url).expanduser()
    if not path.is_absolute():
        path = base / path
    return PackageSource("local", url, path, _safe_name(path.name), sha256)


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


HUMAN = """
human() { awk -v b="${1:-0}" 'BEGIN { split("B KB MB GB TB", u); i = 1;
  while (b >= 1024 && i < 5) { b /= 1024; i++ } printf "%.1f %s", b, u[i] }'; }
free_kb() { d=$1; while [ ! -d "$d" ]; do d=$(dirname "$d"); done
  df -Pk "$d" | awk 'NR == 2 { print $4 }'; }
same_fs() { a=$1; while [ ! -d "$a" ]; do a=$(dirname "$a"); done
  b=$2; while [ ! -d "$b" ]; do b=$(dirname "$b"); done
  [ "$(stat -c %d "$a")" = "$(stat -c %d "$b")" ]; }
check_disk() {  # $1 bytes still to download, $2 archive size
  _dl_kb=$(( ${1:-0} / 1024 + 1 )); _un_kb=$(( ${2:-0} / 1024 * UNPACK_FACTOR + 1 ))
  _parent=$(dirname "$ROOT")
  if same_fs "$DLDIR" "$_parent"; then
    _need=$((_dl_kb + _un_kb)); _free=$(free_kb "$DLDIR")
    [ "$_free" -ge "$_need" ] || die "not enough disk space for the CARLA package at $_parent: \\
need $(human $((_need * 1024))), have $(human $((_free * 1024)))"
  else
    _free=$(free_kb "$DLDIR")
    [ "$_free" -ge "$_dl_kb" ] || die "not enough disk space for the download at $DLDIR: \\
need $(human $((_dl_kb * 1024))), have $(human $((_free * 1024)))"
    _free=$(free_kb "$_parent")
    [ "$_free" -ge "$_un_kb" ] || die "not enough disk space to unpack at $_parent: \\
need $(human $((_un_kb * 1024))), have $(human $((_free * 1024)))"
  fi
}
""".replace("UNPACK_FACTOR", str(UNPACK_FACTOR))


def _verify(source: PackageSource) -> str:
    return """
echo "checking the sha256 of $A"
sum=$(sha256sum "$DLDIR/$A.part" | cut -c1-64)
if [ -n "$SHA" ] && [ "$sum" != "$SHA" ]; then
  rm -f "$DLDIR/$A.part"
  die "checksum mismatch for $A: expected $SHA, got $sum; nothing was unpacked and the \\
download was deleted (check server.package.sha256 and the URL)"
fi
[ -n "$SHA" ] || echo "warning: no server.package.sha256 in the profile; this archive has sha256 $sum"
as_server mv -f "$DLDIR/$A.part" "$DLDIR/$A"
printf '%s\\n' "$sum" | as_server sh -c 'cat > "$1"' sh "$DLDIR/$A.sha256"
"""  # noqa: E501  shell text run on the box: one message per line


def download_script(source: PackageSource, tries: int = 6, report_every: int = 5) -> str:
    """Body (after the prologue) of the step that fetches and verifies an http(s) archive."""
    return (
        HUMAN
        + f"""
A={q(source.archive_name)}
URL={q(source.url)}
SHA={q(source.sha256 or "")}
as_server mkdir -p "$DLDIR"
rm -f "$DLDIR/$A" "$DLDIR/$A.sha256"
total=$(as_server curl -sSIL --max-time 30 "$URL" 2>/dev/null | tr -d '\\r' |
  awk 'tolower($1) == "content-length:" {{ v = $2 }} END {{ print v + 0 }}')
have=$(stat -c %s "$DLDIR/$A.part" 2>/dev/null || echo 0)
if [ "$have" -gt 0 ]; then
  echo "resuming the download of $A after $(human "$have") of $(human "$total")"
else
  echo "downloading $A ($(human "$total")) from $URL"
fi
check_disk $((total - have)) "$total"
# progress every few seconds; the sleep must not hold our stdout open after we kill the loop
( while sleep {report_every} > /dev/null 2>&1; do
    s=$(stat -c %s "$DLDIR/$A.part" 2>/dev/null || echo 0)
    echo "downloaded $(human "$s") of $(human "$total")"
  done ) &
monitor=$!
ok=no
attempt=1
while [ $attempt -le {tries} ]; do
  have=$(stat -c %s "$DLDIR/$A.part" 2>/dev/null || echo 0)
  if [ "$total" -gt 0 ] && [ "$have" -eq "$total" ]; then ok=yes; break; fi
  if as_server curl -fL -sS --connect-timeout 20 -C - -o "$DLDIR/$A.part" "$URL"; then
    ok=yes; break
  fi
  rc=$?
  if [ $rc -eq 22 ]; then err="the server refused: $(as_server curl -sS -o /dev/null \\
    -w '%{{http_code}}' "$URL" 2>/dev/null)"; break; fi
  err="curl exit code $rc"
  echo "download interrupted ($err); resuming (attempt $((attempt + 1)) of {tries})"
  sleep $attempt
  attempt=$((attempt + 1))
done
kill $monitor 2>/dev/null
[ $ok = yes ] || die "could not download $URL (${{err:-failed}}); rerun to resume"
"""
        + _verify(source)
    )


def upload_prepare_script(source: PackageSource, size: int) -> str:
    """Before uploading a local archive: room for it, and an empty partial file to write."""
    return (
        HUMAN
        + f"""
A={q(source.archive_name)}
as_server mkdir -p "$DLDIR"
rm -f "$DLDIR/$A" "$DLDIR/$A.sha256" "$DLDIR/$A.part"
check_disk {int(size)} {int(size)}
echo "uploading $A ($(human {int(size)}))"
"""
    )


def upload_finish_script(source: PackageSource) -> str:
    """After the upload (as the login user): hand the file to the server user, verify it."""
    return f"""
A={q(source.archive_name)}
SHA={q(source.sha256 or "")}
if [ "$(id -u)" = 0 ] && [ "$SU" != root ]; then chown "$SU" "$DLDIR/$A.part" || exit 1; fi
""" + _verify(source)


def unpack_script(source: PackageSource) -> str:
    """Unpack the verified archive into a temporary folder, then rename it into place."""
    return f"""
A={q(source.archive_name)}
URL={q(source.url or "")}
PARENT=$(dirname "$ROOT")
if [ -e "$ROOT" ] && [ ! -f "$ROOT/{MARKER}" ]; then
  die "$ROOT exists but was not installed by carla-launch; move it away, or remove \\
server.package.url to use it as it is"
fi
# the server user owns the tree; a parent it cannot write (e.g. /opt) is handled as root
sr() {{ as_server "$@" 2>/dev/null || {{ [ "$(id -u)" = 0 ] && "$@"; }}; }}
sr mkdir -p "$PARENT" || die "cannot create $PARENT"
tmp=$(sr mktemp -d "$PARENT/.carla-launch-unpack.XXXXXX") || die "cannot write in $PARENT"
[ "$(id -u)" = 0 ] && chown "$SU" "$tmp"
old=
cleanup() {{ [ -n "$tmp" ] && rm -rf "$tmp"; [ -n "$old" ] && rm -rf "$old"; return 0; }}
trap cleanup EXIT
echo "unpacking $A into $ROOT"
( n=0; while sleep 30 > /dev/null 2>&1; do n=$((n + 30)); echo "still unpacking ($n s)"; done ) &
monitor=$!
case $A in
  *.zip) as_server unzip -q "$DLDIR/$A" -d "$tmp" ;;
  *.tar.xz|*.txz) as_server tar -xJf "$DLDIR/$A" -C "$tmp" ;;
  *.tar.gz|*.tgz) as_server tar -xzf "$DLDIR/$A" -C "$tmp" ;;
  *) as_server tar -xf "$DLDIR/$A" -C "$tmp" ;;
esac || {{ kill $monitor 2>/dev/null
  die "could not unpack $A (a damaged archive or a full disk); nothing was installed"; }}
kill $monitor 2>/dev/null
if [ -f "$tmp/CarlaUE4.sh" ]; then src=$tmp
else
  src=$(find "$tmp" -mindepth 2 -maxdepth 2 -name CarlaUE4.sh -print | head -n 1)
  src=${{src%/CarlaUE4.sh}}
fi
[ -n "$src" ] || die "$A holds no CarlaUE4.sh (looked at its top two folder levels)"
sum=$(cat "$DLDIR/$A.sha256")
printf 'sha256=%s\\nurl=%s\\narchive=%s\\n' "$sum" "$URL" "$A" |
  as_server sh -c 'cat > "$1"' sh "$src/{MARKER}"
[ "$src" = "$tmp" ] && tmp=
if [ -e "$ROOT" ]; then old="$ROOT.old.$$"; sr mv "$ROOT" "$old"; fi
sr mv "$src" "$ROOT" || die "could not move the unpacked tree to $ROOT"
as_server rm -f "$DLDIR/$A" "$DLDIR/$A.sha256"
echo "installed $A at $ROOT"
"""
