"""storage: database, object store, encryption, catalog and audit log — the bottom layer."""
