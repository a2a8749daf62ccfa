"""The dashboard's files (static/: HTML, one JavaScript module, CSS), served at `/` by api/dashboard.py. A package
only so that they travel inside the wheel and are found with importlib.resources."""
