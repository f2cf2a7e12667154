"""The allocator settings every process that runs PyTorch needs, in one place: the CLI re-executes
itself with them, and the Dask workers of `runtime.task_runner: dask` are spawned with them.

glibc hands PyTorch's big buffers back to the kernel and faults them in again: these two settings
halved MobileNetV2 step time here (../shared/STACK.md). glibc reads them at process start, so they
must be in a process's environment before it starts, never set from inside it.
"""

ALLOCATOR_SETTINGS = {"MALLOC_MMAP_THRESHOLD_": "4294967296", "MALLOC_TRIM_THRESHOLD_": "68719476736"}
