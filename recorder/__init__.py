"""recorder: the gateway — HTTP app, CLI, and (to come) WHIP and SIPREC ingest."""
