"""The wiring: the parts built from the settings, for create_app (app/main.py), the one reader of Settings."""
