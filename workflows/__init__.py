"""Orchestration of several stages (train -> export -> calibrate -> check -> bench -> report).

The packages below each do one stage (``pem`` trains, ``export`` exports and checks, ``calib``
calibrates, ``runtime`` runs); a workflow composes them for a command such as ``pem-deploy
demo``. Nothing imports ``workflows`` but the CLI.
"""
