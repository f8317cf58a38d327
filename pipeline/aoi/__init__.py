"""Areas of interest: the AOI file (:mod:`~pipeline.aoi.config`), time steps
(:mod:`~pipeline.aoi.steps`) and the registry of AOIs (:mod:`~pipeline.aoi.registry`)."""

from pipeline.aoi.config import AoiConfig, load_aoi, parse_aoi, scan_aoi_folder
from pipeline.aoi.steps import STEP_PATTERN, check_step

__all__ = ["STEP_PATTERN", "AoiConfig", "check_step", "load_aoi", "parse_aoi", "scan_aoi_folder"]
