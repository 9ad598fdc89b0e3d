"""Models shared by the apps: Inception family, message passing, flood filling."""
