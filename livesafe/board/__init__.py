"""The ops board: a live, read-only web view of streams, risk and interventions."""
