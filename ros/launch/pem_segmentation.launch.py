"""Launch the pem-deploy segmentation node from a ROS 2 install (Humble / Jazzy).

    ros2 launch ros/launch/pem_segmentation.launch.py artifact:=/models/pem.onnx input:=/camera/image_raw

pem-deploy is a pip package, not an ament package, so the node is started as a process
(``pem-deploy ros2 ...``) with the parameters file ``ros/config/pem_segmentation.params.yaml``;
``pem_deploy:=/path/to/venv/bin/pem-deploy`` picks the Python environment that has rclpy.
SIGINT from ``ros2 launch`` stops the node cleanly (exit status 0).
"""

from pathlib import Path

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess
from launch.substitutions import LaunchConfiguration

PARAMS_FILE = Path(__file__).resolve().parents[1] / "config" / "pem_segmentation.params.yaml"


def generate_launch_description() -> LaunchDescription:
    arguments = [
        DeclareLaunchArgument("artifact", description="Model artifact: .onnx / .engine file or its folder."),
        DeclareLaunchArgument(
            "input",
            default_value="/camera/image_raw",
            description="Image topic (a topic ending in /compressed is a CompressedImage).",
        ),
        DeclareLaunchArgument(
            "params_file", default_value=str(PARAMS_FILE), description="The node's parameters (YAML)."
        ),
        DeclareLaunchArgument(
            "pem_deploy", default_value="pem-deploy", description="The pem-deploy executable to run."
        ),
    ]
    node = ExecuteProcess(
        name="pem_segmentation",
        cmd=[
            LaunchConfiguration("pem_deploy"),
            "ros2",
            LaunchConfiguration("artifact"),
            "--input",
            LaunchConfiguration("input"),
            "--",
            "--ros-args",
            "--params-file",
            LaunchConfiguration("params_file"),
        ],
        output="screen",
        sigterm_timeout="10",
    )
    return LaunchDescription([*arguments, node])
