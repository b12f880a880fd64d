"""retention: policies, purge, legal holds, subject requests and reports."""
