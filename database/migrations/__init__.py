"""Schema migrations, applied in name order by database.migrate; each module defines apply(database)."""
