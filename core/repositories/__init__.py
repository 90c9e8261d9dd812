"""Small query modules over `service.db.tables`, one per resource; all take an AsyncSession."""
