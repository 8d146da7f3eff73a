"""NVIDIA GPUs as the tool sees them: nvidia-smi's CSV (`smi`) and whose process is whose
(`roles`). Pure; imports nothing of ours."""
