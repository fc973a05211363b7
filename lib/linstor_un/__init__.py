"""linstor_un: OpenNebula storage drivers for LINSTOR/DRBD (shared library of the action files)."""
__version__ = "0.1.0"
