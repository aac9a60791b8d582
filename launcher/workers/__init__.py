"""Worker processes: their environment (env.py, pure), spawning (spawn.py), the group that
starts, watches and stops them (group.py), log files and console streams (logs.py) and the
guardian that kills them if the launcher dies (guardian.py)."""
