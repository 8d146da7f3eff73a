"""An HTTP server for packages, as the hosting of CARLA archives behaves (and misbehaves).

Serves files with HEAD, GET and `Range: bytes=N-` (206), logs every request, and can break the
first full transfer of a file after some bytes (`break_after`) to test resumed downloads.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class Request:
    method: str
    path: str
    range: str | None
    status: int
    sent: int  # body bytes sent


class PackageServer:
    """`with PackageServer("10.77.10.1", {"pkg.tar.gz": path}) as srv: srv.url("pkg.tar.gz")`."""

    def __init__(self, host: str, files: dict[str, Path], port: int = 0) -> None:
        self.files = {name: Path(p) for name, p in files.items()}
        self.requests: list[Request] = []
        self.break_after: dict[str, int] = {}  # name -> bytes; applies once
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                self._serve(body=False)

            def do_GET(self) -> None:
                self._serve(body=True)

            def _serve(self, body: bool) -> None:
                name = self.path.lstrip("/").split("?", 1)[0]
                rng = self.headers.get("Range")
                path = outer.files.get(name)
                if path is None or not path.is_file():
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    outer.requests.append(Request(self.command, name, rng, 404, 0))
                    return
                data = path.read_bytes()
                start = 0
                if rng and rng.startswith("bytes=") and rng[6:].split("-")[0].isdigit():
                    start = int(rng[6:].split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        outer.requests.append(Request(self.command, name, rng, 416, 0))
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                sent = 0
                if body:
                    chunk = data[start:]
                    cut = outer.break_after.pop(name, None) if start == 0 else None
                    if cut is not None:
                        chunk = chunk[:cut]
                    self.wfile.write(chunk)
                    self.wfile.flush()
                    sent = len(chunk)
                    if cut is not None:
                        self.close_connection = True
                        self.connection.shutdown(2)
                outer.requests.append(Request(self.command, name, rng, 206 if start else 200, sent))

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.host = host
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, name: str) -> str:
        return f"http://{self.host}:{self.port}/{name}"

    def add(self, name: str, path: Path) -> str:
        self.files[name] = Path(path)
        return self.url(name)

    def start(self) -> PackageServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> PackageServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def bytes_sent(self, name: str) -> int:
        return sum(r.sent for r in self.requests if r.path == name and r.method == "GET")
