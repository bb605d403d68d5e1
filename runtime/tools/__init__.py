"""Device and checking tools on top of the runtime: TensorRT engine builds, benchmarks,
``verify`` and the comparison engine (:mod:`runtime.tools.compare`).
"""
