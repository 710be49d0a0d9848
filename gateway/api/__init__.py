"""The admin and audit HTTP APIs and their access checks."""
