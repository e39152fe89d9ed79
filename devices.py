"""Which device a run uses, and the words for it: `--device auto` resolved, named in the log, and a
warning when an NVIDIA GPU is present but this torch cannot use it.

    python devices.py        # prints what `--device auto` resolves to here, and why

Used by main.py (the log's `device:` line) and experiments.py (which GPUs to share out).
"""
import os
import shutil
import subprocess

import torch

from utils import InputError


def nvidia_gpu_visible() -> bool:
    """True when the machine shows an NVIDIA GPU (its kernel driver, or nvidia-smi listing one),
    whatever torch thinks: a run that falls back to the CPU there deserves a warning."""
    if os.path.exists("/proc/driver/nvidia/gpus") and os.listdir("/proc/driver/nvidia/gpus"):
        return True
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    try:
        listed = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    return listed.returncode == 0 and "GPU" in listed.stdout


def cuda_unusable_warning() -> str | None:
    """One warning line when an NVIDIA GPU is visible but torch cannot use CUDA, else None."""
    if torch.cuda.is_available() or not nvidia_gpu_visible():
        return None
    build = (f"this torch {torch.__version__} is built for CUDA {torch.version.cuda}" if torch.version.cuda
             else f"this torch {torch.__version__} is a CPU-only build")
    return (f"warning: an NVIDIA GPU is present but torch cannot use it ({build}), so this runs on the CPU: "
            f"update the NVIDIA driver to one that supports that CUDA version, or install a torch build "
            f"for your driver's CUDA version (docs/training.md, 'Which torch build'); --device cpu silences this")


def resolve_device(name: str, gpu_id: int = 0) -> torch.device:
    """`--device` as a torch.device: auto is cuda:<gpu_id> (cuda:0 when there is no such GPU) where
    CUDA works, else cpu. An unusable name is an InputError."""
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        # The published default --gpu_id 4 names a GPU most machines lack: fall back to cuda:0.
        return torch.device(f"cuda:{gpu_id}" if gpu_id < torch.cuda.device_count() else "cuda:0")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(f"--device {name}: unknown device (use auto, cpu, cuda or cuda:N)") from None
    if device.type not in ("cpu", "cuda"):
        raise InputError(f"--device {name}: unsupported device type (use auto, cpu, cuda or cuda:N)")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"--device {name}: no CUDA GPU is available on this machine")
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        if device.index >= torch.cuda.device_count():
            raise InputError(f"--device {name}: only {torch.cuda.device_count()} GPU(s) present")
    return device


def describe_device(device: torch.device) -> str:
    """`cpu`, or `cuda:0 (NVIDIA H200, torch 2.11.0, CUDA 13.0)`: what the log's `device:` line says."""
    if device.type != "cuda":
        return str(device)
    return f"{device} ({torch.cuda.get_device_name(device)}, torch {torch.__version__}, CUDA {torch.version.cuda})"


def cuda_devices() -> list[str]:
    """The GPUs a sweep can share out, as `cuda:N` of this process's view (CUDA_VISIBLE_DEVICES applied)."""
    return [f"cuda:{index}" for index in range(torch.cuda.device_count())]


if __name__ == "__main__":
    warning = cuda_unusable_warning()
    if warning:
        print(warning)
    print(f"--device auto: {describe_device(resolve_device('auto'))}")
