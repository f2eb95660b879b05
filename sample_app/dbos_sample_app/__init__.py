"""A DBOS sample service: durable sleep workflows on a queue, with health and queue-depth endpoints."""
