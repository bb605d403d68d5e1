"""The runtime's inputs and outputs: image and video files, cameras, batch inference, robotics
(ROS 2 bags and the live node) and fleets of recordings. Built on :mod:`runtime.core`.
"""
