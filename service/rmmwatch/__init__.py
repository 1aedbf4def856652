"""rmmwatch: Sentinel RMM hunting queries run continuously over Defender XDR DeviceProcessEvents."""

__version__ = "0.1.0"
