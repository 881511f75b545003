"""A procedural head: identity, mesh parts, blendshapes, and per-vertex appearance attributes.

Head-local frame as in Ava-256: millimetres, +y up, +z forward (face direction), origin near the head centre.
The render mesh is one vertex/face array made of parts. The first `n_tracked` vertices are the tracked mesh
(skin surface with the two eyeballs, no hair, no neck), whose faces are the first `n_tracked_faces` faces, so
the tracked mesh of the capture (face_topology.obj + registration_vertices PLYs) is a prefix of what is
rendered.

The skin is a latitude/longitude grid with a duplicated row along the mouth line: the quads between the two
copies are left out over the mouth width, so opening the jaw (which moves only the lower copy) opens a real
hole, behind which a pocket (teeth + dark mouth interior, attached to the lip rows) and a tongue are rendered.
Eyes are spheres sitting in socket depressions of the skin; closing the eyes undoes the depression so the skin
covers them.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from avat3r_core.geometry.transforms import rotation_from_axis_angle

from .expression import BLEND_WEIGHT_NAMES

PART_SKIN, PART_EYE, PART_MOUTH, PART_TONGUE, PART_HAIR, PART_NECK, PART_TORSO = range(7)
PART_NAMES = ("skin", "eye", "mouth", "tongue", "hair", "neck", "torso")
TRACKED_PARTS = (PART_SKIN, PART_EYE)

_SKIN_TONES = np.array([[0.86, 0.67, 0.56], [0.76, 0.55, 0.42], [0.62, 0.43, 0.31], [0.44, 0.29, 0.20]])
_HAIR_COLOURS = np.array(
    [[0.07, 0.06, 0.05], [0.28, 0.18, 0.10], [0.66, 0.53, 0.30], [0.50, 0.22, 0.10], [0.55, 0.55, 0.55]]
)
_IRIS_COLOURS = np.array([[0.25, 0.40, 0.60], [0.35, 0.22, 0.10], [0.30, 0.45, 0.28], [0.18, 0.12, 0.08]])
_SHIRT_COLOURS = np.array([[0.15, 0.30, 0.20], [0.55, 0.15, 0.15], [0.60, 0.55, 0.20], [0.35, 0.20, 0.45]])

JAW_MAX_DEG = 18.0
THETA_MOUTH = np.deg2rad(-31.0)
"""Latitude of the mouth line: fixed in parameter space so that every subject shares one mesh topology."""
PHI_MOUTH = np.deg2rad(17.0)
"""Half-width of the mouth opening in longitude, fixed for the same reason."""
GAZE_MAX_DEG = (25.0, 15.0)
EYE_RADIUS = 12.0


@dataclass(frozen=True)
class Identity:
    """Per-subject shape and colour parameters (mm, linear RGB in [0, 1])."""

    ax: float
    ay: float
    az: float
    nose: float
    nose_width: float
    brow: float
    chin: float
    jaw_narrow: float
    eye_x: float
    eye_y: float
    skin: np.ndarray
    lip: np.ndarray
    hair: np.ndarray
    iris: np.ndarray
    shirt: np.ndarray
    hair_thickness: float
    hairline_front_deg: float
    hairline_side_deg: float
    hairline_back_deg: float

    @property
    def mouth_y(self) -> float:
        """Height of the mouth line (mm), where the lips meet."""
        return float(self.ay * np.sin(THETA_MOUTH))

    @property
    def mouth_half_width(self) -> float:
        """Half-width of the mouth opening (mm), from the fixed longitude span and the narrowed jaw."""
        lower = float(_smoothstep(0.1 * self.ay, -0.9 * self.ay, np.array(self.mouth_y)))
        return float(self.ax * np.cos(THETA_MOUTH) * np.sin(PHI_MOUTH) * (1.0 - self.jaw_narrow * lower))


def sample_identity(rng: np.random.Generator | None) -> Identity:
    """Random identity; `None` gives the mean identity used for the shared face_topology.obj."""

    def u(lo: float, hi: float) -> float:
        return 0.5 * (lo + hi) if rng is None else float(rng.uniform(lo, hi))

    def pick(table: np.ndarray) -> np.ndarray:
        if rng is None:
            return table[0].copy()
        return np.clip(table[rng.integers(len(table))] * rng.uniform(0.92, 1.08, size=3), 0.0, 1.0)

    ay = u(100.0, 114.0)
    skin = pick(_SKIN_TONES)
    return Identity(
        ax=u(70.0, 80.0),
        ay=ay,
        az=u(92.0, 102.0),
        nose=u(16.0, 24.0),
        nose_width=u(8.0, 11.0),
        brow=u(3.0, 6.0),
        chin=u(6.0, 10.0),
        jaw_narrow=u(0.12, 0.28),
        eye_x=u(30.0, 34.0),
        eye_y=u(2.0, 8.0),
        skin=skin,
        lip=np.clip(skin * np.array([0.95, 0.62, 0.62]), 0.0, 1.0),
        hair=pick(_HAIR_COLOURS),
        iris=pick(_IRIS_COLOURS),
        shirt=pick(_SHIRT_COLOURS),
        hair_thickness=u(7.0, 20.0),
        hairline_front_deg=u(32.0, 44.0),
        hairline_side_deg=u(-8.0, 12.0),
        hairline_back_deg=u(-48.0, -20.0),
    )


def _warped(lo: float, hi: float, n: int, centre: float, width: float, gain: float) -> np.ndarray:
    """n samples in [lo, hi] denser near `centre`: a mesh with detail where the face has its features."""
    fine = np.linspace(lo, hi, 4097)
    density = 1.0 + gain * np.exp(-(((fine - centre) / width) ** 2))
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (density[1:] + density[:-1]) * np.diff(fine))])
    return np.interp(np.linspace(0.0, cdf[-1], n), cdf, fine)


def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _grid_faces(rows: int, cols: int, row_ids: np.ndarray | None = None) -> np.ndarray:
    """Triangles of a rows x cols vertex grid (row-major ids), wound outwards for (row = up, col = right)."""
    ids = np.arange(rows * cols).reshape(rows, cols) if row_ids is None else row_ids
    a, b = ids[:-1, :-1], ids[:-1, 1:]
    c, d = ids[1:, 1:], ids[1:, :-1]
    return np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([a, c, d], -1).reshape(-1, 3)])


def _ellipsoid_dir(theta: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """Unit-sphere point at latitude theta (up) and longitude phi (0 = +z forward, +pi/2 = +x)."""
    return np.stack([np.cos(theta) * np.sin(phi), np.sin(theta), np.cos(theta) * np.cos(phi)], -1)


def skin_surface(ident: Identity, theta: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """Neutral skin position (mm) at (latitude, longitude): a deformed ellipsoid with facial features."""
    d = _ellipsoid_dir(theta, phi)
    p = d * np.array([ident.ax, ident.ay, ident.az])
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    front = np.clip(np.cos(phi), 0.0, 1.0) ** 1.5 * np.clip(np.cos(theta) * 1.4, 0.0, 1.0)
    lower = _smoothstep(0.1 * ident.ay, -0.9 * ident.ay, y)
    # Jaw narrowing and a fuller lower face (an ellipsoid's chin recedes far too much).
    x = x * (1.0 - ident.jaw_narrow * lower)
    z = z + front * (0.30 * ident.az) * lower * _smoothstep(-1.05 * ident.ay, -0.75 * ident.ay, y)
    z = z + front * 0.12 * ident.az * _smoothstep(0.3 * ident.ay, -0.2 * ident.ay, y)
    ey = ident.eye_y
    # Nose: a ridge from the bridge (between the eyes) to the tip, falling off quickly below the tip.
    tip_y = ey - 0.33 * ident.ay
    ridge = np.clip((ey + 8.0 - y) / (ey + 8.0 - tip_y), 0.0, 1.0)
    below = np.exp(-((np.minimum(y - tip_y, 0.0) / 5.0) ** 2))
    width = ident.nose_width * (0.6 + 0.7 * ridge)
    bridge = _smoothstep(ey + 14.0, ey + 2.0, y)  # the ridge starts between the eyes
    z = z + front * ident.nose * bridge * (0.25 + 0.75 * ridge**1.5) * below * np.exp(-((x / width) ** 2))
    z = z + front * ident.brow * np.exp(-(((y - ey - 13.0) / 6.0) ** 2) - (x / 38.0) ** 2)
    z = z + front * 4.0 * np.exp(-(((np.abs(x) - 38.0) / 14.0) ** 2) - ((y - tip_y + 4.0) / 12.0) ** 2)
    z = z + front * ident.chin * np.exp(-(((y + 0.86 * ident.ay) / 11.0) ** 2) - (x / 17.0) ** 2)
    my = ident.mouth_y
    lips = np.exp(-((x / (ident.mouth_half_width * 0.9)) ** 4))
    z = z + front * lips * (
        3.5 * np.exp(-(((y - my - 3.5) / 3.5) ** 2)) + 4.0 * np.exp(-(((y - my + 4.5) / 4.0) ** 2))
    )
    # Ears: bumps pushed outwards on both sides.
    ear = (
        np.exp(-(((y - ey + 8.0) / 16.0) ** 2) - ((z + 8.0) / 10.0) ** 2)
        * np.clip(np.abs(d[..., 0]), 0, 1) ** 6
    )
    x = x + np.sign(x) * 11.0 * ear
    return np.stack([x, y, z], -1)


def _eye_socket(ident: Identity, p: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """Socket profile in [0, 1] at neutral positions p: 1 at the eye centres, 0 away from them."""
    front = _smoothstep(0.2 * ident.az, 0.6 * ident.az, p[..., 2])
    dx = np.abs(p[..., 0]) - ident.eye_x
    dy = p[..., 1] - ident.eye_y
    return front * np.exp(-((dx / sx) ** 2) - (dy / sy) ** 2)


def _sphere(rows_deg: np.ndarray, n_lon: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit sphere with its pole on +z (rows_deg = polar angles 0..180), vertices and outward faces."""
    polar = np.deg2rad(rows_deg)[::-1]  # back (180) first so that rows go "up" towards the front pole
    azim = np.linspace(0.0, 2.0 * np.pi, n_lon + 1)
    pp, aa = np.meshgrid(polar, azim, indexing="ij")
    verts = np.stack([np.sin(pp) * np.cos(aa), np.sin(pp) * np.sin(aa), np.cos(pp)], -1).reshape(-1, 3)
    faces = _grid_faces(len(polar), n_lon + 1)
    return verts, _orient_outwards(verts, faces, np.zeros(3))


def _orient_outwards(verts: np.ndarray, faces: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Flip the faces whose normal points towards `inside` (a point inside a star-shaped part)."""
    tri = verts[faces]
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    flip = np.einsum("mk,mk->m", normal, tri.mean(1) - inside) < 0
    faces = faces.copy()
    faces[flip] = faces[flip][:, ::-1]
    return faces


@dataclass
class HeadModel:
    """Mesh, blendshapes and appearance of one subject's head (see the module docstring)."""

    ident: Identity
    faces: np.ndarray  # (M, 3) int64, render mesh
    face_part: np.ndarray  # (M,) int8
    n_tracked: int
    n_tracked_faces: int
    tracked_uv: np.ndarray  # (n_tracked, 2) texture coordinates written to face_topology.obj
    skin_neutral: np.ndarray  # (S, 3)
    skin_deltas: np.ndarray  # (B, S, 3) linear blendshapes (jaw and gaze handled separately)
    jaw_mask: np.ndarray  # (S,) how much each skin vertex follows the jaw rotation
    jaw_pivot: np.ndarray  # (3,)
    eye_unit: np.ndarray  # (E, 3) unit-sphere vertices of one eyeball
    eye_centres: np.ndarray  # (2, 3)
    pocket_upper: np.ndarray  # (P,) skin ids of the upper lip row across the mouth
    pocket_lower: np.ndarray  # (P,) skin ids of the lower lip row
    tongue_rest: np.ndarray  # (T, 3)
    static_verts: np.ndarray  # (R, 3) hair, neck, torso: rigid with the head
    albedo: np.ndarray  # (N, 3) float32 linear RGB per render vertex
    uv: np.ndarray  # (N, 2) float32 detail-texture coordinates per render vertex
    eye_dir: np.ndarray  # (N, 3) float32 rest direction on the eyeball (zeros elsewhere)

    @property
    def tracked_faces(self) -> np.ndarray:
        return self.faces[: self.n_tracked_faces]

    def _skin(self, weights: np.ndarray) -> np.ndarray:
        w = np.asarray(weights, dtype=np.float64)
        skin = self.skin_neutral + np.einsum("b,bsk->sk", w, self.skin_deltas)
        angle = np.deg2rad(JAW_MAX_DEG) * w[BLEND_WEIGHT_NAMES.index("jaw_open")]
        shift = np.array([8.0 * w[BLEND_WEIGHT_NAMES.index("jaw_left")], 0.0, 0.0])
        rot = rotation_from_axis_angle(np.array([angle, 0.0, 0.0]))
        jawed = (skin - self.jaw_pivot) @ rot.T + self.jaw_pivot + shift
        return skin + self.jaw_mask[:, None] * (jawed - skin)

    def _eyes(self, weights: np.ndarray) -> np.ndarray:
        gx = np.deg2rad(GAZE_MAX_DEG[0]) * weights[BLEND_WEIGHT_NAMES.index("gaze_x")]
        gy = np.deg2rad(GAZE_MAX_DEG[1]) * weights[BLEND_WEIGHT_NAMES.index("gaze_y")]
        rot = rotation_from_axis_angle(np.array([0.0, gx, 0.0])) @ rotation_from_axis_angle(
            np.array([-gy, 0, 0])
        )
        ball = EYE_RADIUS * self.eye_unit @ rot.T
        return np.concatenate([ball + c for c in self.eye_centres])

    def tracked_vertices(self, weights: np.ndarray) -> np.ndarray:
        """(n_tracked, 3) head-local tracked mesh for blend weights (B,)."""
        w = np.asarray(weights, dtype=np.float64)
        return np.concatenate([self._skin(w), self._eyes(w)])

    def render_vertices(self, weights: np.ndarray) -> np.ndarray:
        """(N, 3) head-local positions of every render vertex for blend weights (B,)."""
        w = np.asarray(weights, dtype=np.float64)
        skin = self._skin(w)
        tracked = np.concatenate([skin, self._eyes(w)])
        upper, lower = skin[self.pocket_upper], skin[self.pocket_lower]
        mid = 0.5 * (upper + lower) + np.array([0.0, 0.0, -26.0])
        up_in = upper + np.array([0.0, -1.5, -7.0])
        lo_in = lower + np.array([0.0, 1.5, -7.0])
        pocket = np.concatenate([up_in, up_in, mid, lo_in, lo_in])
        jaw = np.deg2rad(JAW_MAX_DEG) * w[BLEND_WEIGHT_NAMES.index("jaw_open")]
        out = w[BLEND_WEIGHT_NAMES.index("tongue_out")]
        tongue = self.tongue_rest + np.array(
            [8.0 * w[BLEND_WEIGHT_NAMES.index("jaw_left")], -3.0 * out, 24.0 * out]
        )
        rot = rotation_from_axis_angle(np.array([jaw, 0.0, 0.0]))
        tongue = (tongue - self.jaw_pivot) @ rot.T + self.jaw_pivot
        return np.concatenate([tracked, pocket, tongue, self.static_verts])


def build_head(ident: Identity, detail_rng: np.random.Generator | None = None) -> HeadModel:
    """Assemble the parts of the head for an identity (mesh topology is the same for every identity)."""
    rng = detail_rng if detail_rng is not None else np.random.default_rng(0)
    ax, ay, az = ident.ax, ident.ay, ident.az

    # ---- skin grid with the duplicated mouth row ---------------------------------------------------------
    n_lat, n_lon = 46, 64
    theta_mouth = float(THETA_MOUTH)
    thetas = _warped(-np.pi / 2, np.pi / 2, n_lat, np.deg2rad(-12.0), np.deg2rad(32.0), 1.6)
    k = int(np.argmin(np.abs(thetas - theta_mouth)))
    thetas[k] = theta_mouth
    thetas = np.insert(thetas, k, theta_mouth)  # rows k (lower lip copy) and k + 1 (upper lip copy)
    row_b, row_a = k, k + 1
    phis = _warped(-np.pi, np.pi, n_lon + 1, 0.0, np.deg2rad(45.0), 2.0)
    phis[0], phis[-1] = -np.pi, np.pi  # duplicated seam column at the back
    tt, pp = np.meshgrid(thetas, phis, indexing="ij")
    skin = skin_surface(ident, tt, pp)  # (rows, cols, 3)
    rows, cols = tt.shape
    ids = np.arange(rows * cols).reshape(rows, cols)
    lower_faces = _grid_faces(row_b + 1, cols, ids[: row_b + 1])
    upper_faces = _grid_faces(rows - row_a, cols, ids[row_a:])
    mouth_cols = np.nonzero(np.abs(phis) <= PHI_MOUTH + 1e-9)[0]
    c0, c1 = int(mouth_cols.min()), int(mouth_cols.max())
    band = _grid_faces(2, cols, ids[row_b : row_a + 1])
    band_col = np.concatenate([np.arange(cols - 1), np.arange(cols - 1)])
    band = band[(band_col < c0) | (band_col >= c1)]  # the mouth opening: quads between c0 and c1 left out
    skin_faces = np.concatenate([lower_faces, band, upper_faces])
    skin_flat = skin.reshape(-1, 3)
    n_skin = len(skin_flat)
    skin_uv = np.stack([(pp / (2 * np.pi) + 0.5).ravel(), ((tt + np.pi / 2) / np.pi).ravel()], -1)

    # ---- eyes ----------------------------------------------------------------------------------------------
    eye_unit, eye_faces = _sphere(np.array([0, 12, 24, 34, 44, 58, 75, 95, 120, 150, 180.0]), 18)
    centres = []
    for sign in (-1.0, 1.0):
        probe = np.array([sign * ident.eye_x, ident.eye_y])
        near = np.argmin(np.sum((skin_flat[:, :2] - probe) ** 2, axis=1) + 1e6 * (skin_flat[:, 2] < 0))
        centres.append(np.array([probe[0], probe[1], skin_flat[near, 2] - EYE_RADIUS - 2.0]))
    eye_centres = np.stack(centres)
    n_eye = len(eye_unit)
    n_tracked = n_skin + 2 * n_eye
    tracked_faces = np.concatenate([skin_faces, eye_faces + n_skin, eye_faces + n_skin + n_eye])

    # ---- blendshapes ---------------------------------------------------------------------------------------
    deltas = np.zeros((len(BLEND_WEIGHT_NAMES), n_skin, 3))
    x, y, z = skin_flat[:, 0], skin_flat[:, 1], skin_flat[:, 2]
    front = _smoothstep(0.0, 0.5 * az, z)
    socket = _eye_socket(ident, skin_flat, 13.0, 6.0)
    depth = 11.0
    skin_flat = skin_flat - np.array([0.0, 0.0, depth]) * socket[:, None]  # the open neutral eye
    deltas[BLEND_WEIGHT_NAMES.index("eyes_closed"), :, 2] = (depth + 1.0) * socket
    deltas[BLEND_WEIGHT_NAMES.index("eyes_wide"), :, 2] = -6.0 * _eye_socket(ident, skin_flat, 14.0, 9.0)
    brow = front * np.exp(-(((y - ident.eye_y - 16.0) / 13.0) ** 2) - (x / 45.0) ** 2)
    deltas[BLEND_WEIGHT_NAMES.index("brow_raise"), :, 1] = 7.0 * brow
    corner = front * np.exp(
        -(((np.abs(x) - ident.mouth_half_width) / 10.0) ** 2) - ((y - ident.mouth_y) / 10.0) ** 2
    )
    deltas[BLEND_WEIGHT_NAMES.index("smile")] = np.stack(
        [3.5 * np.sign(x) * corner, 5.0 * corner, -2.5 * corner], -1
    )
    cheek = front * np.exp(-(((np.abs(x) - 40.0) / 16.0) ** 2) - ((y - ident.mouth_y - 10.0) / 16.0) ** 2)
    deltas[BLEND_WEIGHT_NAMES.index("cheek_puff")] = np.stack(
        [6.0 * np.sign(x) * cheek, 0 * cheek, 3.0 * cheek], -1
    )
    # Jaw: everything below the mouth line follows it; beside the mouth the cheeks above the line follow it
    # too, fading upwards, so that only the mouth itself opens and no crease runs to the ears.
    row_of = np.repeat(np.arange(rows), cols)
    side = _smoothstep(-0.15 * az, 0.35 * az, z)
    lateral = _smoothstep(PHI_MOUTH, PHI_MOUTH + np.deg2rad(25.0), np.abs(pp.ravel()))
    above = lateral * np.exp(-(((y - ident.mouth_y) / 18.0) ** 2))
    jaw_mask = side * np.where(row_of <= row_b, 1.0, above)
    jaw_pivot = np.array([0.0, -0.08 * ay, -0.25 * az])

    # ---- mouth pocket: teeth and interior, hanging off the two lip rows ------------------------------------
    span = np.arange(c0, c1 + 1)
    pocket_upper, pocket_lower = ids[row_a, span], ids[row_b, span]
    n_p = len(span)
    base = n_tracked
    # pocket vertex blocks: [upper teeth end, upper interior start, middle, lower interior start, lower teeth]
    blk = [base + i * n_p + np.arange(n_p) for i in range(5)]
    ring_teeth_up = [pocket_upper, blk[0]]
    ring_inner = [blk[1], blk[2], blk[3]]
    ring_teeth_lo = [blk[4], pocket_lower]
    pocket_faces = []
    for ring in (ring_teeth_up, ring_inner, ring_teeth_lo):
        for a_ids, b_ids in itertools.pairwise(ring):
            grid = np.stack([a_ids, b_ids])
            f = _grid_faces(2, n_p, grid)
            pocket_faces.append(f)
    for end in (0, n_p - 1):  # side walls closing the pocket at the mouth corners
        poly = [pocket_upper[end], blk[1][end], blk[2][end], blk[3][end], pocket_lower[end]]
        f = np.array([[poly[0], poly[i], poly[i + 1]] for i in range(1, 4)])
        pocket_faces.append(f)
    pocket_faces = np.concatenate(pocket_faces)
    n_pocket = 5 * n_p

    # ---- tongue --------------------------------------------------------------------------------------------
    lip_z = float(skin_flat[ids[row_a, np.argmin(np.abs(phis))], 2])
    t_unit, t_faces = _sphere(np.array([0, 20, 40, 60, 80, 100, 125, 150, 180.0]), 12)
    tongue_rest = t_unit * np.array([15.0, 5.5, 22.0]) + np.array([0.0, ident.mouth_y - 9.0, lip_z - 30.0])
    tongue_base = base + n_pocket

    # ---- hair: a shell over the top and back, thickness tapering to the hairline ---------------------------
    n_s, n_h = 16, 56
    hphi = np.linspace(-np.pi, np.pi, n_h + 1)
    cosp = np.cos(hphi)
    start = np.deg2rad(
        ident.hairline_side_deg
        + (ident.hairline_front_deg - ident.hairline_side_deg) * np.clip(cosp, 0, 1) ** 0.7
        + (ident.hairline_back_deg - ident.hairline_side_deg) * np.clip(-cosp, 0, 1)
    )
    s = np.linspace(0.0, 1.0, n_s)
    ht = start[None, :] + s[:, None] * (np.pi / 2 - start[None, :])
    hp = np.broadcast_to(hphi[None, :], ht.shape)
    base_pts = skin_surface(ident, ht, hp)
    normal = base_pts / np.array([ax, ay, az]) ** 2
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
    wobble = 1.0 + 0.25 * np.sin(3 * hp + rng.uniform(0, 6.3)) * np.sin(5 * ht + rng.uniform(0, 6.3))
    thick = 1.5 + ident.hair_thickness * _smoothstep(0.0, 0.3, s)[:, None] * wobble
    hair = (base_pts + normal * thick[..., None]).reshape(-1, 3)
    hair_faces = _orient_outwards(hair, _grid_faces(n_s, n_h + 1), np.zeros(3))
    hair_uv = np.stack([(hp / (2 * np.pi) + 0.5).ravel() * 9.0, ((ht + np.pi / 2) / np.pi).ravel() * 1.2], -1)
    hair_base = tongue_base + len(t_unit)

    # ---- neck (open tube, ends hidden inside head and torso) and torso (boxy superquadric) -----------------
    n_ring, n_len = 24, 6
    ang = np.linspace(0.0, 2 * np.pi, n_ring + 1)
    ny = np.linspace(-ay - 110.0, -0.35 * ay, n_len)
    na, nyy = np.meshgrid(ang, ny, indexing="ij")
    neck = np.stack([0.62 * ax * np.sin(na), nyy, -0.12 * az + 0.55 * az * np.cos(na)], -1).reshape(-1, 3)
    neck_faces = _grid_faces(n_ring + 1, n_len)
    neck_axis = np.array([0.0, 0.0, -0.12 * az])
    centroid_axis = neck[neck_faces].mean(1) * np.array([1, 0, 1]) - neck_axis * np.array([1, 0, 1])
    tri = neck[neck_faces]
    nrm = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    flip = np.einsum("mk,mk->m", nrm, centroid_axis) < 0
    neck_faces[flip] = neck_faces[flip][:, ::-1]
    neck_base = hair_base + len(hair)
    torso_unit, torso_faces = _sphere(np.linspace(0, 180, 13), 28)
    tu = np.sign(torso_unit) * np.abs(torso_unit) ** 0.55  # boxier: superquadric exponent
    torso_c = np.array([0.0, -ay - 40.0 - 320.0, -0.12 * az])
    torso = tu[:, [0, 2, 1]] * np.array([185.0, 320.0, 105.0]) + torso_c  # pole axis -> y
    torso_faces = _orient_outwards(torso, torso_faces, torso_c)
    torso_base = neck_base + len(neck)

    faces = np.concatenate(
        [
            tracked_faces,
            pocket_faces,
            t_faces + tongue_base,
            hair_faces + hair_base,
            neck_faces + neck_base,
            torso_faces + torso_base,
        ]
    ).astype(np.int64)
    face_part = np.concatenate(
        [
            np.full(len(skin_faces), PART_SKIN),
            np.full(2 * len(eye_faces), PART_EYE),
            np.full(len(pocket_faces), PART_MOUTH),
            np.full(len(t_faces), PART_TONGUE),
            np.full(len(hair_faces), PART_HAIR),
            np.full(len(neck_faces), PART_NECK),
            np.full(len(torso_faces), PART_TORSO),
        ]
    ).astype(np.int8)
    static = np.concatenate([hair, neck, torso])
    n_total = torso_base + len(torso)

    # ---- appearance ----------------------------------------------------------------------------------------
    albedo = np.zeros((n_total, 3))
    skin_col = np.tile(ident.skin, (n_skin, 1))
    lip_w = np.exp(-((x / ident.mouth_half_width) ** 4)) * np.exp(-(((y - ident.mouth_y) / 6.5) ** 2)) * front
    skin_col = skin_col * (1 - lip_w[:, None]) + ident.lip * lip_w[:, None]
    brow_w = front * np.exp(-(((y - ident.eye_y - 14.0) / 3.5) ** 2) - ((np.abs(x) - 28.0) / 15.0) ** 2)
    skin_col = skin_col * (1 - 0.85 * brow_w[:, None]) + ident.hair * 0.85 * brow_w[:, None]
    blush = front * np.exp(-(((np.abs(x) - 42.0) / 14.0) ** 2) - ((y - ident.mouth_y - 22.0) / 14.0) ** 2)
    skin_col = skin_col * (1 + 0.12 * blush[:, None] * np.array([0.6, -0.4, -0.4]))
    lid = socket * (1 - _smoothstep(0.2, 0.8, socket))
    skin_col = skin_col * (1 - 0.25 * lid[:, None])
    albedo[:n_skin] = skin_col
    albedo[n_skin:n_tracked] = [0.92, 0.90, 0.86]  # sclera; the iris is painted per pixel from eye_dir
    albedo[base : base + n_p] = [0.90, 0.87, 0.78]  # upper teeth (first block is the teeth end)
    albedo[base + n_p : base + 4 * n_p] = [0.22, 0.05, 0.06]  # interior
    albedo[base + 4 * n_p : base + 5 * n_p] = [0.90, 0.87, 0.78]  # lower teeth end
    # The teeth faces share the lip-row vertices, so they blend from lip colour to ivory over their depth.
    albedo[tongue_base:hair_base] = [0.70, 0.28, 0.30]
    albedo[hair_base:neck_base] = ident.hair
    albedo[neck_base:torso_base] = ident.skin * 0.95
    albedo[torso_base:] = ident.shirt
    uv = np.zeros((n_total, 2))
    uv[:n_skin] = skin_uv
    uv[n_skin:n_tracked] = 0.1 * np.tile(eye_unit[:, :2], (2, 1))
    uv[tongue_base:hair_base] = 0.05 * t_unit[:, [0, 2]]
    uv[hair_base:neck_base] = hair_uv
    uv[neck_base:torso_base] = np.stack([na.ravel() / (2 * np.pi), (nyy.ravel() / 300.0)], -1)
    uv[torso_base:] = 0.5 + 0.5 * torso_unit[:, :2] * np.array([2.0, 2.0])
    eye_dir = np.zeros((n_total, 3))
    eye_dir[n_skin:n_tracked] = np.tile(eye_unit, (2, 1))
    tracked_uv = np.concatenate(
        [skin_uv * np.array([1.0, 0.8]), 0.05 + 0.04 * np.tile(eye_unit[:, :2], (2, 1))]
    )
    tracked_uv[n_skin + n_eye :, 0] += 0.1
    tracked_uv[n_skin:, 1] = 0.9 + 0.04 * np.tile(eye_unit[:, 1], 2)

    model = HeadModel(
        ident=ident,
        faces=faces,
        face_part=face_part,
        n_tracked=n_tracked,
        n_tracked_faces=len(tracked_faces),
        tracked_uv=np.clip(tracked_uv, 0.0, 1.0),
        skin_neutral=skin_flat,
        skin_deltas=deltas,
        jaw_mask=jaw_mask,
        jaw_pivot=jaw_pivot,
        eye_unit=eye_unit,
        eye_centres=eye_centres,
        pocket_upper=pocket_upper,
        pocket_lower=pocket_lower,
        tongue_rest=tongue_rest,
        static_verts=static,
        albedo=albedo.astype(np.float32),
        uv=uv.astype(np.float32),
        eye_dir=eye_dir.astype(np.float32),
    )
    _orient_pocket(model, len(tracked_faces), len(pocket_faces))
    return model


def _orient_pocket(model: HeadModel, first: int, count: int) -> None:
    """Wind the mouth-pocket faces towards the mouth opening, judged with the jaw fully open.

    The pocket is an open sheet seen only through the opening, so "outwards" means towards the viewer in front
    of the mouth; back-face culling would otherwise drop exactly the faces that must be seen.
    """
    weights = np.zeros(len(BLEND_WEIGHT_NAMES))
    weights[BLEND_WEIGHT_NAMES.index("jaw_open")] = 1.0
    verts = model.render_vertices(weights)
    upper, lower = verts[model.pocket_upper], verts[model.pocket_lower]
    target = 0.5 * (upper + lower).mean(axis=0) + np.array([0.0, 0.0, -4.0])
    faces = model.faces[first : first + count]
    tri = verts[faces]
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    flip = np.einsum("mk,mk->m", normal, target - tri.mean(1)) < 0
    faces[flip] = faces[flip][:, ::-1]
    model.faces[first : first + count] = faces
