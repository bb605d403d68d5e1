"""A generated hostile-input corpus for the runtime's inputs and ``pem-deploy infer --out``, one file
per module it attacks.

Every case asserts its exact outcome: either one ``error:`` line, a non-zero exit and no
traceback, or acceptance with correct outputs (label PNGs equal to what the API gives for
``cv2.imread`` of the same file). All data is generated from fixed seeds
(tests/helpers/hostile_inputs.py); the model is the tiny hand-built ONNX graph of
tests/helpers/runtime_models.py.
"""
