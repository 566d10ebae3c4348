"""The engines of the catalogue (runners.BACKENDS): `base` (the Runner every backend returns and
the checks every backend shares), then one module per engine, owning its sessions."""
