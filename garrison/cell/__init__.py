"""The cell defender: one privileged enforcer per Diego cell, protecting every app container on it
with kernel mechanisms only root has (fanotify permission events, cgroups), no app change."""
