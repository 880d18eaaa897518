"""The cell's own security: CIS benchmark (OpenSCAP), file integrity, user access, host scans.

Used by the cell defender and alone as `garrison host ...`."""
