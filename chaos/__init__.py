"""The chaos harness: scenarios -> seeded schedule -> runner -> history -> checkers -> report.

It drives the launcher only through its command line, event log, error files and exit
codes (see docs/event-log.md)."""
