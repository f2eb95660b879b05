"""Recovery of a DBOS application's work from executors (pods) that are gone, without Conductor."""
