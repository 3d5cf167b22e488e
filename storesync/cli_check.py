"""`storesync check` and `storesync status` (registered on the main app by storesync.cli)."""
