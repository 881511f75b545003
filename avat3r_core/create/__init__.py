"""Avatars from phone photos (`avat3r create`): photos -> DUSt3R with unknown cameras -> head frame -> inputs.

See :mod:`avat3r_core.create.pipeline` for the steps and the documented choices.
"""

from __future__ import annotations

from avat3r_core.create.photos import CreateError, Photo, load_photo
from avat3r_core.create.pipeline import CreateOptions, create_avatar, load_created_avatar

__all__ = ["CreateError", "CreateOptions", "Photo", "create_avatar", "load_created_avatar", "load_photo"]
