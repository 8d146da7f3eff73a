"""The remote GPU box: SSH access (`ssh`), what the box looks like (`facts`), which address
agents use (`address`), which port a server gets (`ports`), what a deploy must do (`plan`,
pure), and the pyinfra run itself (`deploy`, a child process because of gevent).

Only `ssh`, `address`, `ports`, `facts`, `plan`, `shell` and `runner` may be imported by the
CLI or the daemon; `ops` and `deploy` import pyinfra and belong to the child process.
"""
