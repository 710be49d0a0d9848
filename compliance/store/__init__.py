"""The policy database: schema, migrations, catalog files, the policy store and routing log."""
