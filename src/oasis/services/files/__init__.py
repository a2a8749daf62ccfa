"""Files: uploads, their checks per purpose, downloads and deletes."""
