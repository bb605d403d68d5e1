"""ROS 2 integration of the runtime: image messages <-> numpy, bags in and out, and a node.

Torch-free like the rest of ``runtime``. :mod:`runtime.io.ros.messages` needs only numpy and OpenCV
and is shared by the bag path (:mod:`runtime.io.ros.bags`, needs the ``rosbags`` package: the
``ros`` extra) and the live node (:mod:`runtime.io.ros.node`, needs ``rclpy`` from a ROS 2 install).
"""
