"""How worker failures travel from a training script to the person reading the launcher's output.

    record.py      the `@record` decorator user scripts import (standard library only, so that
                   importing it never drags in torch or the launcher); writes the error file
    error_file.py  reads error files written by our decorator or torch's, never raising; writes
                   the agent-side copy with the exit code added
    report.py      one `WorkerFailure` per failed worker, the root cause (earliest failure) and
                   torchrun's failure summary table

The file format is torch's (torch.distributed.elastic.multiprocessing.errors), so either
decorator works under either launcher.
"""
