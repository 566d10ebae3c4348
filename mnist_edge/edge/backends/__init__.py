"""The backends of the catalogue (runners.BACKENDS): one module each."""
