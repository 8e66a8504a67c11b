"""parkedge hardware simulator: lanes a technician can bench-test the daemon against.

Modbus relay module + barrier + loops (``modbus_lane``), the LED board (``display_sim``), the
proprietary EB barrier (``eb_barrier_sim``), a push camera (``camera_push``), one lane or a
site of lanes (``lane_sim``), a JSON control API (``control_api``) and the ``parkedge-sim``
command (``cli``). It imports only the pure codecs of ``edge``, never the daemon's drivers.
"""
