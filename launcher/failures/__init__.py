"""How worker failures travel from a training script to the person reading the launcher's output.

    record.py      the `@record` decorator user scripts import (standard library only, so that
                   importing it never drags in torch or the launcher); writes the error file
    error_file.py  reads error files written by our decorator or torch's, never raising; writes
                   the agent-side copy with the exit code added
    classify.py    what kind each failure is: the worker's own, a symptom of a peer's, or a
                   stop by the agent (pure: patterns of torch's gloo, NCCL and store errors)
    report.py      one `WorkerFailure` per failed worker, the root cause (causes before
                   symptoms, then the earliest) and torchrun's failure summary table

The file format is torch's (torch.distributed.elastic.multiprocessing.errors), so either
decorator works under either launcher.
"""
