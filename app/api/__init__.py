"""HTTP routes: thin (parse, call the service, return). Errors are raised (app/errors.py), rendered in
rendering.py."""
