"""Benchmarks behind ``avrs bench``: side-by-side measurements in separate worker processes.

:mod:`dapsdk.bench.transport` runs issue 3's transport benchmark (dapsdk against plain TCP, TLS and
websockets); :mod:`dapsdk.bench.worker` is the sender/receiver process it starts for each case.
"""
