"""`carla-launch doctor`: every usual reason a launch fails, checked before anything starts.

Pure checks from facts (`checks_local`: this machine's GPU, docker, tools; `checks_box`: what
one ssh round trip to a box printed) to `model.Check`s, and `model.verdict_of` that turns them
into `local` or `distributed` and an exit code. `gather` is the imperative shell that collects
the facts (the local ones while the boxes answer), `render` prints the report as text or JSON.
"""
