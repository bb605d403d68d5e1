"""Python-backend model files copied into a Triton model repository as ``<model>/1/model.py``.

They run inside Triton's Python-backend stub, which provides ``triton_python_backend_utils``;
they import this project's torch-free ``runtime`` (install ``pem-deploy[ort]`` in the Python the
stub runs, or put the project on ``PYTHONPATH``). Never imported by the project itself.
"""
