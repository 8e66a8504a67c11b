"""Pure byte codecs for the lane's serial devices (no I/O, no clock).

Each codec offers ``encode(...) -> bytes`` and an incremental ``Decoder.feed(data) -> frames``
that resynchronises on garbage, verifies every checksum (bad frames are counted, never returned),
caps the frame length and never raises. The simulator imports these modules and nothing else
of the daemon.
"""
