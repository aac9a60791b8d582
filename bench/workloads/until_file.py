"""A no-torch worker for bench/many_agents.py: stamps its start, then idles until a file exists.

    until_file.py STAMPS STOP

Appends `<time> <world_size> <group_rank> <restart_count> <pid>` to STAMPS at its first line
(one write on an O_APPEND descriptor, so a hundred workers' lines never interleave), then
looks for STOP every 0.25 s and exits 0 once it appears: the bench decides when the job ends.
"""

import os
import sys
import time

stamp = time.time()
env = os.environ
line = f"{stamp:.6f} {env.get('WORLD_SIZE')} {env.get('GROUP_RANK')} "
line += f"{env.get('TORCHELASTIC_RESTART_COUNT')} {os.getpid()}\n"
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
os.write(fd, line.encode())
os.close(fd)
while not os.path.exists(sys.argv[2]):
    time.sleep(0.25)
