"""Surface models (DSM) as an extra 8-bit input channel.

The ISPRS releases ship a digital surface model per tile: float32 elevations in metres
(Vaihingen ``dsm/dsm_09cm_matching_area{N}.tif``, Potsdam ``1_DSM/dsm_potsdam_{RR}_{CC}.tif``). The
prepared store holds uint8, so the DSM is mapped to 0..255 by one of two documented rules, recorded
per channel in ``store.json`` (``bands``):

* ``ndsm`` (default): **height above the local ground**. The ground is the grey-scale morphological
  opening of the DSM with a flat square window of ``window_m`` metres (a minimum filter, then a maximum
  filter of the same size): it removes every object narrower than the window (buildings, trees, cars)
  and keeps terrain, including constant slopes, exactly (next to an object on a slope, the ground can be
  overestimated by up to slope × object width). ``nDSM = DSM − ground`` (≥ 0) is then mapped
  linearly from ``range_m`` (default 0..51 m, i.e. 0.2 m per step) to 0..255 and clipped. Absolute
  elevation says little about the class of a pixel in a hilly town; height above ground does.
  The window must be wider than the widest building, or roofs become "ground" (default 100 m).
* ``range``: **absolute elevation** mapped linearly from ``range_m = [low, high]`` metres to 0..255,
  clipped. There is no default range: give the data set's elevation range, the same for every tile
  (a per-tile range would give the same value different meanings in different tiles).

Pixels that are not finite or equal the raster's nodata value get value 0 in ``ndsm`` and ``range``
alike. Before the opening they are filled with the highest valid elevation: an opening only cuts
peaks, so the filled pixels leave their neighbours' ground estimate unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from segweak.data.raster import read_raster, read_raster_nodata
from segweak.errors import SegweakError

DSM_METHODS = ("ndsm", "range")
"""Ways to map a float DSM (metres) to 0..255 (see the module docstring)."""

DEFAULT_WINDOW_M = 100.0
"""Default ground-estimation window of ``ndsm`` in metres (wider than the widest building)."""

DEFAULT_NDSM_RANGE_M = (0.0, 51.0)
"""Default height range of ``ndsm``: 0..51 m above ground -> 0..255 (0.2 m per step)."""


@dataclass(frozen=True)
class DsmNormalisation:
    """How a float DSM in metres becomes one uint8 channel (see the module docstring).

    Attributes:
        method: ``ndsm`` (height above local ground) or ``range`` (absolute elevation).
        range_m: ``(low, high)`` metres mapped to 0..255; ``None`` takes the ``ndsm`` default
            (0..51 m); required for ``range``.
        window_m: Side of the ground-estimation window of ``ndsm`` in metres.
    """

    method: str = "ndsm"
    range_m: tuple[float, float] | None = None
    window_m: float = DEFAULT_WINDOW_M

    def __post_init__(self) -> None:
        if self.method not in DSM_METHODS:
            raise SegweakError(f"dsm: unknown method {self.method!r}; use one of {', '.join(DSM_METHODS)}")
        if self.range_m is None:
            if self.method == "range":
                raise SegweakError(
                    "dsm range: give the elevation range LOW HIGH in metres (--dsm-range / "
                    "dataset.dsm_range), the same for every tile, e.g. the data set's lowest and highest "
                    "point"
                )
            object.__setattr__(self, "range_m", DEFAULT_NDSM_RANGE_M)
        lo, hi = (float(v) for v in self.range_m)  # type: ignore[union-attr]
        if not hi > lo:
            raise SegweakError(f"dsm range: high must be above low, got {lo:g} {hi:g} (metres)")
        object.__setattr__(self, "range_m", (lo, hi))
        object.__setattr__(self, "window_m", float(self.window_m))
        if not self.window_m > 0:
            raise SegweakError(f"dsm window: must be > 0 metres, got {self.window_m:g}")

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> DsmNormalisation:
        """Rebuild the rule from its :meth:`describe` record (a ``store.json`` ``bands`` entry)."""
        return cls(
            method=str(record["method"]),
            range_m=(float(record["range_m"][0]), float(record["range_m"][1])),
            window_m=float(record.get("window_m", DEFAULT_WINDOW_M)),
        )

    @property
    def channel_name(self) -> str:
        """Band name in the store: ``nDSM`` or ``DSM``."""
        return "nDSM" if self.method == "ndsm" else "DSM"

    def window_px(self, gsd: float) -> int:
        """Window side in pixels at ground sampling distance ``gsd`` (metres): odd, at least 3."""
        return max(3, int(round(self.window_m / gsd)) | 1)

    def describe(self, gsd: float) -> dict[str, Any]:
        """JSON-serialisable record for ``store.json`` (what a stored value means)."""
        lo, hi = self.range_m  # type: ignore[misc]
        out: dict[str, Any] = {
            "method": self.method,
            "range_m": [lo, hi],
            "metres_per_step": (hi - lo) / 255.0,
            "gsd_m": gsd,
        }
        if self.method == "ndsm":
            out["window_m"] = self.window_m
            out["window_px"] = self.window_px(gsd)
            out["meaning"] = (
                f"height above local ground (DSM minus its grey opening over {self.window_m:g} m), "
                f"{lo:g}..{hi:g} m -> 0..255, clipped"
            )
        else:
            out["meaning"] = f"absolute elevation {lo:g}..{hi:g} m -> 0..255, clipped"
        return out

    def apply(self, dsm: np.ndarray, gsd: float, nodata: float | None = None) -> np.ndarray:
        """Map a DSM to uint8.

        Args:
            dsm: H×W elevations in metres (any float or integer type).
            gsd: Ground sampling distance in metres per pixel (sets the ``ndsm`` window in pixels).
            nodata: The raster's nodata value, if it declares one.

        Returns:
            H×W uint8.
        """
        z = np.asarray(dsm, dtype=np.float32)
        invalid = ~np.isfinite(z)
        if nodata is not None and np.isfinite(nodata):
            invalid |= z == np.float32(nodata)
        if invalid.all():
            return np.zeros(z.shape, dtype=np.uint8)
        if invalid.any():
            # The highest valid elevation: an opening ignores high values (it only cuts peaks), so the
            # filled pixels cannot pull the ground estimate of their neighbours down.
            z = np.where(invalid, z[~invalid].max(), z)
        lo, hi = self.range_m  # type: ignore[misc]
        if self.method == "ndsm":
            from scipy import ndimage

            size = self.window_px(gsd)
            # The tile is extended by half a window with its edge values before the opening (and cut back
            # after): without that, a slope rising towards the edge is cut like a ridge, because the
            # filters would clamp the *eroded* image at the border instead of eroding the extension.
            pad = size // 2
            eroded = ndimage.minimum_filter(np.pad(z, pad, mode="edge"), size=size, mode="nearest")
            ground = ndimage.maximum_filter(eroded, size=size, mode="nearest")[pad:-pad, pad:-pad]
            del eroded  # erosion then dilation = grey opening, one padded temporary alive at a time
            z = z - ground  # >= 0: the opening never exceeds the function it opens
        scaled = (z - lo) * (255.0 / (hi - lo))
        out = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
        out[invalid] = 0
        return out


@dataclass(frozen=True)
class DsmChannel:
    """One tile's DSM file, read as an extra image channel.

    Attributes:
        path: Path or zip locator of the float DSM.
        normalisation: The mapping to 0..255.
        gsd: Ground sampling distance of the tile in metres.
    """

    path: str
    normalisation: DsmNormalisation
    gsd: float

    @property
    def name(self) -> str:
        """Band name (``nDSM`` or ``DSM``)."""
        return self.normalisation.channel_name

    def read(self, shape: tuple[int, int]) -> np.ndarray:
        """Read and normalise the DSM: H×W uint8.

        Raises:
            SegweakError: When the file has several bands or another size than ``shape``.
        """
        data = read_raster(self.path)
        if data.shape[2] != 1:
            raise SegweakError(f"DSM {self.path} has {data.shape[2]} bands; a DSM has one band of elevations")
        if data.shape[:2] != tuple(shape):
            raise SegweakError(
                f"DSM {self.path} is {data.shape[1]}×{data.shape[0]} px but its image is "
                f"{shape[1]}×{shape[0]} px; each DSM must match its image"
            )
        return self.normalisation.apply(data[..., 0], self.gsd, nodata=read_raster_nodata(self.path))
