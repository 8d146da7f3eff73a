"""This machine's and the boxes' GPUs: who holds what VRAM, and what it means for CARLA.

`vram` is the rule (pure), `nvml` and `local` read this machine, `remote` a box over
`box/`, `render` makes the table and the JSON, `watch` redraws it once a second. The CSV of
nvidia-smi and the roles of processes are read in `nvidia/`.
"""
