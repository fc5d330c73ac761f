"""Data: the bundled digits directory, directory → tf.data, augmentation, calibration data."""

from tfdeploy.data.augment import augment, augmentation_layers
from tfdeploy.data.digits import DEFAULT_DIR, write_digits
from tfdeploy.data.directory import image_dataset, scan_directory, to_numpy
from tfdeploy.data.representative import representative_data

__all__ = ["DEFAULT_DIR", "write_digits", "image_dataset", "scan_directory", "to_numpy",
           "representative_data", "augment", "augmentation_layers"]
