"""`storesync daemon` (registered on the main app by storesync.cli)."""
