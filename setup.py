"""Builds the C helpers: ``workers.features._resp`` (RESP framing for the redis_fast reader) and
``workers.pipeline._scan`` (decode's per-message byte count).

Everything else is in pyproject.toml. The extension is optional: without a C compiler the
install still succeeds and the reader uses hiredis (slower, same answers); `streamscore doctor`
style checks and the test suite say which one is in use.
"""

from setuptools import Extension, setup

setup(ext_modules=[
    Extension("workers.features._resp", ["workers/features/_resp.c"], optional=True, extra_compile_args=["-O2"]),
    Extension("workers.pipeline._scan", ["workers/pipeline/_scan.c"], optional=True, extra_compile_args=["-O2"]),
])
