"""The CARLA server on the box: the launch loop that runs it in tmux (`launch`), start, stop
and status over SSH (`control`), the RPC readiness probe (`probe`), and `server.mode: compose`
(`compose`)."""
