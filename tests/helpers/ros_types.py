"""The ROS 2 Jazzy message types the bag tests build messages from, out of rosbags' typestore.

rosbags is the optional ``ros`` extra: a test module imports this after
``pytest.importorskip("rosbags", ...)``.
"""

from rosbags.typesys import Stores, get_typestore

TS = get_typestore(Stores.ROS2_JAZZY)
Image = TS.types["sensor_msgs/msg/Image"]
CompressedImage = TS.types["sensor_msgs/msg/CompressedImage"]
CameraInfo = TS.types["sensor_msgs/msg/CameraInfo"]
Header = TS.types["std_msgs/msg/Header"]
Time = TS.types["builtin_interfaces/msg/Time"]
String = TS.types["std_msgs/msg/String"]
