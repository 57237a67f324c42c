"""Data access for the FSNet harness: locate, validate and window the ETT datasets."""

from data.errors import DataError
from data.loader import load_ett_csv
from data.locate import find_data_file
from data.prepare import PreparedData, SplitWindows, prepare_data

__all__ = ["DataError", "PreparedData", "SplitWindows", "find_data_file", "load_ett_csv", "prepare_data"]
