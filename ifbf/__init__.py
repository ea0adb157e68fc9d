"""ifbf: a reproduction harness for IFBFNet (Sensors 2021, 21, 7844)."""

__version__ = "0.1.0"
