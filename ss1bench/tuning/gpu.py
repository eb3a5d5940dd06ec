"""GPU names: the database file name of a device, and ``--gpu``/``--devices`` selection.

CUDA reports marketing names ("NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe", "NVIDIA GeForce RTX
4090"); the database keys files by the chip family ("H100", "RTX4090"), since memory size and form
factor do not change which launch config wins. :func:`list_devices` is the only function here that
asks CUDA; tests replace it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: Words that carry no chip identity: vendor and brand prefixes, form factors, memory types.
_NOISE_WORDS = {
    "NVIDIA", "GEFORCE", "TESLA", "QUADRO", "AMD", "INSTINCT", "RADEON", "GPU", "PCIE", "NVL", "SXM",
    "SXM2", "SXM3", "SXM4", "SXM5", "SXM6", "HBM2", "HBM2E", "HBM3", "HBM3E", "MIG", "GENERATION",
}
#: Memory sizes ("80GB", "16G") and MIG slices ("1g.10gb"), dropped too.
_NOISE_PATTERN = re.compile(r"^(\d+(\.\d+)?[GM]B?|\d+G\.\d+GB)$")

#: Opt-in shared memory per block (bytes) of known chips, for ``--dry-run`` without the device
#: (from NVIDIA's CUDA C programming guide, compute capability tables). A real run always reads
#: the device (``ss1bench.kernels.ss1.device_limits``).
KNOWN_SHARED_MEMORY = {
    "H100": 232448, "H200": 232448, "H800": 232448, "H20": 232448, "GH200": 232448,  # sm_90: 227 KiB
    "B200": 232448, "GB200": 232448,  # sm_100: 227 KiB
    "A100": 166912, "A800": 166912, "A30": 166912,  # sm_80: 163 KiB
    "A10": 101376, "A10G": 101376, "A40": 101376, "RTXA6000": 101376, "RTX3090": 101376,  # sm_86: 99 KiB
    "L4": 101376, "L40": 101376, "L40S": 101376, "RTX4090": 101376, "RTX6000ADA": 101376,  # sm_89: 99 KiB
    "V100": 98304,  # sm_70: 96 KiB
    "T4": 65536,  # sm_75: 64 KiB
}


#: Compute capability of known chips (NVIDIA's CUDA GPUs table), for choosing a sibling database
#: (:func:`closest_gpu`). A visible device not listed is asked (:func:`compute_capability`).
KNOWN_ARCHITECTURE = {
    "H100": (9, 0), "H200": (9, 0), "H800": (9, 0), "H20": (9, 0), "GH200": (9, 0),
    "B200": (10, 0), "GB200": (10, 0), "B100": (10, 0),
    "A100": (8, 0), "A800": (8, 0), "A30": (8, 0),
    "A10": (8, 6), "A10G": (8, 6), "A40": (8, 6), "A16": (8, 6), "RTXA6000": (8, 6), "RTX3090": (8, 6),
    "RTX3080": (8, 6),
    "L4": (8, 9), "L40": (8, 9), "L40S": (8, 9), "RTX4090": (8, 9), "RTX4080": (8, 9), "RTX6000ADA": (8, 9),
    "V100": (7, 0), "T4": (7, 5),
}


def compute_capability(gpu: str) -> tuple[int, int] | None:
    """``(major, minor)`` of a normalized GPU name: the table, else a visible device of that name,
    else None."""
    if gpu in KNOWN_ARCHITECTURE:
        return KNOWN_ARCHITECTURE[gpu]
    try:
        devices = list_devices()
    except Exception:  # no CUDA at all
        return None
    for device in devices:
        if device.gpu == gpu:
            import torch

            return tuple(torch.cuda.get_device_capability(device.index))
    return None


def architecture_name(capability: tuple[int, int] | None) -> str:
    return f"sm_{capability[0]}{capability[1]}" if capability else "unknown architecture"


def closest_gpu(gpu: str, available: list[str]) -> tuple[str, str] | None:
    """The GPU of ``available`` (names with a database file) whose records serve ``gpu`` best, and
    why: the same compute capability first (an H100 takes the H200's records: both sm_90), then
    the same major version, then the nearest capability (newer on a tie); by name among equals.
    None when ``gpu``'s architecture is unknown or nothing is available."""
    target = compute_capability(gpu)
    others = [name for name in available if name != gpu]
    if target is None or not others:
        return None
    known = [(name, compute_capability(name)) for name in others]
    known = [(name, cap) for name, cap in known if cap is not None]
    if not known:
        return None

    def rank(entry):
        name, cap = entry
        distance = abs((cap[0] * 10 + cap[1]) - (target[0] * 10 + target[1]))
        return (cap != target, cap[0] != target[0], distance, cap < target, name)

    name, cap = min(known, key=rank)
    if cap == target:
        why = f"same architecture, {architecture_name(cap)}"
    else:
        why = f"closest architecture: {architecture_name(cap)} for {architecture_name(target)}"
    return name, why


def normalize_gpu_name(name: str) -> str:
    """Database name of a device: the chip family, upper case, letters and digits only.

    >>> normalize_gpu_name("NVIDIA H100 80GB HBM3"), normalize_gpu_name("NVIDIA H100 PCIe")
    ('H100', 'H100')
    >>> normalize_gpu_name("NVIDIA GeForce RTX 4090"), normalize_gpu_name("NVIDIA A100-SXM4-80GB")
    ('RTX4090', 'A100')

    Already-normalized names map to themselves, so ``--gpu h200`` and ``--gpu H200`` agree.
    """
    words = [w for w in re.split(r"[\s\-_/(),]+", name.upper()) if w]
    kept = [w for w in words if w not in _NOISE_WORDS and not _NOISE_PATTERN.match(w)]
    normalized = re.sub(r"[^A-Z0-9]", "", "".join(kept))
    if not normalized:  # a name made only of noise words: keep something stable
        normalized = re.sub(r"[^A-Z0-9]", "", "".join(words)) or "UNKNOWN"
    return normalized


@dataclass(frozen=True)
class Device:
    """A visible CUDA device: its index, CUDA name and database name."""

    index: int
    name: str

    @property
    def gpu(self) -> str:
        return normalize_gpu_name(self.name)

    def describe(self) -> str:
        return f"cuda:{self.index} {self.name} ({self.gpu})"


def list_devices() -> list[Device]:
    """Visible CUDA devices (empty without CUDA). The one place that asks CUDA; tests mock it."""
    import torch

    if not torch.cuda.is_available():
        return []
    return [Device(i, torch.cuda.get_device_name(i)) for i in range(torch.cuda.device_count())]


def current_device_index() -> int:
    import torch

    return torch.cuda.current_device()


class DeviceSelectionError(Exception):
    """No device fits ``--gpu``/``--devices`` (the message lists the visible ones)."""


class NoCudaError(DeviceSelectionError):
    """No CUDA device is visible at all."""


def _visible(devices: list[Device]) -> str:
    return "; ".join(d.describe() for d in devices) or "none"


def select_devices(gpu: str | None, devices: str | None) -> list[Device]:
    """Devices to tune on.

    Args:
        gpu: ``--gpu NAME``; only devices whose normalized name equals ``normalize_gpu_name(NAME)``.
        devices: ``--devices``: ``"all"`` or comma-separated indices; default the current device
            (or, with ``gpu``, the first matching one).

    Raises:
        NoCudaError: no CUDA device is visible.
        DeviceSelectionError: nothing matches (the message lists the visible devices).
    """
    visible = list_devices()
    if not visible:
        raise NoCudaError("no CUDA device is visible; tuning needs a GPU (--dry-run shows the plan without one)")
    wanted = normalize_gpu_name(gpu) if gpu else None
    if devices is None or devices.strip() == "":
        if wanted is None:
            index = current_device_index()
            return [next((d for d in visible if d.index == index), visible[0])]
        chosen = [d for d in visible if d.gpu == wanted][:1]
    elif devices.strip().lower() == "all":
        chosen = [d for d in visible if wanted is None or d.gpu == wanted]
    else:
        try:
            indices = [int(part) for part in devices.split(",") if part.strip()]
        except ValueError:
            raise DeviceSelectionError(
                f"--devices {devices!r}: give 'all' or comma-separated device indices (visible: {_visible(visible)})"
            ) from None
        by_index = {d.index: d for d in visible}
        missing = [i for i in indices if i not in by_index]
        if missing or not indices:
            raise DeviceSelectionError(
                f"--devices {devices!r}: no device {missing or indices} (visible: {_visible(visible)})"
            )
        chosen = [by_index[i] for i in dict.fromkeys(indices)]
        if wanted is not None:
            chosen = [d for d in chosen if d.gpu == wanted]
    if not chosen:
        raise DeviceSelectionError(
            f"no visible CUDA device matches --gpu {gpu} ({wanted}); visible: {_visible(visible)}")
    return chosen
