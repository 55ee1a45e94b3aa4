"""Helpers shared by the test files: console scripts called in-process, and artifacts (trained
runs, checkpoints, exports) built once per pytest worker (tests/_helpers/artifacts.py, whose
fixtures tests/conftest.py registers)."""
