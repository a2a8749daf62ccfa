"""Running untrusted code: a Python session per thread inside bubblewrap, for the code_interpreter tool."""
