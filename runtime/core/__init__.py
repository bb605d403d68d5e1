"""The inference core: artifact, pre/postprocessing, the backends and :class:`Segmenter`.

It reads no files besides the artifact and imports nothing from :mod:`runtime.io` or
:mod:`runtime.tools` (``tests/contract/test_layout.py`` holds it to that).
"""
