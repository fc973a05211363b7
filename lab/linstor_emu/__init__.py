"""An emulated LINSTOR controller (REST API v1) with a data plane of sparse files and loop devices."""
