"""The command line (``python -m engine``): ``main`` builds the parser from each command's ``add_cli``;
``args`` holds the argument types commands share."""
