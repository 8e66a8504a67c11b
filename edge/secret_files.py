"""The one rule for every secret file, shared by the lane and central (#12 item 10).

Stdlib only, so central can apply exactly the lane's rule without importing the lane's
config models.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


def secret_file_problem(path: Path) -> str | None:
    """Why ``path`` may not hold a secret, or None if it may.

    The one rule for every secret file (HMAC keys, MQTT passwords, TLS private keys,
    central's signing key): a regular file, not readable or writable by group/others (0600
    or 0400), owned by the user reading it or by root. A key another account owns could be
    swapped or read by that account; a group-readable one by every technician on the box.
    """
    try:
        st = path.stat()
    except FileNotFoundError:
        return f"secret file {path} does not exist"
    except OSError as exc:
        return f"secret file {path} cannot be read: {exc.strerror}"
    if not stat.S_ISREG(st.st_mode):
        return f"secret file {path} is not a regular file"
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        return (
            f"secret file {path} is readable by group/others (mode {mode:04o}); "
            f"it must be 0600 or 0400 (chmod 600 {path})"
        )
    euid = os.geteuid()
    if st.st_uid not in (euid, 0):
        return (
            f"secret file {path} is owned by {_user(st.st_uid)}, not by the user reading it "
            f"({_user(euid)}) or root (chown {_user(euid)} {path}, or run as its owner)"
        )
    return None


def _user(uid: int) -> str:
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (KeyError, ImportError):
        return f"uid {uid}"
