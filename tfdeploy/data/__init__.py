"""Data: the bundled digits directory, directory → tf.data, calibration data."""

from tfdeploy.data.digits import DEFAULT_DIR, write_digits
from tfdeploy.data.directory import image_dataset, scan_directory, to_numpy
from tfdeploy.data.profile import input_pipeline_share
from tfdeploy.data.representative import representative_data

__all__ = ["DEFAULT_DIR", "write_digits", "image_dataset", "scan_directory", "to_numpy",
           "representative_data", "input_pipeline_share"]
