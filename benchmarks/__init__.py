"""Performance benchmarks of the training engine (not part of the test suite; see ``docs/performance.md``).

Each script is runnable as ``python -m benchmarks.<name> --help`` from the repository root and writes a JSON file
and a markdown table. Only torch, ``models``, ``data`` and ``trainables`` are needed (no Ray/Optuna), except
``benchmarks.asha_efficiency``, which runs a study.
"""
