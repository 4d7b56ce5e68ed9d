"""Static checks on untrusted model files: read bytes, never import, unpickle or execute them.

The public entry points live in `worker.engine.archive_safety`; these modules are its parts."""
