"""A generated hostile corpus for the artifact contract (contract/sidecar.py), one file per part of
it that is attacked.

Artifacts are written once per package by export's own writer around small hand-built ONNX graphs
(tests/helpers/hostile_artifacts.py), so no torch export is needed. Every case asserts its exact
outcome: a one-line typed error naming the file and the field, or acceptance.
"""
