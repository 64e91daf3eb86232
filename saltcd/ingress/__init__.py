"""A push arriving: the webhook door, its authentication (bearer tokens, HMACs,
the master-local ingress key, nonces), registry event parsing, and intake,
which turns a verified event into queued requests."""
