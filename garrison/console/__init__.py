"""The console: REST API + web UI on HTTPS, the defender channel on WSS, one SQL store behind both."""
