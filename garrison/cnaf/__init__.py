"""CNAF: the inline application firewall (reverse proxy + detection engine) for front-end apps.

Entry point for the defender: `garrison.cnaf.proxy.serve`. Offline engine: `garrison.cnaf.engine.inspect`.
"""
