"""The stack of one profile: its CARLA servers, the variants written for them, one agent per
server and the local tmux session that shows each server beside its agent.

`up` brings it all up (`servers` deploys or starts the servers when needed, on every host at
once), `attach` builds the windows without changing anything, `down` takes the agents down;
`overview` gathers what `status` shows and `report` says it. `pairs` is the pure model of
which agent talks to which server (compose project, window, environment), `agents` runs
compose for a recorded agent, `env` is what an agent gets, `panes` what runs in a window,
`variants` which variant runs, `tunnels` the SSH tunnels of servers whose ports do not answer
from here (`remote.tunnel`). The state they leave lives in `records`.
"""
