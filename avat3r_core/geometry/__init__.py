"""Geometry shared by all stages: cameras, rays, rigid transforms and farthest point sampling."""

from __future__ import annotations

from avat3r_core.geometry.cameras import Camera, pixel_centers
from avat3r_core.geometry.rays import plucker_rays, ray_directions
from avat3r_core.geometry.sampling import farthest_point_order, farthest_point_sampling
from avat3r_core.geometry.transforms import invert_rigid, look_at_w2c, rigid, rotation_from_axis_angle

__all__ = [
    "Camera",
    "farthest_point_order",
    "farthest_point_sampling",
    "invert_rigid",
    "look_at_w2c",
    "pixel_centers",
    "plucker_rays",
    "ray_directions",
    "rigid",
    "rotation_from_axis_angle",
]
