"""The deploy: what it must do on a box (`plan`, pure), the CARLA package (`package`), what it
reads on this machine (`inputs`), the parent side (`runner`) and the pyinfra run itself
(`deploy`, a child process because of gevent, with its operations in `ops`).

Only `plan`, `package`, `inputs` and `runner` may be imported by the CLI or the daemon; `ops`
and `deploy` import pyinfra and belong to the child process. Talking to a box is `box/`.
"""
