"""The stack of one profile: its CARLA server, the variants written for it, the agent and
the local tmux window that shows both side by side.

`up` brings it all up (deploying or starting the server when needed), `attach` builds the
window without changing anything, `down` takes the local part down; `overview` is the
read-model behind `carla-launch status`. `env` is what the agent gets, `panes` what runs in
the window, `variants` which variant runs. The state they leave lives in `records`.
"""
