"""Scenarios: what to run, which faults to inject, what to expect.

`schema.py` holds the validated dataclasses (pure); `loader.py` is the only module in the
project that imports yaml, and turns a file into a Scenario or a ScenarioError naming the
file, line, field and what was expected."""
