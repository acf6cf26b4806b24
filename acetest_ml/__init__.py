"""acetest-ml: ACETest-style operator testing with a learned validity filter."""
__version__ = "0.1.0"
