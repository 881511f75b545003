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

# View selection and head-centric crops (stages `views` and `crop`).
from avat3r_core.geometry.crops import CropWindow, cut_crop, head_center, input_window, supervision_window
from avat3r_core.geometry.views import (
    PartnerSet,
    front_facing,
    front_facing_per_timestep,
    k_farthest_sample,
    partner_views,
    reference_centers,
    replace_missing,
)

__all__ += [
    "CropWindow",
    "PartnerSet",
    "cut_crop",
    "front_facing",
    "front_facing_per_timestep",
    "head_center",
    "input_window",
    "k_farthest_sample",
    "partner_views",
    "reference_centers",
    "replace_missing",
    "supervision_window",
]
