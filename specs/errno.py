"""Linux errno values as 4.6 defines them for x86-64 (``include/uapi/asm-generic/errno-base.h``).

Model operations return ``-Errno.X`` where 4.6 returns an error, so results compare by value
across implementations written in any language.
"""

from __future__ import annotations

import enum


class Errno(enum.IntEnum):
    """The errno numbers the models can return; values are the kernel's."""

    EPERM = 1
    ENOENT = 2
    ESRCH = 3
    EINTR = 4
    EIO = 5
    ENXIO = 6
    E2BIG = 7
    ENOEXEC = 8
    EBADF = 9
    ECHILD = 10
    EAGAIN = 11
    ENOMEM = 12
    EACCES = 13
    EFAULT = 14
    EBUSY = 16
    EEXIST = 17
    ENODEV = 19
    EINVAL = 22
    ENFILE = 23
    EMFILE = 24
    EFBIG = 27
    ENOSPC = 28
    ERANGE = 34
    ENOSYS = 38
    EOVERFLOW = 75


def describe(result: int) -> str:
    """Render an int result the way a kernel engineer reads it: ``0`` or ``-EINVAL``."""
    if result < 0:
        try:
            return f"-{Errno(-result).name}"
        except ValueError:
            return str(result)
    return str(result)
