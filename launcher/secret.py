"""The job secret that signs rendezvous values: where it comes from, and reading it.

Only ever a file: `--rdzv-conf secret_file=PATH`, or the file named by the environment
variable LAUNCHER_RDZV_SECRET_FILE. A secret on the command line would be visible to every
user of the machine (`ps`), and one in the environment to anyone who can read
/proc/<pid>/environ of any worker (workers inherit the agent's environment).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Mapping

from launcher.errors import ConfigError
from launcher.rendezvous.state.signing import Seal

SECRET_FILE_ENV = "LAUNCHER_RDZV_SECRET_FILE"
MIN_SECRET_BYTES = 16
_MAX_SECRET_BYTES = 4096


def secret_file(conf_value: str | None, environ: Mapping[str, str]) -> str | None:
    """The secret's path: the --rdzv-conf key wins over the environment variable."""
    return conf_value or environ.get(SECRET_FILE_ENV) or None


def read_secret(path: str) -> bytes:
    """The secret's bytes (surrounding whitespace removed); a ConfigError naming the file
    and the fix when it is missing, unreadable, empty, too short or readable by others."""
    where = f"secret_file {path!r}"
    try:
        with open(path, "rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            raw = handle.read(_MAX_SECRET_BYTES + 1)
    except OSError as err:
        raise ConfigError(
            f"cannot read {where}: {err.strerror}",
            flag="--rdzv-conf",
            fix="give the path of a file every node can read, e.g. made with "
            "`head -c 32 /dev/urandom | base64 > job.secret; chmod 600 job.secret`",
        ) from None
    secret = raw.strip()
    if len(raw) > _MAX_SECRET_BYTES:
        raise ConfigError(f"{where} is over {_MAX_SECRET_BYTES} bytes", flag="--rdzv-conf")
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"{where} holds {len(secret)} bytes; a secret needs at least {MIN_SECRET_BYTES}",
            flag="--rdzv-conf",
            fix="e.g. `head -c 32 /dev/urandom | base64 > job.secret`",
        )
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"{where} can be read by other users (mode {stat.S_IMODE(mode):o})",
            flag="--rdzv-conf",
            fix=f"chmod 600 {path}",
        )
    return secret


def job_seal(
    secret_path: str | None, run_id: str, *, on_reject: Callable[[str], None]
) -> Seal | None:
    """The seal of a job with a secret (None without one): what signs and checks its values."""
    if secret_path is None:
        return None
    return Seal(read_secret(secret_path), run_id, on_reject=on_reject)
