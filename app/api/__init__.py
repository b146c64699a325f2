"""HTTP routes: thin (parse, call the service, return). Errors are raised and rendered in errors.py."""
