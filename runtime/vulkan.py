"""Vulkan devices as ncnn sees them (torch-free): what ``--device vulkan`` runs on, and one sentence where none is.

Most edge GPUs (Adreno and Mali in phones, VideoCore on a Raspberry Pi, Mali on Rockchip boards) compute through
Vulkan, not CUDA; ncnn's Vulkan path also runs on NVIDIA's and AMD's drivers. Mesa's ``llvmpipe`` is a conformant
Vulkan device on the CPU: its results are real compute shaders compiled and run by a real driver (parity there
means something), its timings mean nothing. ``VulkanDevice.software`` says which kind a device is.

ncnn says what each device supports only in the lines it prints when it creates its Vulkan instance
(``fp16-p/s/u/a=1/1/1/1``: fp16 packed, storage, uniform, arithmetic); those lines are captured here, once per
process, and kept off the user's terminal.
"""

from __future__ import annotations

import ctypes.util
import functools
import re
from dataclasses import dataclass

from resnet_edge.errors import InvalidInput, MissingDependency
from resnet_edge.quiet import captured_stderr

DEVICES = ("cpu", "cuda", "vulkan")  # where a format's artifacts may run (the formats table's ``devices``)
HOW_TO_GET = ("install a Vulkan driver: on Debian or Ubuntu 'apt-get install libvulkan1 mesa-vulkan-drivers' gives "
              "Mesa's software device (llvmpipe) on any CPU; on a GPU, its vendor's driver")
KINDS = {0: "discrete GPU", 1: "integrated GPU", 2: "virtual GPU", 3: "software device on the CPU"}


@dataclass(frozen=True)
class VulkanDevice:
    index: int
    name: str
    kind: str  # one of KINDS' values
    vendor_id: int
    device_id: int
    api_version: str  # Vulkan's, as major.minor.patch
    driver_version: str  # the driver's own number, as the driver encodes it (vendors differ)
    fp16_storage: bool
    fp16_arithmetic: bool

    @property
    def software(self) -> bool:
        """A device that computes on the CPU (llvmpipe, SwiftShader): parity means something, timings do not."""
        return self.kind == KINDS[3]

    def describe(self) -> str:
        return f"Vulkan device {self.index}: {self.name} ({self.kind}, Vulkan {self.api_version})"

    def where(self) -> str:
        """The line parity and bench print under their tables: the device, its driver, and what its figures mean."""
        return (f"on {self.describe()}, driver {self.driver_version}"
                + (": a software device (parity means something, timings do not)" if self.software else ""))

    def record(self) -> dict[str, object]:
        """What a manifest row or a report records of the device."""
        return {"index": self.index, "name": self.name, "kind": self.kind, "software": self.software,
                "vendor_id": f"0x{self.vendor_id:04x}", "device_id": f"0x{self.device_id:04x}",
                "api_version": self.api_version, "driver_version": self.driver_version,
                "fp16_storage": self.fp16_storage, "fp16_arithmetic": self.fp16_arithmetic}


def _version(v: int) -> str:
    return f"{v >> 22 & 0x7F}.{v >> 12 & 0x3FF}.{v & 0xFFF}"  # VK_API_VERSION_MAJOR/MINOR/PATCH


def parse_fp16(said: str) -> dict[int, tuple[bool, bool]]:
    """ncnn's device lines -> {index: (fp16 storage, fp16 arithmetic)}."""
    found = {}
    for m in re.finditer(r"^\[(\d+) [^\]]*\]\s+fp16-p/s/u/a=(\d)/(\d)/(\d)/(\d)", said, re.M):
        found[int(m.group(1))] = (m.group(3) == "1", m.group(5) == "1")
    return found


@functools.lru_cache(maxsize=1)
def devices() -> tuple[VulkanDevice, ...]:
    """Every Vulkan device ncnn finds here, or :class:`MissingDependency` saying why there is none."""
    if ctypes.util.find_library("vulkan") is None:
        raise MissingDependency(f"No Vulkan loader (libvulkan.so.1) is installed here; {HOW_TO_GET}.")
    try:
        import ncnn
    except ImportError:
        raise MissingDependency("The Vulkan path runs on ncnn: pip install 'resnet-edge[ncnn]'.") from None
    with captured_stderr() as said:
        count = ncnn.get_gpu_count()
    if count == 0:
        why = next((line.strip() for line in said[0].splitlines() if line.strip()), "")
        raise MissingDependency(f"The Vulkan loader finds no device{f' ({why})' if why else ''}; {HOW_TO_GET}.")
    fp16 = parse_fp16(said[0])
    found = []
    for i in range(count):
        info = ncnn.get_gpu_info(i)
        storage, arithmetic = fp16.get(i, (False, False))
        found.append(VulkanDevice(i, info.device_name(), KINDS.get(info.type(), f"type {info.type()}"),
                                  info.vendor_id(), info.device_id(), _version(info.api_version()),
                                  str(info.driver_version()), storage, arithmetic))
    return tuple(found)


def device(index: int = 0) -> VulkanDevice:
    """Device ``index``, or one sentence: no loader, no device, or an index out of range."""
    found = devices()
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(found):
        listed = "; ".join(d.describe() for d in found)
        raise InvalidInput(f"--gpu-index {index} is out of range: this machine has {len(found)} Vulkan "
                           f"device{'s' if len(found) != 1 else ''} ({listed}).")
    return found[index]


def unavailable_reason() -> str | None:
    """None where a Vulkan device is here, else why not (for skips and export's decision)."""
    try:
        devices()
    except MissingDependency as exc:
        return str(exc)
    return None


def check_device(device_name: str) -> str:
    """A ``--device`` value: cpu, cuda (cuda:N) or vulkan (its index is ``--gpu-index``), or auto."""
    if device_name in ("auto", *DEVICES) or re.fullmatch(r"cuda:\d+", device_name or ""):
        return device_name
    raise InvalidInput(f"--device must be cpu, cuda, cuda:N, vulkan or auto, not '{device_name}'.")
