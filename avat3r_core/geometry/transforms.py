"""Rigid transforms shared by the cameras, the synthetic capture and the stages.

All matrices are float64 numpy arrays. Cameras use OpenCV axes (x right, y down, z forward) and
4x4 world-to-camera extrinsics, as stated in DESIGN.md.
"""

from __future__ import annotations

import numpy as np


def rotation_from_axis_angle(axis_angle: np.ndarray) -> np.ndarray:
    """Rodrigues' formula: a 3-vector whose direction is the axis and whose norm is the angle (radians)."""
    rotvec = np.asarray(axis_angle, dtype=np.float64)
    angle = float(np.linalg.norm(rotvec))
    if angle < 1e-12:
        return np.eye(3)
    k = rotvec / angle
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + np.sin(angle) * kx + (1.0 - np.cos(angle)) * (kx @ kx)


def rigid(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """A 4x4 homogeneous transform from a 3x3 rotation and a 3-vector translation."""
    out = np.eye(4)
    out[:3, :3] = rotation
    out[:3, 3] = np.asarray(translation, dtype=np.float64).reshape(3)
    return out


def invert_rigid(transform: np.ndarray) -> np.ndarray:
    """Inverse of a 4x4 rigid transform without a general matrix inverse (exact for rotations)."""
    rotation = transform[:3, :3]
    out = np.eye(4)
    out[:3, :3] = rotation.T
    out[:3, 3] = -rotation.T @ transform[:3, 3]
    return out


def look_at_w2c(eye: np.ndarray, target: np.ndarray, up: np.ndarray) -> np.ndarray:
    """World-to-camera (OpenCV axes) of a camera at `eye` looking at `target`.

    `up` is the world direction that should appear upwards in the image; since OpenCV's y axis points
    down, the camera's y axis is the negative of `up` projected onto the image plane.
    """
    eye = np.asarray(eye, dtype=np.float64)
    forward = np.asarray(target, dtype=np.float64) - eye
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, np.asarray(up, dtype=np.float64))
    norm = np.linalg.norm(right)
    if norm < 1e-9:
        raise ValueError("look_at_w2c: 'up' is parallel to the viewing direction")
    right /= norm
    down = np.cross(forward, right)
    rotation = np.stack([right, down, forward])  # rows: camera axes expressed in world coordinates
    return rigid(rotation, -rotation @ eye)
